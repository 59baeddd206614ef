"""The one path of a run's model calls: limiter, retries, cache, usage, budget and counts.

Every call a run makes goes through :class:`ModelCalls`: the draws of the generate phase
(:meth:`ModelCalls.call`, one retried ``generate`` per batch, cached by the generate phase's
group commit) and the one-token logprob requests and log-likelihoods of the field-probabilities
phase (:meth:`ModelCalls.measuring`, cached here under the same rules as draws). So a rerun of a
finished run makes no call of any kind, every request is in the manifest's usage and cost, a
budget sees them all, and the "model calls" line counts them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from harness.cache import DrawCache, loglikelihood_key
from harness.concurrency import AdaptiveLimiter, CallStats, call_with_retries
from harness.errors import BudgetExceeded, PermanentBackendError
from harness.mimic import Capability, Completion, GenerationRequest, Mimic
from harness.run.budget import Price, Usage
from harness.run.config import CallLimits


def effective_concurrency(mimic: Mimic, requested: int) -> int:
    """Calls in flight: the user's ``--concurrency``, capped by the backend's ``max_concurrency``.

    An in-process backend that decodes one batch at a time declares a small cap (gguf: enough calls
    to fill its sequence slots); queueing more calls behind its lock would only let their
    per-request timeouts expire.
    """
    cap = getattr(mimic, "max_concurrency", None)
    return max(1, min(requested, cap)) if isinstance(cap, int) and cap > 0 else requested


class ModelCalls:
    """Every model call of one run: one limiter, one retry policy, one usage total, one budget."""

    def __init__(self, mimic: Mimic, model_id: str, limits: CallLimits, price: Price | None, spent: Usage):
        self.mimic = mimic
        self.model_id = model_id
        self.policy = limits.policy()
        if Capability.LOCAL_COMPUTE in getattr(mimic, "capabilities", ()):
            self.policy = dataclasses.replace(self.policy, timeout=None)  # a local call waits for compute only
        self.concurrency = effective_concurrency(mimic, limits.concurrency)
        self.limiter = AdaptiveLimiter(self.concurrency)
        self.stats = CallStats()
        self.budget = limits.budget
        self.price = price
        self.spent = spent  # the run's spending so far, earlier invocations included
        self.by_phase: dict[str, Usage] = {}  # this invocation's spending per phase

    def budget_reached(self) -> str | None:
        """The budget the run's spending has reached (a message), or None."""
        return self.budget.reached(self.spent)

    async def call(self, requests: Sequence[GenerationRequest], phase: str = "draws") -> list[Completion]:
        """One ``generate`` call for a batch, retried as a whole; counted in usage under ``phase``."""
        completions = await self._retried(lambda: self.mimic.generate(list(requests)), len(requests), "completions",
                                          f"request to {self.model_id}")
        usage = self.by_phase.setdefault(phase, Usage())
        for c in completions:
            for u in (self.spent, usage):
                u.add(c.prompt_tokens, c.completion_tokens, self.price)
        return completions

    async def score(self, pairs: Sequence[tuple[str, str]], phase: str) -> list[float]:
        """One ``loglikelihood`` call, retried as a whole; counted under ``phase`` (no tokens reported)."""
        scores = await self._retried(lambda: self.mimic.loglikelihood(list(pairs)), len(pairs), "scores",
                                     f"scoring with {self.model_id}")
        for u in (self.spent, self.by_phase.setdefault(phase, Usage())):
            u.add(0, 0, None, requests=len(pairs))
        return [float(s) for s in scores]

    async def _retried(self, fn: Callable[[], Awaitable[list]], expected: int, what: str, describe: str) -> list:
        """``fn()`` under the run's limiter and retry policy; a backend answering the wrong count is a permanent error."""
        out = await call_with_retries(fn, self.limiter, self.policy, self.stats, describe=describe)
        if len(out) != expected:
            raise PermanentBackendError(f"backend for {self.model_id} returned {len(out)} {what} for {expected} requests",
                                        "report this to the backend plugin's authors")
        return out

    def measuring(self, phase: str, cache: DrawCache | None) -> MeasuringMimic:
        """A mimic-shaped view for a measurement phase: cached, budgeted, one request per retry."""
        return MeasuringMimic(self, phase, cache)

    def check_budget(self) -> None:
        """Raise :class:`BudgetExceeded` when the run's budget is spent."""
        reason = self.budget_reached()
        if reason:
            raise BudgetExceeded(reason, "raise the budget, then run the same command again")


class MeasuringMimic:
    """What the field-probabilities phase calls instead of the mimic: the run's calls, cached.

    ``generate`` answers each request from the cache or with its own retried call (a fault in one
    of many one-token requests re-sends that one); ``loglikelihood`` caches each (context,
    continuation) score. Both stop with :class:`BudgetExceeded` once the run's budget is spent.
    """

    def __init__(self, calls: ModelCalls, phase: str, cache: DrawCache | None):
        self._calls, self._phase, self._cache = calls, phase, cache
        self.model_id = calls.model_id
        self.capabilities: frozenset[Capability] = calls.mimic.capabilities
        self.context_window = getattr(calls.mimic, "context_window", None)
        self.cached = 0  # answers (completions or scores) the cache gave

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """One completion per request, from the cache where it has one."""
        keys = [r.cache_key(self.model_id) for r in requests]
        found = self._cache.get_many(keys) if self._cache is not None else {}
        missing = [i for i, key in enumerate(keys) if key not in found]
        self.cached += len(keys) - len(missing)

        async def one(i: int) -> None:
            self._calls.check_budget()
            (completion,) = await self._calls.call([requests[i]], self._phase)
            found[keys[i]] = completion
            if self._cache is not None:
                self._cache.put_many(self.model_id, [(keys[i], completion)])

        tasks = [asyncio.ensure_future(one(i)) for i in missing]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # the first failure ends the call: stop the others
                task.cancel()
        return [found[key] for key in keys]

    async def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """log P(continuation | context) per pair, from the cache where it has one."""
        keys = [loglikelihood_key(self.model_id, context, continuation) for context, continuation in pairs]
        found = self._cache.get_loglikelihoods(keys) if self._cache is not None else {}
        missing = [i for i, key in enumerate(keys) if key not in found]
        self.cached += len(keys) - len(missing)
        if missing:
            self._calls.check_budget()
            scores = await self._calls.score([pairs[i] for i in missing], self._phase)
            new = {keys[i]: s for i, s in zip(missing, scores)}
            found.update(new)
            if self._cache is not None:
                self._cache.put_loglikelihoods(self.model_id, new.items())
        return [found[key] for key in keys]
