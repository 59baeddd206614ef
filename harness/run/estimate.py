"""The estimate phase: controls select, estimators estimate; the estimates table with its run columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from harness.estimation import build_estimators, run_estimators
from harness.featurize import compute_features
from harness.prompts import pool_prefix
from harness.protocols import EstimationInputs
from harness.records import FIELD_PROBS_FILE, RUN_COLUMNS, estimates_json
from harness.run.config import EstimationSettings
from harness.run.load import Loaded
from harness.run.session import RunSession
from harness.selection import select_all
from harness.stats.est_forcing import forcing_set_table
from harness.values import matches, target_label

def estimate_phase(session: RunSession, loaded: Loaded, settings: EstimationSettings, draws: pl.DataFrame) -> pl.DataFrame:
    """Controls then estimators over the draws; writes and returns the estimates table with run columns."""
    clock = session.clock
    with clock("select"):
        selections = select_all(loaded.controls, draws, loaded.task)
    with clock("estimate"):
        estimators = build_estimators(loaded.ctx.registries, loaded.ctx, settings.estimators)
        inputs = EstimationInputs(task=loaded.task, reference=loaded.reference_frame, draws=draws, selections=selections,
                                  seed=session.seed, n_boot=settings.n_boot, tables=run_tables(session.run_dir, loaded.world, draws),
                                  proxy_from_prompt=proxy_from_prompt(loaded))
        estimates = run_estimators(estimators, inputs)
    run_values = {"run_id": session.run_id, "model": session.model_id, "model_name": session.display_name,
                  "task": loaded.task.name, "task_version": loaded.task.version, "reference_hash": loaded.reference.hash}
    columns = [pl.lit(v, dtype=pl.Int64 if k == "task_version" else pl.Utf8).alias(k) for k, v in run_values.items()]
    estimates = estimates.with_columns(columns).select([*RUN_COLUMNS, *[c for c in estimates.columns if c not in RUN_COLUMNS]])
    with clock("write_estimates"):
        session.store.write_frame("estimates.parquet", estimates)
        session.store.write_text("estimates.json", estimates_json(estimates))
    return estimates


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
