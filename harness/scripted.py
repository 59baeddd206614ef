"""The ``scripted`` mimic: deterministic outputs for tests, dry runs and planted-truth checks
(registered by the ``builtin-scripted`` plugin).

Model names:
- ``scripted:echo``: returns the prompt's last line.
- ``scripted:fixed?text=...``: always the same text.
- ``scripted:cycle`` with option ``outputs`` (a list, from a config file or the Python API):
  output i is ``outputs[sample_index % len]``.
- ``scripted:planted`` with option ``distribution``: a list of ``{text, p}`` (or a mapping
  text -> p); each draw is sampled from it with the request's seed, so draws are reproducible
  and independent across seeds.
- ``scripted:chat`` with option ``distribution`` (the items, as for ``planted``): a chat-only mimic
  with a planted answer format. Share ``chatty`` (default 0.3) of its answers wrap the item in
  chatter (half of them in a code fence too), share ``refusals`` (default 0.1) refuse, the rest are
  the bare item. The item ignores the request's condition, so control success measured on the parsed
  items is the planted base rate. With ``prefill=true`` it declares ``ASSISTANT_PREFILL`` and
  continues a final assistant message: the item after that prefix, never chatter.
- any name, with option ``fn``: a callable ``fn(request) -> str`` (Python API only).

Every mode but ``chat`` declares both COMPLETION and CHAT, so it gets the document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from harness.errors import ModelSpecError
from harness.mimic import Capability, Completion, GenerationRequest
from harness.modelspec import ModelSpec
from harness.seeding import derive_seed

REFUSAL = "I can't help with that."
CHATTER_BEFORE = "Sure! Here is another example:\n\n"
CHATTER_AFTER = "\n\nI hope this helps! Let me know if you would like more."


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        return text[:cut], "stop"
    return text, "stop"


class ScriptedMimic:
    """A mimic whose outputs are a fixed text, a cycle, a planted distribution or a callable."""

    context_window = None

    def __init__(self, model_id: str, choose: Callable[[GenerationRequest], str],
                 capabilities: frozenset[Capability] | None = None):
        self.model_id = model_id
        self._choose = choose
        self.capabilities = capabilities or frozenset(
            {Capability.COMPLETION, Capability.CHAT, Capability.SEEDED, Capability.SHARED_PREFIX})
        self.calls = 0  # number of generate() calls, for tests that count model calls
        self.requests_seen = 0

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Produce one completion per request."""
        self.calls += 1
        self.requests_seen += len(requests)
        out = []
        for req in requests:
            text, reason = _cut_at_stop(self._choose(req), req.stop)
            words = text.split()
            if len(words) > req.max_tokens:
                text, reason = " ".join(words[: req.max_tokens]), "length"
            out.append(
                Completion(text=text, finish_reason=reason, prompt_tokens=len(str(req.prompt_payload()).split()),
                           completion_tokens=len(text.split()), logprobs=None)
            )
        return out

    async def aclose(self) -> None:
        """Nothing to release."""


def planted_chooser(distribution: Any) -> Callable[[GenerationRequest], str]:
    """A chooser that samples texts from ``distribution`` using each request's seed."""
    if isinstance(distribution, dict):
        items = list(distribution.items())
    else:
        items = [(d["text"], d["p"]) for d in distribution]
    texts = [t for t, _ in items]
    probs = np.asarray([float(p) for _, p in items], dtype=float)
    if probs.min() < 0 or probs.sum() <= 0:
        raise ModelSpecError("scripted:planted distribution has negative or zero probabilities", "give p >= 0 summing to 1")
    probs = probs / probs.sum()

    def choose(req: GenerationRequest) -> str:
        rng = np.random.default_rng(req.seed)
        return texts[int(rng.choice(len(texts), p=probs))]

    return choose


def _share(spec: ModelSpec, name: str, default: float) -> float:
    value = spec.option(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ModelSpecError(f"scripted:chat option {name}={value!r} is not a share in [0, 1]", f"write e.g. {name}=0.2")
    return float(value)


def chat_chooser(distribution: Any, chatty: float, refusals: float) -> Callable[[GenerationRequest], str]:
    """Answers in a planted format: chatty (some fenced), refusals, or the bare item, by the request's seed.

    The item comes from ``distribution`` whatever the conversation asks for. A conversation that ends
    with an assistant message (prefill) is continued: the item after that prefix (after its first line
    when it does not start with the prefix), with no chatter.
    """
    if chatty + refusals > 1:
        raise ModelSpecError(f"scripted:chat shares chatty={chatty} and refusals={refusals} add up to more than 1",
                             "lower one of them")
    pick = planted_chooser(distribution)

    def choose(req: GenerationRequest) -> str:
        item = pick(req)
        last = req.prompt[-1] if isinstance(req.prompt, tuple) and req.prompt else None
        if last is not None and last.role == "assistant":
            prefix = last.content
            return item[len(prefix):] if item.startswith(prefix) else item.split("\n", 1)[-1]
        u = np.random.default_rng(derive_seed(req.seed, "scripted-chat-format")).random()
        if u < refusals:
            return REFUSAL
        if u < refusals + chatty / 2:
            return CHATTER_BEFORE + item + CHATTER_AFTER
        if u < refusals + chatty:
            return CHATTER_BEFORE + "```\n" + item + "\n```" + CHATTER_AFTER
        return item

    return choose


def create_chat(spec: ModelSpec) -> ScriptedMimic:
    """``scripted:chat``: the chat-only mimic with a planted answer format."""
    distribution = spec.option("distribution")
    if not distribution or not isinstance(distribution, (list, dict)):
        raise ModelSpecError("scripted:chat needs a 'distribution' option (its items: a list of {text, p})",
                             "define it in a --model-config file")
    caps = {Capability.CHAT, Capability.SEEDED, Capability.SHARED_PREFIX}
    if spec.option("prefill", False):
        caps.add(Capability.ASSISTANT_PREFILL)
    choose = chat_chooser(distribution, _share(spec, "chatty", 0.3), _share(spec, "refusals", 0.1))
    return ScriptedMimic(spec.model_id, choose, frozenset(caps))


def create_scripted(spec: ModelSpec, ctx=None) -> ScriptedMimic:
    """Factory for ``scripted:<mode>``."""
    fn = spec.option("fn")
    if callable(fn):
        return ScriptedMimic(f"scripted:{spec.model}", fn)
    mode = spec.model
    if mode == "echo":
        return ScriptedMimic("scripted:echo", lambda r: str(r.prompt_payload()).splitlines()[-1] if r.prompt else "")
    if mode == "fixed":
        text = str(spec.option("text", "ok"))
        return ScriptedMimic(spec.model_id, lambda r: text)
    if mode == "cycle":
        outputs = spec.option("outputs")
        if not outputs or not isinstance(outputs, list):
            raise ModelSpecError("scripted:cycle needs an 'outputs' list option", "define it in a --model-config file")
        return ScriptedMimic(spec.model_id, lambda r: str(outputs[r.sample_index % len(outputs)]))
    if mode == "planted":
        distribution = spec.option("distribution")
        if not distribution:
            raise ModelSpecError("scripted:planted needs a 'distribution' option", "give a list of {text, p} in a --model-config file")
        return ScriptedMimic(spec.model_id, planted_chooser(distribution))
    if mode == "chat":
        return create_chat(spec)
    raise ModelSpecError(f"unknown scripted mode {mode!r}",
                         "use scripted:echo, scripted:fixed, scripted:cycle, scripted:planted or scripted:chat")


__all__ = ["ScriptedMimic", "chat_chooser", "create_scripted", "planted_chooser"]
