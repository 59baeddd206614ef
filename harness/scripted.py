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
- any name, with option ``fn``: a callable ``fn(request) -> str`` (Python API only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from harness.errors import ModelSpecError
from harness.mimic import Capability, Completion, GenerationRequest
from harness.modelspec import ModelSpec


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str]:
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut >= 0:
        return text[:cut], "stop"
    return text, "stop"


class ScriptedMimic:
    """A mimic whose outputs are a fixed text, a cycle, a planted distribution or a callable."""

    capabilities = frozenset({Capability.COMPLETION, Capability.CHAT, Capability.SEEDED, Capability.SHARED_PREFIX})
    context_window = None

    def __init__(self, model_id: str, choose: Callable[[GenerationRequest], str]):
        self.model_id = model_id
        self._choose = choose
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
    raise ModelSpecError(f"unknown scripted mode {mode!r}", "use scripted:echo, scripted:fixed, scripted:cycle or scripted:planted")


__all__ = ["ScriptedMimic", "create_scripted", "planted_chooser"]
