"""The runner's phases other than generation: load, plan, draw rows, select and estimate.

Each phase calls the module that owns the step (``harness.tasks``, ``reference``, ``prompts``,
``featurize``, ``worlddraws``, ``selection``, ``estimation``) through its contract signature.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from harness.cache import DrawCache, default_cache_dir, world_id, world_key
from harness.errors import UsageError
from harness.protocols import BuildContext, Control, EstimationInputs, Feature, World
from harness.registry import Registries
from harness.run_config import Price, RunConfig
from harness.seeding import derive_seed
from harness.taskspec import TaskSpec

BASE_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "task": pl.Utf8, "task_version": pl.Int64, "pool": pl.Utf8, "context_id": pl.Int64,
    "sample_index": pl.Int64, "seed": pl.Int64, "model": pl.Utf8, "n_exemplars": pl.Int64,
    "exemplar_ids": pl.List(pl.Int64), "prompt_hash": pl.Utf8, "text": pl.Utf8, "completion": pl.Utf8,
    "finish_reason": pl.Utf8, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "cached": pl.Boolean,
}
SORT_COLUMNS = ["pool", "n_exemplars", "context_id", "sample_index"]
RUN_COLUMNS = ("run_id", "model", "model_name", "task", "task_version", "reference_hash")


class PhaseClock:
    """Wall and CPU seconds per phase: ``with clock("generate"): ...`` adds to both."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.monotonic(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.monotonic() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


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
    reference: Any  # harness.reference.ReferenceTable (frame, hash)
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
        from harness.worlddraws import world_matrix

        frame = self.reference.frame
        if self.world is not None:
            self.world = self.world if isinstance(self.world, CachingWorld) else CachingWorld(
                self.world, world_id(self.task.world.type, self.task.world.options), cache)
            seeds = [self.world_seeds(seed, "reference", int(r)) for r in frame["ref_id"].to_list()]
            matrix = await world_matrix(self.world, frame["text"].to_list(), seeds)
            frame = frame.with_columns(pl.Series("world_draws", matrix, dtype=pl.List(pl.Boolean)))
        self.reference_frame = frame
        return frame


def load_phase(config: RunConfig, registries: Registries) -> Loaded:
    """Load the task and reference; build features, world and controls; list the pools."""
    from harness.featurize import build_features
    from harness.reference import load_reference
    from harness.selection import build_controls, required_pools
    from harness.tasks import load_task
    from harness.worlddraws import build_world

    unknown = [name for name in (config.estimators or ()) if name not in registries.estimators]
    if unknown:  # before any model call: a typo here must not cost a whole generation first
        known = ", ".join(registries.estimators.names()) or "none installed"
        raise UsageError(f"unknown estimator {unknown[0]!r} (known: {known})",
                         "pass --estimator with a known name (see `mimic plugins --components`)")
    task = config.task if isinstance(config.task, TaskSpec) else load_task(str(config.task), registries)
    cache_dir = (config.cache_dir or default_cache_dir(config.out_dir)) if config.use_cache else None
    ctx = BuildContext(registries=registries, cache_dir=cache_dir)
    reference = load_reference(task, registries, ctx)
    features = build_features(task, registries, ctx)
    world = build_world(task, registries, ctx)
    controls = build_controls(task, registries, ctx)
    return Loaded(task, reference, features, world, controls, list(required_pools(task, controls)), ctx)


