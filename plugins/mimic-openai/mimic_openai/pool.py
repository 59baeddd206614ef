"""One model served by several endpoints (replicas): routing, per-endpoint back-off, draining.

A request goes to the endpoint with the fewest requests in flight among those with room. Each
endpoint has its own window of concurrent requests (``endpoint_concurrency``), adapted like the
run's limiter but on its own: a 429/503 from one endpoint halves that endpoint's window (once per
congestion event), pauses it for the Retry-After it announced, and the request is re-sent to another
endpoint; successes add a slot back every ``INCREASE_EVERY``. A 429 from one replica therefore slows
that replica only, and does not reach the run as a rate limit.

An endpoint whose connection fails (refused, reset) or that times out ``TIMEOUTS_TO_DRAIN`` times in
a row is drained: marked down, its requests in flight cancelled and re-sent elsewhere, and after a
back-off (doubling from ``FIRST_DOWN_S`` to ``MAX_DOWN_S``) one real request probes it.

Only when no endpoint can take a request does the pool raise, as a single server would: a
:class:`RateLimitedError` when some endpoint is paused (``retry_after``: when the first is back),
else the :class:`TransientBackendError` of the unreachable servers. So the run's limiter and its
Retry-After handling see the whole pool as one server.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import RateLimitedError, TransientBackendError

from mimic_openai.config import OpenAIConfig
from mimic_openai.transports import EndpointFailure
from mimic_openai.wire import classify_status

Response = tuple[int, dict[str, str], bytes]

INCREASE_EVERY = 10  # successes per slot given back to a window that was halved
TIMEOUTS_TO_DRAIN = 3  # timeouts in a row that mark an endpoint down (a failed connection does at once)
FIRST_DOWN_S = 0.5  # how long a drained endpoint rests before its first probe
MAX_DOWN_S = 30.0  # the longest rest, however often the probe fails
DEFAULT_PAUSE_S = 1.0  # how long a 429/503 without Retry-After pauses its endpoint
TRIES_PER_ENDPOINT = 4  # sends of one request, per endpoint in the pool, before its last error is raised
_SERVER_DOWN_HINT = "check that the servers are up; the run retries it"


class Endpoint:
    """One server of the pool: its transport, its window of requests in flight, and its health."""

    def __init__(self, config: OpenAIConfig, transport: Any):
        self.config, self.transport = config, transport
        self.limit = self.window = config.concurrency
        self.in_flight = 0
        self.epoch = 0  # bumped at each cut of the window; a request remembers the epoch it was sent in
        self.successes = 0
        self.paused_until = 0.0  # rate limited until this time (time.monotonic)
        self.down = False
        self.down_until = 0.0  # drained until this time; then one request probes it
        self.down_wait = 0.0
        self.probing = False
        self.timeouts = 0  # in a row
        self.tasks: set[asyncio.Task] = set()  # requests in flight, cancelled when the endpoint is drained

    def __repr__(self) -> str:
        state = "down" if self.down else f"{self.in_flight}/{self.window}"
        return f"Endpoint({self.config.public_url}, {state})"

    def has_room(self, now: float) -> bool:
        """True when a request can be sent here now."""
        if now < self.paused_until:
            return False
        if self.down:
            return now >= self.down_until and not self.probing
        return self.in_flight < self.window

    def usable(self, now: float) -> bool:
        """True when a request can be sent here now or once a request in flight finishes."""
        return now >= self.paused_until and (not self.down or (now >= self.down_until and not self.probing))

    def answered(self, probe: bool) -> None:
        """The server answered (any status but a rate limit): additive increase; a probe's answer ends the drain."""
        self.timeouts = 0
        if probe:
            self.down, self.down_wait = False, 0.0
        if self.window < self.limit:
            self.successes += 1
            if self.successes >= INCREASE_EVERY:
                self.successes, self.window = 0, self.window + 1

    def rate_limited(self, slot: _Slot, retry_after: float | None, now: float) -> float:
        """Halve the window (once per congestion event) and pause; return the pause in seconds."""
        if slot.probe:  # up, but busy
            self.down, self.down_wait = False, 0.0
        if slot.epoch == self.epoch:
            self.window = max(1, self.window // 2)
            self.epoch += 1
            self.successes = 0
        pause = DEFAULT_PAUSE_S if retry_after is None else max(0.0, retry_after)
        self.paused_until = max(self.paused_until, now + pause)
        return pause

    def failed(self, error: EndpointFailure, probe: bool) -> bool:
        """Count a request that got no answer; True when the endpoint is now to be drained."""
        if self.down:
            return probe  # a failed probe drains it again; late failures of drained requests do not
        if error.timed_out:
            self.timeouts += 1
            return self.timeouts >= TIMEOUTS_TO_DRAIN
        return True

    def drain(self, now: float) -> float:
        """Mark down, cancel the requests in flight (they are re-sent elsewhere); return the rest in seconds."""
        self.down, self.probing, self.timeouts = True, False, 0
        self.down_wait = min(MAX_DOWN_S, 2 * self.down_wait if self.down_wait else FIRST_DOWN_S)
        self.down_until = now + self.down_wait
        for task in self.tasks:
            task.cancel()
        return self.down_wait


@dataclass(frozen=True, slots=True)
class _Slot:
    """A request's place at one endpoint: the window's epoch when it was sent, and whether it probes."""

    endpoint: Endpoint
    epoch: int
    probe: bool


class EndpointPool:
    """Replicas of one model behind one ``post``: least in flight first, failing over between them."""

    def __init__(self, configs: list[OpenAIConfig], make_transport: Callable[[OpenAIConfig], Any]):
        self.endpoints = [Endpoint(config, make_transport(config)) for config in configs]
        self.model = configs[0].model
        self._waiters: deque[asyncio.Future] = deque()
        self._turn = 0  # where the search for the least loaded endpoint starts, so that ties take turns

    async def post(self, payload: dict[str, Any]) -> tuple[Response, OpenAIConfig]:
        """Send one request; return the response and the config of the endpoint that gave it.

        A rate limit or a missing answer re-sends it to another endpoint; when none can take it,
        raises as one server would (see the module docstring).
        """
        last_error: TransientBackendError | None = None
        for _ in range(TRIES_PER_ENDPOINT * len(self.endpoints)):
            slot = await self._acquire(last_error)
            endpoint = slot.endpoint
            try:
                response = await self._post_on(endpoint, payload)
            except EndpointFailure as error:
                self._finish(slot, drain=endpoint.failed(error, slot.probe))
                last_error = error
                continue
            except BaseException:
                self._finish(slot)
                raise
            status, headers, body = response
            error = classify_status(status, headers, body, endpoint.config) if status in (429, 503) else None
            if isinstance(error, RateLimitedError):
                self._finish(slot, pause=endpoint.rate_limited(slot, error.retry_after, time.monotonic()))
                last_error = error
                continue
            endpoint.answered(slot.probe)
            self._finish(slot)
            return response, endpoint.config
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        """Close every endpoint's HTTP client."""
        for endpoint in self.endpoints:
            await endpoint.transport.aclose()

    # ----- choosing an endpoint ---------------------------------------------------------------
    async def _acquire(self, last_error: TransientBackendError | None) -> _Slot:
        while True:
            now = time.monotonic()
            endpoint = self._least_loaded(now)
            if endpoint is not None:
                probe = endpoint.down
                if probe:
                    endpoint.probing = True
                endpoint.in_flight += 1
                return _Slot(endpoint, endpoint.epoch, probe)
            if not any(e.usable(now) for e in self.endpoints):
                raise self._unavailable(now, last_error)
            await self._wait_for_room()

    def _least_loaded(self, now: float) -> Endpoint | None:
        n = len(self.endpoints)
        self._turn = (self._turn + 1) % n
        best = None
        for i in range(n):
            endpoint = self.endpoints[(self._turn + i) % n]
            if endpoint.has_room(now) and (best is None or endpoint.in_flight < best.in_flight):
                best = endpoint
        return best

    async def _wait_for_room(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            try:
                self._waiters.remove(future)
            except ValueError:
                pass

    def _wake(self, everyone: bool = False) -> None:
        """Wake as many waiters as there are free slots (all, when the endpoints' state changed)."""
        now = time.monotonic()
        free = len(self._waiters) if everyone else sum(
            max(0, e.window - e.in_flight) if not e.down else 1 for e in self.endpoints if e.has_room(now))
        while free > 0 and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                free -= 1

    def _unavailable(self, now: float, last_error: TransientBackendError | None) -> TransientBackendError:
        """The error of a pool where no endpoint can take a request."""
        n = len(self.endpoints)
        paused = [e.paused_until - now for e in self.endpoints if e.paused_until > now]
        last = f"; last: {last_error.message}" if last_error is not None else ""
        if paused:
            return RateLimitedError(f"every endpoint of openai:{self.model} is rate limited or down ({n}){last}",
                                    retry_after=min(paused))
        return TransientBackendError(f"no endpoint of openai:{self.model} is reachable ({n} drained){last}", _SERVER_DOWN_HINT)

    # ----- sending and what the answer says about the endpoint --------------------------------
    @staticmethod
    async def _post_on(endpoint: Endpoint, payload: dict[str, Any]) -> Response:
        """POST on one endpoint, as a task that draining the endpoint cancels."""
        task = asyncio.ensure_future(endpoint.transport.post(payload))
        endpoint.tasks.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise EndpointFailure(f"{endpoint.config.public_url} went down with this request in flight",
                                      _SERVER_DOWN_HINT) from None
            raise
        finally:
            endpoint.tasks.discard(task)

    def _finish(self, slot: _Slot, *, pause: float | None = None, drain: bool = False) -> None:
        """Free the request's slot and wake waiters: all of them after a pause or a drain, which may
        leave no endpoint to wait for (they then raise), else as many as there are free slots."""
        endpoint = slot.endpoint
        endpoint.in_flight -= 1
        if slot.probe:
            endpoint.probing = False
        if drain:
            self._wake_later(endpoint.drain(time.monotonic()))
        if pause is not None:
            self._wake_later(pause)
        self._wake(everyone=drain or pause is not None)

    def _wake_later(self, delay: float) -> None:
        """Wake every waiter when a paused or drained endpoint can take requests again."""
        asyncio.get_running_loop().call_later(delay, self._wake, True)
