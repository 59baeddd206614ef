"""The ``openai`` mimic: one HTTP request per GenerationRequest, errors classified for the runner.

With one base URL, requests go to that server; with a list of them (replicas of one model) they go
through an :class:`~mimic_openai.pool.EndpointPool`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from harness import BackendError, Capability, Completion, GenerationRequest, PermanentBackendError, RateLimitedError

from mimic_openai.config import OpenAIConfig, model_id_for
from mimic_openai.pool import EndpointPool, Response
from mimic_openai.transports import make_transport
from mimic_openai.wire import build_payload, classify_status, parse_completion, prefill_rejected


class OpenAIMimic:
    """A model behind an OpenAI-compatible API (completions or chat mode)."""

    context_window = None

    def __init__(self, config: OpenAIConfig):
        self.config = config
        self.model_id = model_id_for(config)
        mode_capability = Capability.COMPLETION if config.mode == "completions" else Capability.CHAT
        prefill = {Capability.ASSISTANT_PREFILL} if config.prefill else set()
        self.capabilities = frozenset({mode_capability, Capability.LOGPROBS, Capability.SEEDED, *prefill})
        self.pool = EndpointPool(config.endpoint_configs(), make_transport) if config.endpoints else None
        self.transport = make_transport(config) if self.pool is None else None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        c = self.config
        if self.pool is not None:
            urls = [e.config.public_url for e in self.pool.endpoints]
            return f"OpenAIMimic(model_id={self.model_id!r}, endpoints={urls!r}, mode={c.mode}, transport={c.transport})"
        return f"OpenAIMimic(model_id={self.model_id!r}, base_url={c.public_url!r}, mode={c.mode}, transport={self.transport.name})"

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop = asyncio.Semaphore(self.config.concurrency), loop
        return self._semaphore

    async def _post(self, payload: dict) -> tuple[Response, OpenAIConfig]:
        """The response, and the config of the server that gave it (named in errors)."""
        if self.pool is not None:
            return await self.pool.post(payload)
        async with self._gate():
            return await self.transport.post(payload), self.config

    async def _one(self, request: GenerationRequest) -> Completion:
        payload = build_payload(request, self.config)
        (status, headers, body), config = await self._post(payload)
        if status == 400 and "continue_final_message" in payload:
            raise prefill_rejected(headers, body, config)
        if status != 200:
            raise classify_status(status, headers, body, config)
        return parse_completion(body, request, config)

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
        """Close the HTTP clients."""
        if self.pool is not None:
            await self.pool.aclose()
        else:
            await self.transport.aclose()


def _severity(error: BackendError) -> tuple[int, float]:
    if isinstance(error, PermanentBackendError):
        return (3, 0.0)
    if isinstance(error, RateLimitedError):
        return (2, error.retry_after or 0.0)
    return (1, 0.0)
