"""The ``gguf`` mimic: the harness's async :class:`harness.Mimic` over a blocking llama.cpp model.

All llama.cpp work runs in a worker thread (``asyncio.to_thread``) under one lock, so the event
loop stays free and concurrent ``generate`` calls take turns on the single context.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import jinja2

from harness import Capability, ChatMessage, Completion, GenerationRequest, PermanentBackendError

from mimic_gguf.batched import BatchedSampler, check_prompt, check_request
from mimic_gguf.loglik import LoglikelihoodScorer
from mimic_gguf.model import LoadedModel

T = TypeVar("T")
COALESCE_SECONDS = 0.005


class GGUFMimic:
    """A GGUF model sampled in process with shared prefill, per-request seeds and exact logprobs."""

    def __init__(self, model_id: str, model: LoadedModel):
        self.model_id = model_id
        self._model: LoadedModel | None = model
        self._sampler = BatchedSampler(model)
        self._scorer = LoglikelihoodScorer(model)
        self._formatter = _chat_formatter(model) if model.chat_template else None
        self._lock = threading.Lock()
        # Calls waiting for the model, per event loop (a mimic may outlive one asyncio.run).
        self._pending: dict[asyncio.AbstractEventLoop, list] = {}
        self._drainers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}
        caps = {Capability.COMPLETION, Capability.SEEDED, Capability.SHARED_PREFIX, Capability.LOGPROBS, Capability.LOGLIKELIHOOD}
        if self._formatter is not None:
            # The template renders a conversation, and a trailing assistant message is continued
            # (render_chat), so the harness may prefill the item's prefix there.
            caps |= {Capability.CHAT, Capability.ASSISTANT_PREFILL}
        self.capabilities = frozenset(caps)
        self.context_window = model.n_ctx
        # Calls in flight worth having: one context of 8 samples per 8 sequence slots, so a runner
        # sending one context per call keeps the batch full; more would only queue behind the lock.
        self.max_concurrency = max(1, model.config.max_sequences // 8)

    @property
    def model(self) -> LoadedModel:
        """The loaded model; raises once the mimic is closed."""
        if self._model is None:
            raise PermanentBackendError(f"mimic {self.model_id} is closed", "create a new mimic")
        return self._model

    async def _run(self, fn: Callable[..., T], *args) -> T:
        def locked() -> T:
            with self._lock:
                _ = self.model  # raises if closed meanwhile
                return fn(*args)

        return await asyncio.to_thread(locked)

    def render_prompt(self, prompt: str | tuple[ChatMessage, ...]) -> list[int]:
        """Prompt tokens: plain text with the model's BOS, or chat turns through its own template."""
        model = self.model
        if isinstance(prompt, str):
            return model.prefix_tokens(prompt)
        if self._formatter is None:
            raise PermanentBackendError(
                f"{self.model_id} has no chat template, so it cannot take chat messages",
                "send a plain-text prompt, or use a chat model such as gguf:smollm2",
            )
        text = self.render_chat(prompt)
        return model.tokenize(text, add_bos=True, parse_special=True)

    def render_chat(self, prompt: tuple[ChatMessage, ...]) -> str:
        """Chat turns as the model's template writes them, ending where the model writes next.

        Without a trailing assistant message that is the template's generation prompt (the opening of
        the assistant turn). With one (assistant prefill) the turns before it are rendered with the
        generation prompt and the message's text is appended as it is, the turn left open (no
        end-of-turn token), so the model continues that text.
        """
        assert self._formatter is not None
        prefill = prompt[-1].content if prompt and prompt[-1].role == "assistant" else None
        turns = prompt[:-1] if prefill is not None else prompt
        try:
            text = self._formatter(messages=[{"role": m.role, "content": m.content} for m in turns]).prompt
        except jinja2.TemplateError as exc:  # templates reject e.g. a system turn they do not support
            raise PermanentBackendError(
                f"the chat template of {self.model_id} rejected the messages: {exc}",
                "change the roles or order of the chat messages",
            ) from None
        return text if prefill is None else text + prefill

    def _generate_calls(self, calls: list[list[GenerationRequest]]) -> list[list[Completion] | Exception]:
        """Serve several ``generate`` calls with one batched run; a call with bad requests fails alone."""
        outcome: list[list[Completion] | Exception] = []
        requests, prompts, spans = [], [], []
        rendered: dict[object, list[int]] = {}
        for call in calls:
            try:
                for req in call:
                    check_request(req)
                    if req.prompt not in rendered:
                        rendered[req.prompt] = self.render_prompt(req.prompt)
                    check_prompt(len(rendered[req.prompt]), self.model.n_ctx)
            except PermanentBackendError as exc:
                outcome.append(exc)
                continue
            spans.append((len(outcome), len(requests), len(call)))
            outcome.append([])
            requests += call
            prompts += [rendered[req.prompt] for req in call]
        if requests:
            completions = self._sampler.generate(requests, prompts)
            for slot, start, n in spans:
                outcome[slot] = completions[start : start + n]
        return outcome

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One completion per request, in order; requests sharing a prompt are prefilled once.

        Calls that arrive while the model is busy are served together in the next run, so a runner
        that sends one context per call still fills the batch.
        """
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._pending.setdefault(loop, []).append((list(requests), future))
        drainer = self._drainers.get(loop)
        if drainer is None or drainer.done():
            self._drainers[loop] = loop.create_task(self._drain(loop))
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve queued calls until none are left (one drainer per event loop)."""
        pending = self._pending[loop]
        calls: list = []
        try:
            while True:
                calls = [(reqs, fut) for reqs, fut in pending if not fut.done()]
                pending.clear()
                if not calls:
                    break
                try:
                    outcome = await self._run(self._generate_calls, [reqs for reqs, _ in calls])
                except Exception as exc:
                    outcome = [exc] * len(calls)
                for (_, fut), result in zip(calls, outcome):
                    if fut.done():
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
                calls = []
                # Callers whose calls just returned usually send their next context at once: a
                # moment's wait lets those calls share the next run instead of queueing behind it.
                await asyncio.sleep(COALESCE_SECONDS)
        finally:
            # A cancelled drainer must not leave callers waiting forever.
            for _, fut in [*calls, *pending]:
                if not fut.done():
                    fut.cancel()
            self._pending.pop(loop, None)
            self._drainers.pop(loop, None)

    async def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """log P(continuation | context) for each (context, continuation) pair, summed over tokens."""
        if not pairs:
            return []
        return await self._run(self._scorer.score, [(str(c), str(x)) for c, x in pairs])

    async def aclose(self) -> None:
        """Free the llama.cpp context and model (idempotent)."""

        def close() -> None:
            with self._lock:
                if self._model is not None:
                    self._model.close()
                    self._model = None

        await asyncio.to_thread(close)


def _chat_formatter(model: LoadedModel):
    """llama-cpp-python's Jinja2 renderer for the GGUF's ``tokenizer.chat_template``."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    bos = model.token_text(model.bos) if model.bos >= 0 else ""
    eos = model.token_text(model.eos) if model.eos >= 0 else ""
    return Jinja2ChatFormatter(template=model.chat_template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
