"""The generate phase: cache lookups, batched model calls, group-committed writes of draw rows.

:func:`generate_phase` runs it for a session (signals, hooks, progress, budget); :class:`Generator`
is the machinery. Worker coroutines (as many as ``--concurrency``) take one batch at a time: all samples of a context
when the mimic declares ``SHARED_PREFIX`` (its prefill is then paid once), else a single request.
Finished batches go to one writer coroutine, which takes everything that has arrived, turns it into
draw rows (item text, features, world draws), stores completions in the cache, appends the rows to
the run log with a single fsync, and only then reports them done; then it waits COMMIT_INTERVAL
before the next commit. Under load this is a group commit: one fsync covers many draws, and the
event loop keeps sending requests meanwhile.
"""

from __future__ import annotations

import asyncio
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.cache import DrawCache
from harness.concurrency import CallStats
from harness.errors import BackendError, BudgetExceeded, HarnessError
from harness.events import SampleCompleted
from harness.mimic import Capability, Completion, GenerationRequest
from harness.prompts import PlannedDraw
from harness.run.calls import ModelCalls
from harness.run.draws import DrawBuilder
from harness.run.session import RunSession
from harness.store import RunStore

_CACHED_CHUNK = 512  # cached draws are written in chunks so progress moves and memory stays flat
# Least time between two commits of the draw log. Each commit has a fixed cost (two thread hops,
# a polars feature pass, an SQLite transaction, an fsync, the hooks) that one draw at a time would
# pay per draw: at 64 requests in flight and 50 ms latency that doubled the client's CPU per
# request. A draw waits at most this long to become durable; a slow local model never notices.
COMMIT_INTERVAL = 0.05
# The first requests of a run are launched spread over this long (or until the first answer comes
# back, if sooner) instead of all at once. Sent together, they come back together, and the client
# and the server then handle every round as a burst, each answer queued behind the others; spread,
# they stay spread. At 64 in flight and 50 ms latency that lifted a bare aiohttp client from
# 1138-1175 to 1192-1203 requests/s. A remote API with seconds of latency never notices 50 ms.
LAUNCH_WINDOW = 0.05


@dataclass(frozen=True)
class PendingDraw:
    """A planned draw still to be recorded, its request and cache key."""

    draw: PlannedDraw
    request: GenerationRequest
    cache_key: str


@dataclass(frozen=True)
class FinishedDraw:
    """A draw with its completion, not yet durable."""

    pending: PendingDraw
    completion: Completion
    cached: bool


# Turns finished draws into log rows (item text, features, world draws).
RowBuilder = Callable[[list[FinishedDraw]], Awaitable[list[dict[str, Any]]]]
# Called after rows are durable: hooks, progress.
RecordedCallback = Callable[[Sequence[FinishedDraw], list[dict[str, Any]]], None]


@dataclass
class GenerationOutcome:
    """How the phase ended: ``complete``, ``interrupted``, ``budget`` or ``failed`` (with the error)."""

    status: str = "complete"
    message: str | None = None
    error: BaseException | None = None
    recorded: int = 0
    cached: int = 0
    stats: CallStats = field(default_factory=CallStats)
    limiter_cuts: int = 0  # times a rate limit halved the concurrency window


def group_requests(pending: Sequence[PendingDraw], shared_prefix: bool) -> list[list[PendingDraw]]:
    """Batches for ``generate``: a context's samples together with SHARED_PREFIX, else one each."""
    if not shared_prefix:
        return [[p] for p in pending]
    groups: dict[str, list[PendingDraw]] = {}
    for p in pending:
        groups.setdefault(p.request.context_id, []).append(p)
    return list(groups.values())


