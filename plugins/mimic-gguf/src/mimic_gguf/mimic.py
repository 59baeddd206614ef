"""The ``gguf`` mimic: the harness's async :class:`harness.Mimic` over a blocking llama.cpp model.

All llama.cpp work runs in a worker thread under one lock, so the event loop stays free. Draws are
served by one batched run at a time; ``generate`` calls that arrive meanwhile join it between two
decode steps and return as soon as their own requests finish.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import jinja2

from harness import Capability, ChatMessage, Completion, GenerationRequest, PermanentBackendError

from mimic_gguf.batched import BatchedSampler, Feed, check_prompt, check_request
from mimic_gguf.loglik import LoglikelihoodScorer
from mimic_gguf.model import LoadedModel

T = TypeVar("T")


@dataclass(eq=False)
class _Call:
    """One ``generate`` call: its requests, where its answer goes, and its completions so far."""

    requests: list[GenerationRequest]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    prompts: list[list[int]] = field(default_factory=list)
    results: dict[int, Completion] = field(default_factory=dict)

    def future_done(self) -> bool:
        """True once the caller has its answer or stopped waiting (cancelled)."""
        return self.future.done()

    def _settle(self, outcome: object) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the caller's event loop is closed: nobody is waiting
            pass

    def fail(self, exc: BaseException) -> None:
        """Answer the caller with ``exc`` (from any thread)."""
        self._settle(exc)

    def finished(self, position: int, completion: Completion) -> None:
        """Record one completion; answer the caller once all of its requests are done."""
        self.results[position] = completion
        if len(self.results) == len(self.requests):
            self._settle([self.results[i] for i in range(len(self.requests))])


class _CallFeed(Feed):
    """Hands a running batch the calls that arrive meanwhile, and routes finished requests to their calls."""

    def __init__(self, mimic: GGUFMimic, calls: list[_Call]):
        self.mimic = mimic
        self.calls: list[_Call] = []
        self.index: list[tuple[_Call, int]] = []  # batch request index -> (call, position in it)
        self._add(calls)

    def _add(self, calls: list[_Call]) -> None:
        for call in calls:
            self.calls.append(call)
            self.index += [(call, i) for i in range(len(call.requests))]

    def take(self) -> list[tuple[list[GenerationRequest], list[list[int]]]]:
        """Calls waiting now, prepared (the worker thread holds the model lock)."""
        if not self.mimic._waiting:  # a racy peek is fine: a call missed now is seen next step
            return []
        calls = self.mimic._take_waiting()
        self._add(calls)
        return [(call.requests, call.prompts) for call in calls]

    def finished(self, index: int, completion: Completion) -> None:
        """Route a finished request to its call."""
        call, position = self.index[index]
        call.finished(position, completion)

    def abandoned(self, index: int) -> bool:
        """True once the request's caller stopped waiting (a timeout cancelled its call)."""
        return self.index[index][0].future_done()


class GGUFMimic:
    """A GGUF model sampled in process with shared prefill, per-request seeds and exact logprobs."""

    def __init__(self, model_id: str, model: LoadedModel):
        self.model_id = model_id
        self._model: LoadedModel | None = model
        self._sampler = BatchedSampler(model)
        self._scorer = LoglikelihoodScorer(model)
        self._formatter = _chat_formatter(model) if model.chat_template else None
        self._lock = threading.Lock()
        # Calls not yet handed to the model (from any event loop), and whether a worker thread serves them.
        self._queue_lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._serving = False
        caps = {Capability.COMPLETION, Capability.SEEDED, Capability.SHARED_PREFIX, Capability.LOGPROBS, Capability.LOGLIKELIHOOD,
                Capability.LOCAL_COMPUTE}
        if self._formatter is not None:
            # The template renders a conversation, and a trailing assistant message is continued
            # (render_chat), so the harness may prefill the item's prefix there.
            caps |= {Capability.CHAT, Capability.ASSISTANT_PREFILL}
        self.capabilities = frozenset(caps)
        self.context_window = model.n_ctx
        # Calls in flight worth having: one context of 8 samples per 8 sequence slots, plus one whose
        # requests take the slots of a call's early finishers while its last draws still run (a
        # runner sends its next call only when one returns); more would only queue.
        self.max_concurrency = model.config.max_sequences // 8 + 1

    @property
    def prompt_tokens_decoded(self) -> int:
        """Prompt tokens the model has decoded for generation so far (cached prefixes are copied, not decoded)."""
        return self._sampler.prompt_tokens_decoded

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

    def _prepare(self, call: _Call) -> bool:
        """Render and check a call's prompts (with the model lock held); a bad call fails alone."""
        rendered: dict[object, list[int]] = {}
        try:
            for req in call.requests:
                check_request(req)
                if req.prompt not in rendered:
                    rendered[req.prompt] = self.render_prompt(req.prompt)
                check_prompt(len(rendered[req.prompt]), self.model.n_ctx)
        except PermanentBackendError as exc:
            call.fail(exc)
            return False
        call.prompts = [rendered[req.prompt] for req in call.requests]
        return True

    def _take_waiting(self) -> list[_Call]:
        """The calls waiting for the model, prepared (bad ones already failed)."""
        with self._queue_lock:
            calls, self._waiting = self._waiting, []
        return [call for call in calls if not call.future_done() and self._prepare(call)]

    def _serve(self) -> None:
        """Worker thread: serve waiting calls until none are left; later calls join the running batch."""
        while True:
            with self._lock:
                try:
                    _ = self.model  # raises once closed
                    calls = self._take_waiting()
                except PermanentBackendError as exc:
                    with self._queue_lock:
                        calls, self._waiting = self._waiting, []
                    for call in calls:
                        call.fail(exc)
                    calls = []
                if calls:
                    self._serve_calls(calls)
            with self._queue_lock:
                if not self._waiting:
                    self._serving = False
                    return

    def _serve_calls(self, calls: list[_Call]) -> None:
        """One batched run for ``calls`` and every call that arrives while it runs."""
        feed = _CallFeed(self, calls)
        self._sampler.feed = feed
        try:
            self._sampler.generate([r for c in calls for r in c.requests], [p for c in calls for p in c.prompts])
        except Exception as exc:  # noqa: BLE001 - handed to every caller in the run
            for call in feed.calls:
                call.fail(exc)
        finally:
            self._sampler.feed = Feed()

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One completion per request, in order; requests sharing a prompt are prefilled once.

        A call that arrives while the model is busy joins the running batch at its next step (as
        soon as sequence slots free up) and returns as soon as its own requests are done, so a
        runner that sends one context per call keeps the batch full.
        """
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        call = _Call(list(requests), loop, loop.create_future())
        with self._queue_lock:
            self._waiting.append(call)
            start = not self._serving
            self._serving = True
        if start:
            # After the callbacks already queued: calls sent together (asyncio.gather) start together.
            loop.call_soon(threading.Thread(target=self._serve, name=f"gguf-{self.model_id}").start)
        return await call.future

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
