"""The worker side of a run sharded over Ray: :class:`ShardWorker` records the draws of one shard at a time.

A worker is a Ray actor, one per model replica: it loads the registries and the task when it
starts and the model on its first shard, then keeps them for every shard it is given. It writes
a shard exactly as the local generate phase writes a run: the same :class:`~harness.run.generate.Generator`
(batches, group-committed fsync'd appends), the same :class:`~harness.run.draws.DrawBuilder` rows
(features, world draws) with the driver's run id, model id and seed, so each draw's seed and row
depend only on its key. Its rows go into its own run store, ``<run_dir>/shards/<shard_id>/``:
durable before the driver hears of them, and still there when the worker or its node dies.

This module imports no Ray at module level: :mod:`harness.run.shards` wraps :class:`ShardWorker`
with ``ray.remote`` only when a run asks for ``--executor ray``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.cache import DrawCache, world_id
from harness.errors import HarnessError
from harness.factories import create_mimic
from harness.mimic import Mimic
from harness.modelspec import ModelSpec
from harness.prompts import PlannedDraw
from harness.protocols import BuildContext
from harness.run.budget import Price, Usage
from harness.run.calls import ModelCalls
from harness.run.config import CallLimits
from harness.run.draws import DrawBuilder
from harness.run.generate import Generator, PendingDraw
from harness.run.load import CachingWorld, Loaded, load_phase
from harness.store import RunStore
from harness.taskspec import TaskSpec
from harness.worlds.draws import close_world


def host_identity() -> str:
    """This machine: host name and boot id (two containers may share a host name, never a boot id)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one run shares: the task, the model, call limits and where to write."""

    task: TaskSpec
    model: ModelSpec
    model_id: str  # the driver's: the cache key and the rows' ``model`` must not depend on the worker
    limits: CallLimits
    price: Price | None
    run_id: str
    seed: int
    cache_dir: Path | None  # the run's draw cache (None: --no-cache)
    driver_host: str  # host_identity() of the driver


@dataclass
class ShardReport:
    """What a worker did with one shard: every row its store holds, and the calls it made."""

    shard_id: str
    status: str  # complete | failed
    rows: list[dict[str, Any]] = field(default_factory=list)
    recorded: int = 0  # rows this call appended (the rest were durable from an earlier attempt)
    cached: int = 0
    stats: dict[str, int] = field(default_factory=dict)  # CallStats of this call
    error: tuple[str, str, str | None] | None = None  # a failed shard's error: class name, message, hint
    cache: str = "off"  # shared | shard | off: which draw cache the worker used


def shard_cache_dir(job: ShardJob, shard_dir: Path) -> tuple[Path | None, str]:
    """The draw cache a worker uses for a shard, and which kind it is.

    On the driver's machine every worker shares the run's cache: SQLite in WAL mode is safe across
    processes of one machine. On another machine the worker caches under its shard directory: WAL
    needs shared memory between the processes, which a network filesystem does not give, so two
    machines must never write one cache file. The run log, merged by the driver, is the record
    either way; the shard's cache goes with its directory once merged.
    """
    if job.cache_dir is None:
        return None, "off"
    if host_identity() == job.driver_host:
        return job.cache_dir, "shared"
    return shard_dir / "cache", "shard"


class ShardWorker:
    """A Ray actor that records shards of one run (created by :func:`harness.run.shards.sharded_generate_phase`)."""

    def __init__(self, job: ShardJob):
        from harness.plugins import build_registries

        self.job = job
        self.registries = build_registries()
        self.loaded: Loaded = load_phase(job.task, self.registries, cache_dir=job.cache_dir)
        self.mimic: Mimic | None = None  # opened in the actor's event loop: HTTP clients bind to it

    def ready(self) -> str:
        """The worker's machine (the driver waits on this before giving a replacement worker a shard)."""
        return host_identity()

    async def run_shard(self, shard_id: str, shard_dir: str, draws: list[PlannedDraw]) -> ShardReport:
        """Record every draw of the shard not yet in its store; return all of the store's rows."""
        job, directory = self.job, Path(shard_dir)
        if self.mimic is None:
            ctx = BuildContext(registries=self.registries, cache_dir=job.cache_dir, concurrency=job.limits.concurrency)
            self.mimic = create_mimic(job.model, self.registries, ctx)
        store = RunStore.open(directory)
        cache_dir, cache_kind = shard_cache_dir(job, directory)
        cache = DrawCache.open(cache_dir) if cache_dir is not None else None
        try:
            builder = DrawBuilder(self._loaded_with(cache), run_id=job.run_id, model_id=job.model_id, seed=job.seed)
            done = store.done_keys()
            pending = [PendingDraw(d, r, r.cache_key(job.model_id)) for d in draws if d.key not in done
                       for r in [builder.request(d)]]
            calls = ModelCalls(self.mimic, job.model_id, job.limits, job.price, Usage())
            generator = Generator(calls=calls, store=store, build_rows=builder.rows, on_recorded=lambda items, rows: None,
                                  cache=cache)
            outcome = await generator.run(pending)
            error = outcome.error
            described = None
            if outcome.status != "complete":
                described = ((type(error).__name__, error.message, error.hint) if isinstance(error, HarnessError)
                             else ("BackendError", outcome.message or f"shard {shard_id} stopped: {outcome.status}", None))
            return ShardReport(shard_id, outcome.status, store.rows(), outcome.recorded, outcome.cached,
                               asdict(calls.stats), described, cache_kind)
        finally:
            store.close()
            if cache is not None:
                cache.close()

    def _loaded_with(self, cache: DrawCache | None) -> Loaded:
        """The task with its world's draws looked up in (and added to) this shard's cache."""
        world, task = self.loaded.world, self.job.task
        if world is None:
            return self.loaded
        inner = world.world if isinstance(world, CachingWorld) else world
        return replace(self.loaded, world=CachingWorld(inner, world_id(task.world.type, task.world.options), cache))

    async def close(self) -> None:
        """Release the model and the world (the driver calls this when the run's shards are done)."""
        if self.mimic is not None:
            await self.mimic.aclose()
            self.mimic = None
        await close_world(self.loaded.world)


def forwarded_environment() -> dict[str, str]:
    """The harness's own settings (``MIMIC_*``: plugins, cache, event loop) for the workers' processes.

    Secrets are not forwarded: a worker reads API keys from its node's environment.
    """
    return {k: v for k, v in os.environ.items() if k.startswith("MIMIC_") and "KEY" not in k and "TOKEN" not in k}
