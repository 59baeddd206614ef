"""The generate phase sharded over a Ray cluster (``mimic run --executor ray``): the driver's side.

The driver runs the ordinary run (load, session, plan, manifest; afterwards field probabilities
and estimates); only generation is spread out. The pending draws are split into shards by draw
key, a context's samples always in one shard (a shared-prefix batch is never split), and each
shard is recorded by a :class:`~harness.run.ray_worker.ShardWorker` into its own store under
``<run_dir>/shards/<shard_id>/``. As each shard finishes, the driver merges its rows into the
run's ``draws.jsonl`` as a union (:meth:`RunStore.append` skips keys already there, so merging
twice never duplicates) and deletes the shard directory.

When a worker or its node dies, the shard's durable rows are merged from its directory and only
its missing draws are resubmitted, to another worker. A rerun merges any shard directories an
earlier invocation left, then shards what is still missing: it resumes like a local run.

One mechanism, an actor per model replica, serves every backend. Tasks for HTTP backends would
reload the plugins and the task for every shard, and a dead task's shard is resubmitted exactly
like a dead actor's, so a second path would add code and tests for no gain; a gguf model, which
takes seconds to load, needs the actor anyway.

Ray is imported only here, inside functions, and only when a run asks for it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import errors
from harness.errors import BackendError, HarnessError, RunStoreError, UsageError
from harness.prompts import PlannedDraw
from harness.records import DrawKey
from harness.run.calls import ModelCalls
from harness.run.config import RunConfig
from harness.run.draws import DrawBuilder
from harness.run.generate import GenerationOutcome, RecordedCallback, recorded_callback, start_progress
from harness.run.ray_worker import ShardJob, ShardReport, ShardWorker, forwarded_environment, host_identity
from harness.run.session import RunSession
from harness.store import RunStore

SHARDS_DIR = "shards"
SHARDS_PER_WORKER = 2  # more, smaller shards balance better and lose less to a dead worker; each costs a store
PLACEMENT_TIMEOUT = 120.0  # seconds to wait for a worker when none is running (no free CPU in the cluster)
INSTALL_HINT = "pip install 'mimic-harness[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a one-line usage error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed", INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class Shard:
    """Draws one worker records together: whole contexts of one (pool, context size)."""

    shard_id: str
    draws: tuple[PlannedDraw, ...]


def plan_shards(draws: Sequence[PlannedDraw], n_shards: int, prefix: str = "s") -> list[Shard]:
    """Pack the draws into at most ``n_shards`` shards of about equal size, never splitting a context.

    A group is one (pool, n_exemplars, context_id): the samples that share a prompt, and so a
    shared-prefix batch. Largest groups go first, each to the smallest shard so far (deterministic).
    """
    groups: dict[tuple[str, int, int], list[PlannedDraw]] = {}
    for d in draws:
        groups.setdefault((d.pool, d.n_exemplars, d.context_id), []).append(d)
    bins: list[list[PlannedDraw]] = [[] for _ in range(max(1, min(n_shards, len(groups))))]
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        smallest = min(range(len(bins)), key=lambda i: len(bins[i]))
        bins[smallest].extend(groups[key])
    return [Shard(f"{prefix}{i:03d}", tuple(b)) for i, b in enumerate(bins) if b]


def merge_rows(store: RunStore, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append the rows whose keys the run log lacks (one fsync); return those rows."""
    fresh, seen = [], set()
    for row in rows:
        key = DrawKey.of(row)
        if key not in store and key not in seen:
            seen.add(key)
            fresh.append(row)
    store.append(fresh)
    return fresh


def merge_shard_dir(store: RunStore, shard_dir: Path) -> list[dict[str, Any]] | None:
    """Merge a shard directory's durable rows into the run log and delete it; return the new rows.

    None when a worker still holds the shard's lock (it is merged on a later pass or rerun).
    Opening the shard's store drops a torn tail a killed worker may have left.
    """
    if not shard_dir.is_dir():
        return []
    try:
        shard = RunStore.open(shard_dir)
    except RunStoreError:
        return None
    try:
        fresh = merge_rows(store, shard.rows())
    finally:
        shard.close()
    shutil.rmtree(shard_dir, ignore_errors=True)
    return fresh


def merge_leftovers(store: RunStore, on_merged: RecordedCallback) -> int:
    """Merge every shard directory under the run (an earlier invocation's, or a lost worker's); return the rows added."""
    root = store.run_dir / SHARDS_DIR
    added = 0
    for shard_dir in sorted(root.iterdir()) if root.is_dir() else []:
        fresh = merge_shard_dir(store, shard_dir)
        if fresh:
            on_merged((), fresh)
            added += len(fresh)
    return added


