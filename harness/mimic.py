"""The mimic protocol: one async ``generate`` over a batch of requests.

A backend plugin returns an object satisfying :class:`Mimic`. Optional abilities are declared in
``capabilities`` instead of being stubbed: the runner and estimators check for them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Capability(StrEnum):
    """Optional abilities a mimic may declare."""

    COMPLETION = "completion"  # accepts a plain-text prompt
    CHAT = "chat"  # accepts a list of chat messages
    LOGPROBS = "logprobs"  # returns token logprobs (top-k alternatives) with completions
    LOGLIKELIHOOD = "loglikelihood"  # implements ``loglikelihood(pairs)``
    SHARED_PREFIX = "shared_prefix"  # a batch whose requests share a prompt is prefilled once
    SEEDED = "seeded"  # a fixed seed reproduces a sample exactly
    # Continues a conversation whose last message is the assistant's (chat templates' prefill,
    # vLLM's continue_final_message): the answer extends that message's text instead of starting a
    # new turn. The harness then puts the pool's item prefix there (harness.chat.renderings).
    ASSISTANT_PREFILL = "assistant_prefill"
    # Computes in this process on this machine (llama.cpp, a local torch model): a call waits only for
    # compute, never for a network, so the run's per-request timeout does not apply. A loaded machine
    # makes such calls slow, not failed; timing them out would only re-queue the same work.
    LOCAL_COMPUTE = "local_compute"


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """One sampled draw to generate.

    ``context_id`` groups requests that share a prompt, so a backend that declares
    ``SHARED_PREFIX`` can decode that prompt once for all of them.
    """

    prompt: str | tuple[ChatMessage, ...]
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    sample_index: int = 0
    context_id: str = ""
    top_logprobs: int = 0  # >0 asks for that many alternatives per token (needs LOGPROBS)

    def sampling_params(self) -> dict:
        """The parameters that change the distribution of the output (cache-key material)."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop),
            "top_logprobs": self.top_logprobs,
        }

    def prompt_payload(self) -> str | list[dict]:
        """The prompt as JSON-serialisable data."""
        if isinstance(self.prompt, str):
            return self.prompt
        return [asdict(m) for m in self.prompt]

    def cache_key(self, model_id: str) -> str:
        """Key distinct sampled draws apart: model, sampling params, prompt, sample index, seed."""
        material = json.dumps(
            {
                "model": model_id,
                "params": self.sampling_params(),
                "prompt": self.prompt_payload(),
                "sample_index": self.sample_index,
                "seed": self.seed,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its logprob, and the top alternatives (token -> logprob)."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """What a backend returns for one request."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None


@runtime_checkable
class Mimic(Protocol):
    """A model we sample from. ``generate`` returns one completion per request, in order."""

    model_id: str  # stable, secret-free identifier of the model and its load-time options
    capabilities: frozenset[Capability]
    context_window: int | None
    # Optional attribute ``max_concurrency: int``: the most ``generate`` calls worth having in flight
    # (an in-process model that decodes one batch at a time declares 1). Absent means no limit.

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Generate one completion per request."""
        ...

    async def aclose(self) -> None:
        """Release clients, threads and model memory."""
        ...


class LoglikelihoodMimic(Mimic, Protocol):
    """A mimic that declares ``Capability.LOGLIKELIHOOD``."""

    async def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Return log P(continuation | context) for each (context, continuation) pair."""
        ...
