"""The load phase: the task and everything built from it (reference, features, world, controls, pools).

Also the world's draw cache wrapper: a world's draws are cached like a model's completions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from harness.cache import DrawCache, world_id, world_key
from harness.errors import UsageError
from harness.featurize import build_features
from harness.protocols import BuildContext, Control, Feature, World
from harness.reference import ReferenceTable, load_reference
from harness.registry import Registries
from harness.seeding import derive_seed
from harness.selection import build_controls, required_pools
from harness.tasks import load_task
from harness.taskspec import TaskSpec
from harness.worlds.draws import build_world, world_matrix


class CachingWorld:
    """A world whose draws are looked up in (and added to) the draw cache first."""

    def __init__(self, world: World, identity: str, cache: DrawCache | None):
        self.world = world
        self.identity = identity
        self.cache = cache
        self.calls = 0  # draws that reached the underlying world

    async def draw(self, texts: Sequence[str], seeds: Sequence[int]) -> list[bool]:
        """Draw R for each (text, seed), answering from the cache where possible."""
        if self.cache is None:
            self.calls += len(texts)
            return list(await self.world.draw(texts, seeds))
        keys = [world_key(self.identity, t, s) for t, s in zip(texts, seeds)]
        found = self.cache.get_world(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            self.calls += len(missing)
            drawn = await self.world.draw([texts[i] for i in missing], [seeds[i] for i in missing])
            self.cache.put_world(self.identity, [(keys[i], bool(v)) for i, v in zip(missing, drawn)])
            found.update({keys[i]: bool(v) for i, v in zip(missing, drawn)})
        return [found[k] for k in keys]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)  # rho() of an exact world, and anything else it offers


@dataclass
class Loaded:
    """A task with everything built from it: reference, features, world, controls, pools."""

    task: TaskSpec
    reference: ReferenceTable
    features: dict[str, Feature]
    world: World | None
    controls: dict[str, Control]
    pools: list[str]
    ctx: BuildContext
    reference_frame: pl.DataFrame | None = None  # the reference with world_draws, once drawn

    def components(self, registries: Registries, backend: str, estimators: Sequence[str] | None = None) -> list[dict[str, str]]:
        """Every plugin component this run uses, with the plugin and version that provide it."""
        wanted = [("mimic", registries.mimics, backend), ("reference_source", registries.reference_sources, self.task.reference.type)]
        wanted += [("feature", registries.features, f.type) for f in self.task.features]
        if self.task.world is not None:
            wanted.append(("world", registries.worlds, self.task.world.type))
        wanted += [("control", registries.controls, c.type) for c in self.task.controls]
        wanted += [("estimator", registries.estimators, name) for name in (estimators or registries.estimators.names())]
        out, seen = [], set()
        for kind, registry, name in wanted:
            if (kind, name) in seen or name not in registry:
                continue
            seen.add((kind, name))
            entry = registry.get(name)
            out.append({"kind": kind, "name": name, "plugin": entry.plugin, "version": entry.plugin_version})
        return out

    def world_seeds(self, seed: int, *key: Any) -> list[int]:
        """Seeds of the 1+K world draws of one item (a draw's key, or ``("reference", ref_id)``)."""
        k = self.task.world.k if self.task.world else 0
        return [derive_seed(seed, "world", self.task.name, *key, j) for j in range(1 + k)]

    async def reference_with_world(self, seed: int, cache: DrawCache | None) -> pl.DataFrame:
        """The reference table plus ``world_draws`` (1+K per row) when the task has a world."""
        frame = self.reference.frame
        if self.world is not None:
            self.world = self.world if isinstance(self.world, CachingWorld) else CachingWorld(
                self.world, world_id(self.task.world.type, self.task.world.options), cache)
            seeds = [self.world_seeds(seed, "reference", int(r)) for r in frame["ref_id"].to_list()]
            matrix = await world_matrix(self.world, frame["text"].to_list(), seeds)
            frame = frame.with_columns(pl.Series("world_draws", matrix, dtype=pl.List(pl.Boolean)))
        self.reference_frame = frame
        return frame


def load_phase(task: str | Path | TaskSpec, registries: Registries, *, estimators: Sequence[str] | None = None,
               cache_dir: Path | None = None, context_sizes: Sequence[int] | None = None) -> Loaded:
    """Load the task and reference; build features, world and controls; list the pools.

    ``estimators`` are checked against the registry here, before any model call: a typo must not
    cost a whole generation first. ``cache_dir`` is where factories may cache (None: no cache).
    """
    check_estimators(registries, estimators)
    task = task if isinstance(task, TaskSpec) else load_task(str(task), registries)
    if context_sizes is not None:  # the run's own synchronisation curve (manifest.task records it)
        task = dataclasses.replace(task, context_sizes=tuple(context_sizes))
    ctx = BuildContext(registries=registries, cache_dir=cache_dir)
    return build_loaded(task, load_reference(task, registries, ctx), ctx)


def check_estimators(registries: Registries, estimators: Sequence[str] | None) -> None:
    """A one-line usage error for an estimator name no plugin registers."""
    unknown = [name for name in (estimators or ()) if name not in registries.estimators]
    if unknown:
        known = ", ".join(registries.estimators.names()) or "none installed"
        raise UsageError(f"unknown estimator {unknown[0]!r} (known: {known})",
                         "pass --estimator with a known name (see `mimic plugins --components`)")


def build_loaded(task: TaskSpec, reference: ReferenceTable, ctx: BuildContext, reference_frame: pl.DataFrame | None = None) -> Loaded:
    """Features, world, controls and pools of a task whose reference table is at hand (loaded from its
    source, or a finished run's ``reference.parquet``: then ``reference_frame`` holds its world draws)."""
    registries = ctx.registries
    features = build_features(task, registries, ctx)
    world = build_world(task, registries, ctx)
    controls = build_controls(task, registries, ctx)
    return Loaded(task, reference, features, world, controls, list(required_pools(task, controls)), ctx, reference_frame)