def connect(ray: Any, address: str) -> bool:
    """Join the Ray cluster (``auto``: $RAY_ADDRESS, else a running local cluster, else a new local one).

    Returns True when this call connected (the caller then disconnects), False when the process
    was connected already (a script that called ``ray.init`` itself).
    """
    if ray.is_initialized():
        return False
    hint = ("start one with `ray start --head`, or pass --ray-address auto; a cluster started with "
            "RAY_AUTH_MODE=token needs it (and its ~/.ray/auth_token) here too")
    refused = unreachable(address)
    if refused:  # ray.init would retry for minutes before saying so
        raise UsageError(f"cannot join the Ray cluster at {address}: {refused}", hint)
    try:
        ray.init(address=None if address == "auto" else address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot join the Ray cluster at {address}: {first}", hint) from None
    return True


def unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why a ``HOST:PORT`` address takes no TCP connection (None when it does, or is not of that form)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """The Ray errors that mean a worker, its process or its node died (its shard is resubmitted)."""
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "LocalRayletDiedError")
    return tuple(cls for name in names if (cls := getattr(ray.exceptions, name, None)) is not None)


class WorkerPool:
    """The run's workers: ready ones take shards; a lost one is replaced by an actor Ray places when it can."""

    def __init__(self, ray: Any, job: ShardJob, size: int):
        self._ray = ray
        self._job = job
        # max_restarts=0: the driver, not Ray, decides where a lost shard goes. A restarting actor
        # whose node is gone would hold the shard's call until a CPU frees up somewhere.
        self._remote = ray.remote(ShardWorker).options(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD",
                                                        runtime_env={"env_vars": forwarded_environment()})
        self.idle: list[Any] = []
        self.starting: dict[asyncio.Future, Any] = {}
        self._actors: list[Any] = []
        self._replaced, self._max_replacements = 0, 4 * size  # a worker that dies at every start must end the run
        for _ in range(size):
            self.start()

    def start(self) -> None:
        """Ask Ray for one more worker; it becomes idle once it answers ``ready``."""
        actor = self._remote.remote(self._job)
        self.starting[asyncio.wrap_future(actor.ready.remote().future())] = actor
        self._actors.append(actor)

    def started(self, future: asyncio.Future, lost: tuple[type[BaseException], ...]) -> None:
        """A worker answered ``ready``; one whose node died while it started is replaced.

        One whose ``__init__`` raised (a plugin missing on its node, a bad task) stops the run:
        every replacement would fail the same way.
        """
        actor = self.starting.pop(future)
        try:
            future.result()
        except lost as exc:
            if getattr(exc, "actor_init_failed", False) or self._replaced >= self._max_replacements:
                raise BackendError(f"a Ray worker could not start: {last_line(exc)}",
                                   "check that every node has the harness and the same plugins installed "
                                   "(or run with --executor local to see the error)") from None
            self.discard(actor)
            return
        self.idle.append(actor)

    def discard(self, actor: Any) -> None:
        """Forget a lost worker and ask for a replacement (placed when the cluster has a free CPU)."""
        self._kill(actor)
        self._replaced += 1
        self.start()

    async def close(self) -> None:
        """Let ready workers release their model, then end every worker this pool started."""
        closing = [asyncio.wrap_future(a.close.remote().future()) for a in self.idle]
        if closing:
            await asyncio.wait(closing, timeout=10)
        for future in self.starting:  # workers that never became ready: nobody waits for them now
            future.cancel()
        for actor in self._actors:
            self._kill(actor)

    def _kill(self, actor: Any) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - an actor already gone cannot be killed; nothing to do
            pass


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's text (Ray's errors carry whole tracebacks)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an error's text: where Ray puts the exception a worker's ``__init__`` raised."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def report_error(report: ShardReport) -> HarnessError:
    """The harness error a failed shard reported, as its own class where the harness has it."""
    name, message, hint = report.error or ("BackendError", f"shard {report.shard_id} failed", None)
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, HarnessError)):
        cls = BackendError
    return cls(message, hint)