def plan_phase(config: RunConfig, loaded: Loaded, seed: int) -> list[Any]:
    """Plan every draw: pools x contexts x samples; ``-n`` caps the draws per pool (and context size)."""
    from harness.prompts import plan_draws

    plan = loaded.task.plan
    contexts, per_context = config.contexts, config.samples_per_context
    if config.samples is not None:
        n = config.samples
        if contexts is None and per_context is None:
            per_context = min(plan.samples_per_context, n)
            contexts = math.ceil(n / per_context)
        elif per_context is None:
            per_context = math.ceil(n / contexts)
        elif contexts is None:
            contexts = math.ceil(n / per_context)
        elif contexts * per_context < n:
            raise UsageError(f"-n {n} is more than --contexts {contexts} x --samples-per-context {per_context}",
                             "drop one of them, or raise it")
    task = loaded.task
    planned = plan_draws(task, loaded.reference, seed=seed, pools=loaded.pools, n_exemplars=config.n_exemplars,
                         contexts=contexts, samples_per_context=per_context)
    main_k = task.plan.exemplars if config.n_exemplars is None else config.n_exemplars
    for k in task.context_sizes:  # the synchronisation curve: `none` draws at each context size
        if k != main_k or "none" not in loaded.pools:
            planned += plan_draws(task, loaded.reference, seed=seed, pools=["none"], n_exemplars=k,
                                  contexts=contexts, samples_per_context=per_context)
    if config.samples is not None:  # keep the first n draws (lowest contexts) of each pool and context size
        ordered = sorted(planned, key=lambda d: (d.pool, d.n_exemplars, d.context_id, d.sample_index))
        kept, seen = set(), {}
        for d in ordered:
            group = (d.pool, d.n_exemplars)
            if seen.get(group, 0) < config.samples:
                seen[group] = seen.get(group, 0) + 1
                kept.add(d.key)
        planned = [d for d in planned if d.key in kept]
    keys = [d.key for d in planned]
    if len(set(keys)) != len(keys):
        raise UsageError("the plan has two draws with the same (task, pool, n_exemplars, context, sample) key",
                         "report this: harness.prompts.plan_draws must number contexts uniquely per pool")
    return planned


