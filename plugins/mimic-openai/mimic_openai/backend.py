"""The ``openai`` mimic: one HTTP request per GenerationRequest, errors classified for the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from harness import BackendError, Capability, Completion, GenerationRequest, PermanentBackendError, RateLimitedError

from mimic_openai.config import OpenAIConfig, model_id_for
from mimic_openai.transports import make_transport
from mimic_openai.wire import build_payload, classify_status, parse_completion


class OpenAIMimic:
    """A model behind an OpenAI-compatible API (completions or chat mode)."""

    context_window = None

    def __init__(self, config: OpenAIConfig):
        self.config = config
        self.model_id = model_id_for(config)
        mode_capability = Capability.COMPLETION if config.mode == "completions" else Capability.CHAT
        self.capabilities = frozenset({mode_capability, Capability.LOGPROBS, Capability.SEEDED})
        self.transport = make_transport(config)
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        c = self.config
        return f"OpenAIMimic(model_id={self.model_id!r}, base_url={c.public_url!r}, mode={c.mode}, transport={self.transport.name})"

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop = asyncio.Semaphore(self.config.concurrency), loop
        return self._semaphore

    async def _one(self, request: GenerationRequest) -> Completion:
        payload = build_payload(request, self.config)
        async with self._gate():
            status, headers, body = await self.transport.post(payload)
        if status != 200:
            raise classify_status(status, headers, body, self.config)
        return parse_completion(body, request, self.config)

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One completion per request, in order, sent concurrently (at most ``concurrency`` at once).

        If any request fails, the most serious error is raised once all have finished (permanent,
        then rate-limited with the longest Retry-After, then transient). It carries ``partial``: the
        completions that did succeed (None where not), and ``failed``: how many failed.
        """
        if len(requests) == 1:  # the usual batch: no task to create and schedule
            try:
                return [await self._one(requests[0])]
            except BackendError as error:
                error.partial, error.failed = [None], 1
                raise
        results = await asyncio.gather(*(self._one(r) for r in requests), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return list(results)
        unexpected = [e for e in errors if not isinstance(e, BackendError)]
        if unexpected:
            raise unexpected[0]
        worst = max(errors, key=_severity)
        worst.partial = [r if isinstance(r, Completion) else None for r in results]
        worst.failed = len(errors)
        raise worst

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.transport.aclose()


def _severity(error: BackendError) -> tuple[int, float]:
    if isinstance(error, PermanentBackendError):
        return (3, 0.0)
    if isinstance(error, RateLimitedError):
        return (2, error.retry_after or 0.0)
    return (1, 0.0)