class _Flag:
    """A boolean a loop callback can set."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        """Set the flag."""
        self.value = True


class Generator:
    """Runs the generate phase of one run; :meth:`stop` ends it early (SIGINT, budget)."""

    def __init__(
        self,
        *,
        calls: ModelCalls,
        store: RunStore,
        build_rows: RowBuilder,
        on_recorded: RecordedCallback,
        cache: DrawCache | None,
        commit_interval: float = COMMIT_INTERVAL,
        launch_window: float = LAUNCH_WINDOW,
    ):
        self.calls = calls
        self.model_id = calls.model_id
        self.store = store
        self.build_rows = build_rows
        self.on_recorded = on_recorded
        self.cache = cache
        self.concurrency = calls.concurrency
        self.commit_interval = commit_interval
        self.launch_window = launch_window
        self._first_answer = asyncio.Event()  # set when the first model call returns (see LAUNCH_WINDOW)
        self._closing = asyncio.Event()  # set once no more batches will come
        self.outcome = GenerationOutcome(stats=calls.stats)
        self._queue: asyncio.Queue[list[FinishedDraw] | None] = asyncio.Queue()
        self._workers: list[asyncio.Task] = []

    def stop(self, status: str, message: str | None = None, error: BaseException | None = None, *, cancel: bool = True) -> None:
        """End the phase: no new batches start; with ``cancel``, in-flight calls are abandoned too.

        The first reason wins. Draws already returned by the model are still recorded.
        """
        if self.outcome.status == "complete":
            self.outcome.status, self.outcome.message, self.outcome.error = status, message, error
        if cancel:
            current = asyncio.current_task()
            for task in self._workers:
                if task is not current and not task.done():
                    task.cancel()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self.outcome.status != "complete"

    async def run(self, pending: Sequence[PendingDraw]) -> GenerationOutcome:
        """Record every pending draw (or stop early); return how it ended."""
        writer = asyncio.create_task(self._writer())
        try:
            fresh = self._enqueue_cached(pending)
            groups = deque(group_requests(fresh, Capability.SHARED_PREFIX in self.calls.mimic.capabilities))
            n_workers = min(self.concurrency, len(groups))
            spacing = self.launch_window / n_workers if n_workers else 0.0
            self._workers = [asyncio.create_task(self._worker(groups, k * spacing)) for k in range(n_workers)]
            if self._workers:
                await asyncio.gather(*self._workers, return_exceptions=True)
        finally:
            self._queue.put_nowait(None)
            self._closing.set()
            await writer
        return self.outcome

    def _enqueue_cached(self, pending: Sequence[PendingDraw]) -> list[PendingDraw]:
        if self.cache is None:
            return list(pending)
        hits = self.cache.get_many([p.cache_key for p in pending])
        cached = [FinishedDraw(p, hits[p.cache_key], True) for p in pending if p.cache_key in hits]
        for start in range(0, len(cached), _CACHED_CHUNK):
            self._queue.put_nowait(cached[start : start + _CACHED_CHUNK])
        return [p for p in pending if p.cache_key not in hits]

    async def _worker(self, groups: deque[list[PendingDraw]], launch_delay: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        if launch_delay > 0 and not self._first_answer.is_set():
            try:  # see LAUNCH_WINDOW
                await asyncio.wait_for(self._first_answer.wait(), launch_delay)
            except TimeoutError:
                pass
        while groups and not self.stopping:
            group = groups.popleft()
            requests = [p.request for p in group]
            yielded = _Flag()
            loop.call_soon(yielded.set)  # runs only if the call below lets the event loop turn
            try:
                completions = await self.calls.call(requests)
            except HarnessError as exc:
                self.stop("failed", exc.one_line(), exc)
                return
            except Exception as exc:  # a backend bug must stop the run, not silently lose this batch
                error = BackendError(f"backend for {self.model_id} raised {type(exc).__name__}: {exc}",
                                     "rerun with --debug and report it to the backend plugin's authors")
                error.__cause__ = exc
                self.stop("failed", error.one_line(), error)
                return
            self._queue.put_nowait([FinishedDraw(p, c, False) for p, c in zip(group, completions)])
            self._first_answer.set()
            reason = self.calls.budget_reached()  # money is spent when a call returns, not when its draw is logged
            if reason:  # calls already in flight finish and are recorded: a clean, resumable stop
                self.stop("budget", reason, BudgetExceeded(reason), cancel=False)
            if not yielded.value:
                # A backend that never suspends (an embedded model computing in this thread) would
                # otherwise starve the writer and the signal handlers until every call is done. One
                # that did suspend goes straight on: yielding here would queue its next request
                # behind every response that arrived in the same burst.
                await asyncio.sleep(0)

    async def _writer(self) -> None:
        done = False
        while not done:
            batch = await self._queue.get()
            if batch is None:
                break
            items = list(batch)
            # Group commit: take everything that is already waiting.
            while not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    done = True
                    break
                items.extend(more)
            try:
                await self._record(items)
            except BaseException as exc:  # a full disk, a broken feature: stop, keep what is durable
                if isinstance(exc, asyncio.CancelledError):
                    raise
                self.stop("failed", exc.one_line() if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}", exc)
                self._drain()
                return
            if not done and self.commit_interval > 0 and not self._closing.is_set():
                try:  # the next commit takes what arrives meanwhile; the last one goes at once
                    await asyncio.wait_for(self._closing.wait(), self.commit_interval)
                except TimeoutError:
                    pass

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _record(self, items: list[FinishedDraw]) -> None:
        rows = await self.build_rows(items)
        if self.cache is not None:
            self.cache.put_many(self.model_id, [(f.pending.cache_key, f.completion) for f in items if not f.cached])
        # fsync off the event loop, so in-flight requests keep being answered meanwhile.
        await asyncio.to_thread(self.store.append, rows)
        self.outcome.recorded += len(rows)
        self.outcome.cached += sum(f.cached for f in items)
        self.on_recorded(items, rows)


async def generate_phase(session: RunSession, calls: ModelCalls, builder: DrawBuilder, planned: Sequence[PlannedDraw]) -> GenerationOutcome:
    """Record every planned draw not yet in the log: signals, hooks, progress, budget."""
    done_keys = session.store.done_keys()
    pending = [PendingDraw(d, r, r.cache_key(calls.model_id)) for d in planned if d.key not in done_keys for r in [builder.request(d)]]
    session.announce(len(planned), len(pending))
    reason = calls.budget_reached()
    if reason and pending:  # a resumed run already over budget makes no call at all
        return GenerationOutcome(status="budget", message=reason, stats=calls.stats)
    if not pending:
        return GenerationOutcome(stats=calls.stats)
    generator = Generator(calls=calls, store=session.store, build_rows=builder.rows,
                          on_recorded=recorded_callback(session), cache=session.cache)
    start_progress(session, builder, calls, planned)
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, generator.stop, "interrupted", "interrupted by a signal")
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: Ctrl-C raises KeyboardInterrupt as usual there
    try:
        outcome = await generator.run(pending)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        session.progress.stop(generator.outcome.status)
    outcome.limiter_cuts = calls.limiter.cuts
    return outcome


def start_progress(session: RunSession, builder: DrawBuilder, calls: ModelCalls, planned: Sequence[PlannedDraw]) -> None:
    """Show the phase's progress: planned and recorded draws per pool."""
    totals: dict[str, int] = {}
    for d in planned:
        totals[d.pool] = totals.get(d.pool, 0) + 1
    done: dict[str, int] = {}
    for row in session.store.rows():
        done[row["pool"]] = done.get(row["pool"], 0) + 1
    session.progress.start(f"{builder.loaded.task.name} x {calls.model_id}", totals, done, calls.stats)


def recorded_callback(session: RunSession) -> RecordedCallback:
    """After rows are durable: the ``sample_completed`` hook per draw, and progress per pool.

    It reads only the rows (each says whether it was cached), so the Ray executor's driver calls
    it with the rows it merges from its workers.
    """
    pm = session.registries.plugin_manager
    hook = pm.hook.sample_completed if pm is not None else None

    def on_recorded(items: Sequence[FinishedDraw], rows: list[dict[str, Any]]) -> None:
        by_pool: dict[str, list[int]] = {}
        for row in rows:
            cached = bool(row.get("cached"))
            counts = by_pool.setdefault(row["pool"], [0, 0])
            counts[0] += 1
            counts[1] += int(cached)
            if hook is not None:
                features = {k: v for k, v in row.items() if k.startswith("feat_")}
                hook(event=SampleCompleted(row["run_id"], row["task"], row["pool"], row["context_id"], row["sample_index"],
                                           row["text"], cached, features))
        for pool, (n, cached) in by_pool.items():
            session.progress.advance(pool, n, cached)

    return on_recorded
