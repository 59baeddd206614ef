"""The estimate phase: controls select, estimators estimate; the estimates table with its run columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from harness.durable import atomic_write_bytes, atomic_write_frame
from harness.estimation import build_estimators, run_estimators
from harness.featurize import compute_features
from harness.prompts import pool_prefix
from harness.protocols import EstimationInputs
from harness.records import FIELD_PROBS_FILE, RUN_COLUMNS, estimates_json
from harness.run.config import EstimationSettings
from harness.run.load import Loaded
from harness.run.session import PhaseClock, RunSession
from harness.selection import select_all
from harness.stats.est_forcing import forcing_set_table
from harness.values import matches, target_label

def estimate_phase(session: RunSession, loaded: Loaded, settings: EstimationSettings, draws: pl.DataFrame) -> pl.DataFrame:
    """Controls then estimators over the draws; writes and returns the estimates table with run columns.

    The manifest records which estimators ran and their bootstrap size (``estimation``), so that
    `mimic estimate` can recompute the same numbers from the run's tables.
    """
    estimates = estimate_draws(loaded, settings, draws, session.seed, session.run_dir, session.clock)
    run_values = {"run_id": session.run_id, "model": session.model_id, "model_name": session.display_name,
                  "task": loaded.task.name, "task_version": loaded.task.version, "reference_hash": loaded.reference.hash}
    estimates = with_run_columns(estimates, run_values)
    session.manifest.estimation = estimation_record(loaded, settings)
    with session.clock("write_estimates"):
        write_estimates(session.run_dir, estimates)
    return estimates


def estimate_draws(loaded: Loaded, settings: EstimationSettings, draws: pl.DataFrame, seed: int, run_dir: Path,
                   clock: PhaseClock) -> pl.DataFrame:
    """The estimators' rows (no run columns): controls select, then every estimator estimates."""
    with clock("select"):
        selections = select_all(loaded.controls, draws, loaded.task)
    with clock("estimate"):
        estimators = build_estimators(loaded.ctx.registries, loaded.ctx, settings.estimators)
        inputs = EstimationInputs(task=loaded.task, reference=loaded.reference_frame, draws=draws, selections=selections,
                                  seed=seed, n_boot=settings.n_boot, tables=run_tables(run_dir, loaded.world, draws),
                                  proxy_from_prompt=proxy_from_prompt(loaded))
        return run_estimators(estimators, inputs)


def with_run_columns(estimates: pl.DataFrame, run_values: dict[str, Any]) -> pl.DataFrame:
    """The estimates with the run columns (:data:`RUN_COLUMNS`, valued from ``run_values``) first."""
    columns = [pl.lit(v, dtype=pl.Int64 if k == "task_version" else pl.Utf8).alias(k) for k, v in run_values.items()]
    return estimates.with_columns(columns).select([*RUN_COLUMNS, *[c for c in estimates.columns if c not in RUN_COLUMNS]])


def estimation_record(loaded: Loaded, settings: EstimationSettings) -> dict[str, Any]:
    """The manifest's ``estimation``: the estimators that ran, in order, and the bootstrap resamples."""
    names = list(settings.estimators) if settings.estimators is not None else loaded.ctx.registries.estimators.names()
    return {"estimators": names, "n_boot": settings.n_boot}


def write_estimates(run_dir: Path, estimates: pl.DataFrame) -> list[Path]:
    """Write ``estimates.parquet`` and ``estimates.json`` atomically (each file is old or new, never torn)."""
    parquet, js = run_dir / "estimates.parquet", run_dir / "estimates.json"
    atomic_write_frame(parquet, estimates)
    atomic_write_bytes(js, estimates_json(estimates).encode("utf-8"))
    return [parquet, js]


def run_tables(run_dir: Path, world: Any = None, draws: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """Optional run tables estimators may read (``field_probs.parquet``, written by whoever makes it), and
    the exact forcing set of the drawn texts where the world knows it (bookworld)."""
    path = run_dir / FIELD_PROBS_FILE
    tables = {"field_probs": pl.read_parquet(path)} if path.exists() else {}
    return {**tables, **forcing_set_table(world, [] if draws is None else [draws])}


def proxy_from_prompt(loaded: Loaded) -> frozenset[str]:
    """The ``prompt:<v>`` pools whose prefix alone already makes the proxy extractor read v.

    There the item's proxy is the prompt's own header (the prefix is part of the item text), so
    control success measures the prompt, not the mimic: the estimator flags it ``by_construction``.
    """
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
