"""AdaptiveLimiter (AIMD) and call_with_retries (backoff, Retry-After, timeouts, permanent errors)."""

from __future__ import annotations

import asyncio

import pytest

from harness.concurrency import AdaptiveLimiter, CallStats, RetryPolicy, call_with_retries
from harness.errors import PermanentBackendError, RateLimitedError, TransientBackendError

FAST = RetryPolicy(max_attempts=5, initial_wait=0.0, max_wait=0.0, jitter=0.0, timeout=5.0)


async def test_limiter_bounds_in_flight_calls():
    limiter = AdaptiveLimiter(3)
    peak = 0

    async def call():
        nonlocal peak
        await limiter.acquire()
        peak = max(peak, limiter.in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        limiter.release()

    await asyncio.gather(*(call() for _ in range(20)))
    assert peak == 3 and limiter.in_flight == 0


async def test_aimd_halves_once_per_event_and_recovers_additively():
    limiter = AdaptiveLimiter(16, increase_every=2)
    epochs = [await limiter.acquire() for _ in range(8)]
    for epoch in epochs:  # a burst of 429s to calls sent in one epoch cuts the window once
        limiter.on_rate_limited(epoch)
        limiter.release()
    assert limiter.window == 8 and limiter.cuts == 1
    limiter.on_rate_limited(limiter.epoch)
    assert limiter.window == 4
    for _ in range(4):
        limiter.on_success()
    assert limiter.window == 6
    for _ in range(5):
        limiter.on_rate_limited(limiter.epoch)
    assert limiter.window == 1  # never below min_limit
    for _ in range(100):
        limiter.on_success()
    assert limiter.window == 16  # never above the configured maximum


async def test_cancelled_waiter_does_not_leak_a_slot():
    limiter = AdaptiveLimiter(1)
    await limiter.acquire()
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.acquire(), 1)


async def test_transient_errors_are_retried_then_succeed():
    failures = iter([TransientBackendError("500"), RateLimitedError("429", retry_after=None), None])
    stats = CallStats()

    async def call():
        exc = next(failures)
        if exc:
            raise exc
        return "ok"

    assert await call_with_retries(call, AdaptiveLimiter(4), FAST, stats) == "ok"
    assert stats.calls == 3 and stats.retries == 2 and stats.rate_limited == 1 and stats.transient_errors == 1


async def test_retry_after_is_honoured_before_resending():
    waits: list[float] = []
    attempts = 0

    async def fake_sleep(seconds):
        waits.append(seconds)

    async def call():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RateLimitedError("slow down", retry_after=2.5)
        return attempts

    limiter = AdaptiveLimiter(8)
    assert await call_with_retries(call, limiter, RetryPolicy(initial_wait=0.01, max_wait=0.02), sleep=fake_sleep) == 2
    assert len(waits) == 1 and 2.5 <= waits[0] <= 2.75
    assert limiter.window == 4 and limiter.in_flight == 0


async def test_exhausted_retries_raise_the_last_transient_error():
    stats = CallStats()

    async def call():
        raise TransientBackendError("server error 500")

    with pytest.raises(TransientBackendError, match="500"):
        await call_with_retries(call, AdaptiveLimiter(2), FAST, stats)
    assert stats.calls == FAST.max_attempts


async def test_permanent_error_is_not_retried():
    calls = 0

    async def call():
        nonlocal calls
        calls += 1
        raise PermanentBackendError("401 unauthorized")

    limiter = AdaptiveLimiter(2)
    with pytest.raises(PermanentBackendError):
        await call_with_retries(call, limiter, FAST)
    assert calls == 1 and limiter.in_flight == 0


async def test_timeout_becomes_a_retried_transient_error():
    stats = CallStats()
    gate = asyncio.Event()
    attempts = 0

    async def call():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await gate.wait()  # never set: only the timeout ends this attempt
        return "late ok"

    policy = RetryPolicy(max_attempts=3, initial_wait=0.0, max_wait=0.0, jitter=0.0, timeout=0.01)
    assert await call_with_retries(call, AdaptiveLimiter(1), policy, stats) == "late ok"
    assert stats.timeouts == 1 and stats.retries == 1
