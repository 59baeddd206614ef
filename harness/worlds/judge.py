"""World ``judge``: R = a judge model, sampled at temperature 1 with the draw's seed, answers yes
to a question about the item."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import ModelSpecError, PermanentBackendError, TaskError
from harness.factories import create_mimic
from harness.mimic import Capability, ChatMessage, GenerationRequest
from harness.modelspec import parse_model_spec
from harness.protocols import BuildContext
from harness.worlds import check_options

DEFAULT_QUESTION = ("{{ text }}\n\nQuestion: Would a typical reader be pleased by the text above? "
                    "Answer Yes or No.\nAnswer:")


class JudgeWorld:
    """R = a judge model, sampled at temperature 1 with the draw's seed, answers yes."""

    def __init__(self, spec, question: str, max_tokens: int, ctx: BuildContext):
        self.spec = spec
        self.max_tokens = max_tokens
        self._ctx = ctx
        self._template = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True).from_string(question)
        self._mimic = None  # built on first draw: loading a judge model is not free

    def prompt(self, text: str) -> str:
        """The question for one item."""
        return self._template.render(text=text)

    async def draw(self, texts: Sequence[str], seeds: Sequence[int]) -> list[bool]:
        """Ask once per (text, seed); R = the answer starts with "yes" (case-insensitive)."""
        if len(texts) != len(seeds):
            raise ValueError(f"{len(texts)} texts but {len(seeds)} seeds")
        if not texts:
            return []
        if self._mimic is None:
            self._mimic = create_mimic(self.spec, self._ctx.registries, self._ctx)
        chat = Capability.COMPLETION not in self._mimic.capabilities and Capability.CHAT in self._mimic.capabilities
        requests = []
        for text, seed in zip(texts, seeds):
            prompt = self.prompt(text)
            # one context per distinct question, so a shared-prefix backend prefills it once
            context = "judge/" + hashlib.sha256(prompt.encode()).hexdigest()[:16]
            requests.append(GenerationRequest(prompt=(ChatMessage("user", prompt),) if chat else prompt,
                                              max_tokens=self.max_tokens, temperature=1.0, top_p=1.0,
                                              seed=int(seed), sample_index=0, context_id=context))
        completions = await self._mimic.generate(requests)
        if len(completions) != len(requests):
            raise PermanentBackendError(f"judge {self.spec.model_id} returned {len(completions)} answers for {len(requests)} questions",
                               "the backend broke the one-completion-per-request contract; report it")
        return [c.text.strip().lower().startswith("yes") for c in completions]

    async def aclose(self) -> None:
        """Release the judge model."""
        if self._mimic is not None:
            await self._mimic.aclose()
            self._mimic = None


def create_judge(options: Mapping[str, Any], ctx: BuildContext) -> JudgeWorld:
    """Factory: options ``model`` (spec string), ``model_options`` (mapping), ``question`` (Jinja, ``text``), ``max_tokens`` (4)."""
    opts = check_options(options, {"model", "model_options", "question", "max_tokens"}, "judge")
    if not opts.get("model"):
        raise TaskError("world judge needs a 'model' option", "add e.g. model: gguf:default under world.options")
    extra = opts.get("model_options") or {}
    if not isinstance(extra, Mapping):
        raise TaskError("world judge: model_options must be a mapping", "write model_options: {name: value}")
    spec = parse_model_spec(str(opts["model"]), **dict(extra))
    if spec.backend not in ctx.registries.mimics:  # the model itself loads on the first draw
        known = ", ".join(ctx.registries.mimics.names()) or "none installed"
        raise ModelSpecError(f"world judge: unknown mimic backend {spec.backend!r} (known: {known})",
                             "use a known backend in world.options.model")
    max_tokens = int(opts.get("max_tokens", 4))
    if max_tokens < 1:
        raise TaskError("world judge: max_tokens must be at least 1", "set max_tokens: 4")
    try:
        return JudgeWorld(spec, str(opts.get("question", DEFAULT_QUESTION)), max_tokens, ctx)
    except TemplateError as exc:
        raise TaskError(f"world judge: the question template is invalid: {exc}", "fix the Jinja syntax; the item is {{ text }}") from None