@dataclass
class ShardedRun:
    """Hands shards to workers, merges what they record, and resubmits the shards of lost workers."""

    ray: Any
    pool: WorkerPool
    store: RunStore
    calls: ModelCalls
    on_merged: RecordedCallback
    shard_root: Path
    outcome: GenerationOutcome
    running: dict[asyncio.Future, tuple[Any, Shard]] = field(default_factory=dict)
    resubmitted: int = 0
    cache_kinds: set[str] = field(default_factory=set)

    async def run(self, queue: deque[Shard]) -> None:
        """Until every shard is merged (or one failed): assign, wait, merge or resubmit."""
        lost = lost_worker_errors(self.ray)
        while (queue and self.outcome.status == "complete") or self.running:
            self._assign(queue)
            waiting = set(self.running) | set(self.pool.starting)
            finished, _ = await asyncio.wait(waiting, timeout=None if self.running else PLACEMENT_TIMEOUT,
                                             return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                raise BackendError(f"no Ray worker could be placed in {PLACEMENT_TIMEOUT:.0f} s (the cluster has no free CPU)",
                                   "add a node with `ray start --address HEAD`, or check `ray status`; then rerun to resume")
            for future in finished:
                if future in self.pool.starting:
                    self.pool.started(future, lost)
                else:
                    self._finished(future, queue, lost)

    def _assign(self, queue: deque[Shard]) -> None:
        while queue and self.pool.idle and self.outcome.status == "complete":
            actor, shard = self.pool.idle.pop(), queue.popleft()
            ref = actor.run_shard.remote(shard.shard_id, str(self.shard_root / shard.shard_id), list(shard.draws))
            self.running[asyncio.wrap_future(ref.future())] = (actor, shard)

    def _finished(self, future: asyncio.Future, queue: deque[Shard], lost: tuple[type[BaseException], ...]) -> None:
        actor, shard = self.running.pop(future)
        try:
            report: ShardReport = future.result()
        except lost:
            self._resubmit(actor, shard, queue)
            return
        except self.ray.exceptions.RayTaskError as exc:  # a bug in the worker, not a lost one
            raise BackendError(f"a Ray worker failed on shard {shard.shard_id}: {first_line(exc)}",
                               "rerun with --executor local --debug to see the traceback, and report it") from None
        self.pool.idle.append(actor)
        self._merge(merge_rows(self.store, report.rows))
        shutil.rmtree(self.shard_root / shard.shard_id, ignore_errors=True)
        self.cache_kinds.add(report.cache)
        for name, value in report.stats.items():
            setattr(self.calls.stats, name, getattr(self.calls.stats, name) + value)
        self.outcome.cached += report.cached
        if report.status != "complete" and self.outcome.status == "complete":
            error = report_error(report)
            self.outcome.status, self.outcome.message, self.outcome.error = "failed", error.one_line(), error

    def _resubmit(self, actor: Any, shard: Shard, queue: deque[Shard]) -> None:
        """A lost worker: keep the shard's durable rows, hand its missing draws to another worker."""
        self.pool.discard(actor)
        fresh = merge_shard_dir(self.store, self.shard_root / shard.shard_id)
        self._merge(fresh or [])
        rest = tuple(d for d in shard.draws if d.key not in self.store)
        if rest:
            self.resubmitted += 1
            # A new id: should the lost worker still hold the old directory's lock, the two never share it.
            queue.append(Shard(f"{shard.shard_id}r{self.resubmitted}", rest))

    def _merge(self, fresh: list[dict[str, Any]]) -> None:
        if fresh:
            self.outcome.recorded += len(fresh)
            self.on_merged((), fresh)


def shard_job(session: RunSession, builder: DrawBuilder, calls: ModelCalls, config: RunConfig) -> ShardJob:
    """What every worker of this run needs (paths made absolute: a worker's working directory is Ray's)."""
    cache = config.output.cache_location()
    return ShardJob(task=builder.loaded.task, model=config.model, model_id=session.model_id, limits=config.limits,
                    price=calls.price, run_id=session.run_id, seed=session.seed,
                    cache_dir=cache.resolve() if cache is not None else None, driver_host=host_identity())


async def sharded_generate_phase(session: RunSession, calls: ModelCalls, builder: DrawBuilder,
                                 planned: Sequence[PlannedDraw], config: RunConfig) -> GenerationOutcome:
    """Record every planned draw not yet in the log, sharded over the Ray cluster at ``config.ray_address``."""
    ray = import_ray()
    on_merged = recorded_callback(session)
    merge_leftovers(session.store, lambda items, rows: None)  # before counting: an earlier invocation's shards
    pending = [d for d in planned if d.key not in session.store]
    session.announce(len(planned), len(pending))
    outcome = GenerationOutcome(stats=calls.stats)
    if not pending:  # nothing to shard: the manifest keeps how the draws were made
        session.manifest.executor = session.previous.executor if session.previous else None
        return outcome
    record = {"name": "ray", "address": config.ray_address, "workers": 0, "shards": 0, "resubmitted": 0}
    session.manifest.executor = record
    own_connection = connect(ray, config.ray_address)
    start_progress(session, builder, calls, planned)
    pool = None
    try:
        workers = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len({(d.pool, d.n_exemplars, d.context_id) for d in pending})))
        shards = plan_shards(pending, workers * SHARDS_PER_WORKER)
        record.update(workers=workers, shards=len(shards))
        session.store.write_manifest(session.manifest)
        pool = WorkerPool(ray, shard_job(session, builder, calls, config), workers)
        sharded = ShardedRun(ray, pool, session.store, calls, on_merged, session.run_dir / SHARDS_DIR, outcome)
        await sharded.run(deque(shards))
        record.update(resubmitted=sharded.resubmitted, cache=",".join(sorted(sharded.cache_kinds)))
    finally:
        if pool is not None:
            await pool.close()
        outcome.recorded += merge_leftovers(session.store, on_merged)  # what stopped workers made durable
        if own_connection:
            ray.shutdown()
        _remove_if_empty(session.run_dir / SHARDS_DIR)
        session.progress.stop(outcome.status)
    outcome.limiter_cuts = calls.limiter.cuts
    return outcome


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass  # absent, or a shard a worker still held: a rerun merges it