class DrawBuilder:
    """Requests for planned draws, and log rows for finished ones (item, features, world draws)."""

    def __init__(self, loaded: Loaded, *, run_id: str, model_id: str, seed: int):
        self.loaded = loaded
        self.run_id, self.model_id, self.seed = run_id, model_id, seed
        self.schema = dict(BASE_SCHEMA)
        from harness.featurize import KIND_DTYPES

        for name, feature in loaded.features.items():
            self.schema[f"feat_{name}"] = KIND_DTYPES[feature.kind]
        self.schema["world_draws"] = pl.List(pl.Boolean)

    def request(self, draw: Any):
        """The generation request of a planned draw."""
        from harness.prompts import request_for

        return request_for(draw, self.loaded.task.generation, self.loaded.task.render.stop)

    def items_and_features(self, items: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
        """Item texts (prefix + completion cut at a stop) and their feature values."""
        from harness.featurize import compute_features
        from harness.prompts import make_item

        stop = self.loaded.task.render.stop
        texts = [make_item(f.pending.draw.prefix, f.completion.text, stop) for f in items]
        if not self.loaded.features:
            return texts, [{}] * len(items)
        return texts, compute_features(self.loaded.features, pl.Series("text", texts, dtype=pl.Utf8)).to_dicts()

    async def rows(self, items: list[Any]) -> list[dict[str, Any]]:
        """Draw rows for finished draws (``FinishedDraw``), in the same order."""
        from harness.worlddraws import world_matrix

        task = self.loaded.task
        # Off the event loop: feature extraction is mostly polars, which releases the GIL, so
        # requests keep flowing meanwhile. Only this writer ever calls the extractors.
        texts, feature_rows = await asyncio.to_thread(self.items_and_features, items)
        world: list[Any] = [None] * len(items)
        if self.loaded.world is not None:
            seeds = [self.loaded.world_seeds(self.seed, d.pool, d.context_id, d.sample_index) for d in (f.pending.draw for f in items)]
            world = await world_matrix(self.loaded.world, texts, seeds)
        rows = []
        for f, text, feats, draws in zip(items, texts, feature_rows, world):
            d, c = f.pending.draw, f.completion
            rows.append({
                "run_id": self.run_id, "task": task.name, "task_version": task.version, "pool": d.pool,
                "context_id": d.context_id, "sample_index": d.sample_index, "seed": d.seed, "model": self.model_id,
                "n_exemplars": d.n_exemplars, "exemplar_ids": list(d.exemplar_ids), "prompt_hash": d.prompt_hash,
                "text": text, "completion": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens, "cached": f.cached, **feats,
                "world_draws": [bool(x) for x in draws] if draws is not None else None,
            })
        return rows

    def frame(self, rows: list[dict[str, Any]]) -> pl.DataFrame:
        """The draws table in plan order (log order depends on which call finished first)."""
        from harness.store import rows_to_frame

        return rows_to_frame(rows, self.schema).sort(SORT_COLUMNS)


def pool_usage(rows: list[dict[str, Any]], price: Price | None) -> dict[str, Any]:
    """Tokens (and cost, with a price) spent on model calls: draws answered by the cache cost nothing."""
    from harness.run_config import Usage

    total, pools = Usage(), {}
    for row in rows:
        if row.get("cached"):
            continue
        usage = pools.setdefault(row["pool"], Usage())
        for u in (total, usage):
            u.add(int(row.get("prompt_tokens") or 0), int(row.get("completion_tokens") or 0), price)
    return {**total.to_dict(), "pools": {p: u.to_dict() for p, u in sorted(pools.items())}}


def estimate_phase(config: RunConfig, loaded: Loaded, draws: pl.DataFrame, manifest: dict[str, Any], *, seed: int,
                   clock: PhaseClock, tables: dict[str, pl.DataFrame] | None = None) -> pl.DataFrame:
    """Controls then estimators over the draws; returns the estimates table with run columns."""
    from harness.estimation import build_estimators, run_estimators
    from harness.selection import select_all

    with clock("select"):
        selections = select_all(loaded.controls, draws, loaded.task)
    with clock("estimate"):
        estimators = build_estimators(loaded.ctx.registries, loaded.ctx, config.estimators)
        inputs = EstimationInputs(task=loaded.task, reference=loaded.reference_frame, draws=draws, selections=selections,
                                  seed=seed, n_boot=config.n_boot, tables=dict(tables or {}),
                                  proxy_from_prompt=proxy_from_prompt(loaded))
        estimates = run_estimators(estimators, inputs)
    model = manifest["model"]
    run_values = {"run_id": manifest["run_id"], "model": model["model_id"], "model_name": model["display_name"],
                  "task": loaded.task.name, "task_version": loaded.task.version, "reference_hash": loaded.reference.hash}
    columns = [pl.lit(v, dtype=pl.Int64 if k == "task_version" else pl.Utf8).alias(k) for k, v in run_values.items()]
    return estimates.with_columns(columns).select([*RUN_COLUMNS, *[c for c in estimates.columns if c not in RUN_COLUMNS]])


def estimates_json(estimates: pl.DataFrame) -> str:
    """``estimates.json``: the rows as a JSON list; ``note`` decoded; NaN/inf become null (strict JSON)."""
    rows = estimates.to_dicts()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
        if isinstance(row.get("note"), str):
            try:
                row["note"] = json.loads(row["note"])
            except ValueError:
                pass
    return json.dumps(rows, indent=2, ensure_ascii=False, default=str) + "\n"


def proxy_from_prompt(loaded: Loaded) -> frozenset[str]:
    """The ``prompt:<v>`` pools whose prefix alone already makes the proxy extractor read v.

    There the item's proxy is the prompt's own header (the prefix is part of the item text), so
    control success measures the prompt, not the mimic: the estimator flags it ``by_construction``.
    """
    from harness.featurize import compute_features
    from harness.prompts import pool_prefix
    from harness.values import matches, target_label

    proxy = loaded.task.proxy.feature
    feature = loaded.features.get(proxy)
    if feature is None:
        return frozenset()
    out = set()
    for pool in loaded.pools:
        if not pool.startswith("prompt:"):
            continue
        target = next((v for v in loaded.task.proxy.values if f"prompt:{target_label(v)}" == pool), None)
        values = compute_features({proxy: feature}, pl.Series([pool_prefix(loaded.task, pool)]))[f"feat_{proxy}"]
        if target is not None and bool(matches(values, target).fill_null(False)[0]):
            out.add(pool)
    return frozenset(out)
