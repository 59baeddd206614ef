"""Bounding and retrying model calls: an AIMD limiter plus tenacity retries.

- :class:`AdaptiveLimiter` caps in-flight calls at a window. A rate-limit answer halves the window
  (once per congestion event: answers to calls sent before the last cut do not cut again), and
  every ``increase_every`` successes add one slot back, up to the configured maximum.
- :func:`call_with_retries` runs one call under the limiter with a per-request timeout, retries
  :class:`TransientBackendError` with exponential backoff and jitter, waits at least the server's
  ``Retry-After`` before re-sending a rate-limited request (holding no slot while it waits), and
  lets :class:`PermanentBackendError` through at once.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from harness.errors import RateLimitedError, TransientBackendError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request: attempts, backoff (seconds) and the per-attempt timeout."""

    max_attempts: int = 8
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5  # a backoff is stretched by a random fraction in [0, jitter] of itself
    timeout: float | None = 120.0


@dataclass
class CallStats:
    """Counters shown in progress and recorded in the manifest."""

    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    transient_errors: int = 0


class AdaptiveLimiter:
    """An AIMD window on concurrent calls; FIFO among waiters."""

    def __init__(self, limit: int, *, min_limit: int = 1, increase_every: int = 10):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.max_limit = limit
        self.min_limit = max(1, min(min_limit, limit))
        self.window = limit
        self.increase_every = max(1, increase_every)
        self.in_flight = 0
        self.epoch = 0  # bumped at every cut; a slot remembers the epoch it was granted in
        self.cuts = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future] = deque()

    async def acquire(self) -> int:
        """Wait for a free slot; return the epoch it was granted in (pass it to :meth:`on_rate_limited`)."""
        if self.in_flight < self.window and not self._waiters:
            self.in_flight += 1
            return self.epoch
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                try:
                    self._waiters.remove(future)
                except ValueError:
                    pass
            raise
        return self.epoch

    def release(self) -> None:
        """Give a slot back and hand it to the next waiter if the window allows."""
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.window:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1  # hand-off: counted before the waiter resumes
                future.set_result(None)

    def on_success(self) -> None:
        """Additive increase: one slot more per ``increase_every`` successes."""
        if self.window >= self.max_limit:
            return
        self._successes += 1
        if self._successes >= self.increase_every:
            self._successes = 0
            self.window += 1
            self._wake()

    def on_rate_limited(self, epoch: int) -> None:
        """Multiplicative decrease, once per congestion event."""
        if epoch != self.epoch:
            return  # sent before the last cut: that cut already accounted for it
        self.window = max(self.min_limit, self.window // 2)
        self.epoch += 1
        self.cuts += 1
        self._successes = 0


def _wait_strategy(policy: RetryPolicy, offset: int = 0) -> Callable[[RetryCallState], float]:
    # Written out rather than tenacity's wait_exponential_jitter, whose arguments changed across versions.
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            # Honour the server's Retry-After, plus a little jitter so waiters do not return in lockstep.
            return max(0.0, float(exc.retry_after)) * (1.0 + 0.1 * random.random())
        backoff = policy.initial_wait * 2 ** (state.attempt_number + offset - 1)
        return min(backoff * (1.0 + random.uniform(0, policy.jitter)), policy.max_wait)

    return wait


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    limiter: AdaptiveLimiter,
    policy: RetryPolicy,
    stats: CallStats | None = None,
    *,
    describe: str = "request",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``fn()`` under ``limiter`` with timeout and retries; return its result.

    Raises the last :class:`TransientBackendError` when attempts run out, and any other error
    (:class:`PermanentBackendError` included) at once.
    """
    stats = stats if stats is not None else CallStats()
    # Fast path: most calls succeed at once, and building tenacity's machinery for each of them
    # costs about as much CPU as the HTTP request itself. Only a first transient failure pays for it.
    try:
        return await _attempt(fn, limiter, policy, stats, describe)
    except TransientBackendError as exc:
        if policy.max_attempts <= 1:
            raise
        first_wait = _wait_strategy(policy)(_FirstFailure(exc))
    stats.retries += 1
    await sleep(first_wait)

    def before_sleep(state: RetryCallState) -> None:
        stats.retries += 1

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts - 1),  # the fast path was attempt 1
        wait=_wait_strategy(policy, offset=1),
        retry=retry_if_exception_type(TransientBackendError),
        before_sleep=before_sleep,
        reraise=True,
        sleep=sleep,
    )
    async for attempt in retrying:
        with attempt:
            return await _attempt(fn, limiter, policy, stats, describe)
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


class _FirstFailure:
    """The slice of tenacity's RetryCallState the wait strategy reads, for the fast path's failure."""

    attempt_number = 1

    def __init__(self, exc: BaseException):
        self.outcome = _Outcome(exc)


class _Outcome:
    def __init__(self, exc: BaseException):
        self._exc = exc

    def exception(self) -> BaseException:
        return self._exc


async def _attempt(fn: Callable[[], Awaitable[T]], limiter: AdaptiveLimiter, policy: RetryPolicy, stats: CallStats,
                   describe: str) -> T:
    """One try: a slot, the call under the timeout, and the limiter told how it went."""
    epoch = await limiter.acquire()
    stats.calls += 1
    try:
        async with asyncio.timeout(policy.timeout):
            result = await fn()
    except TimeoutError:
        stats.timeouts += 1
        raise TransientBackendError(
            f"{describe} timed out after {policy.timeout:g} s", "raise --request-timeout or lower --concurrency"
        ) from None
    except RateLimitedError:
        stats.rate_limited += 1
        limiter.on_rate_limited(epoch)
        raise
    except TransientBackendError:
        stats.transient_errors += 1
        raise
    finally:
        limiter.release()
    limiter.on_success()
    return result
