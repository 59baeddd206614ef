"""What every estimator needs: feature kinds, comparison rows, clusters, seeds.

Rules (documented here once):
- **Feature kind** is read from the data: Utf8/Categorical/Boolean-as-text -> categorical;
  Float64 (or any numeric/Boolean dtype) whose non-null values, over reference and draws
  together, are all 0 or 1 -> binary; other numeric -> numeric.
- **Clusters** are contexts: rows sharing (pool, n_exemplars, context_id) (whichever of these
  columns exist); without ``context_id`` every row is its own cluster. Reference rows are i.i.d.
- **Comparison reference** for a selection: rows with Z = target when the selection has a target
  (or selects from a ``prompt:<v>`` pool, e.g. ``reward@4/prompt:5``);
  rows whose world draw 0 succeeded (R = 1) for ``reward@``/``best-of-``/``tilt@`` conditions
  (F(H | R = 1)); all rows for ``none``. The reference side is labelled condition ``reference``.
- **Seeds**: each (estimator, condition, feature) draws from its own generator seeded by
  ``derive_seed(seed, estimator, condition, feature)``, so adding an estimator or a condition
  never changes another's numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from harness.protocols import Estimate, EstimationInputs, Selection
from harness.seeding import derive_seed
from harness.stats.bootstrap import Clusters
from harness.values import matches, target_label

CLUSTER_COLUMNS = ("pool", "n_exemplars", "context_id")
REWARD_PREFIXES = ("reward@", "best-of-", "tilt@")
REFERENCE = "reference"


def rng_for(inputs: EstimationInputs, *parts: object) -> np.random.Generator:
    """The generator for one estimate row."""
    return np.random.default_rng(derive_seed(inputs.seed, "estimate", *parts))


def feature_kind(*columns: pl.Series) -> str:
    """``categorical``, ``binary`` or ``numeric`` for a feature, from its columns' dtypes and values."""
    cols = [c for c in columns if c is not None]
    if not cols or any(not (c.dtype.is_numeric() or c.dtype == pl.Boolean) for c in cols):
        return "categorical"
    values = pl.concat([c.cast(pl.Float64) for c in cols]).drop_nulls().drop_nans()
    if values.len() and values.is_in([0.0, 1.0]).all():
        return "binary"
    return "numeric"


def column(frame: pl.DataFrame, name: str) -> pl.Series | None:
    """A feature column ``feat_<name>`` when present."""
    col = f"feat_{name}"
    return frame.get_column(col) if col in frame.columns else None


def values_of(series: pl.Series, kind: str) -> np.ndarray:
    """Feature values as numpy: text for categorical, float for numeric/binary (nulls must be dropped first)."""
    if kind == "categorical":
        return series.cast(pl.Utf8).to_numpy().astype(str)
    return series.cast(pl.Float64).to_numpy().astype(np.float64)


def valid(frame: pl.DataFrame, *names: str) -> pl.DataFrame:
    """Rows where all named feature columns are present and not null/NaN."""
    for name in names:
        col = pl.col(f"feat_{name}")
        dtype = frame.schema[f"feat_{name}"]
        frame = frame.filter(col.is_not_null() & (~col.is_nan() if dtype.is_float() else pl.lit(True)))
    return frame


def clusters_of(frame: pl.DataFrame, iid: bool = False) -> Clusters:
    """Clusters (contexts) and weights of a table's rows."""
    n = frame.height
    weights = frame.get_column("weight").cast(pl.Float64).to_numpy() if "weight" in frame.columns else None
    cols = [c for c in CLUSTER_COLUMNS if c in frame.columns]
    if iid or "context_id" not in cols or n == 0:
        return Clusters.build(None, weights, n)
    keys = frame.select(pl.concat_str([pl.col(c).cast(pl.Utf8) for c in cols], separator="\x1f")).to_series()
    return Clusters.build(keys.to_numpy().astype(str), weights, n)


def is_reward_like(condition: str) -> bool:
    """True for conditions that select on the world's reward (reward@K, best-of-n, tilt@beta)."""
    return condition.startswith(REWARD_PREFIXES)


def success0(frame: pl.DataFrame) -> pl.Series:
    """World draw 0 (R) per row, False where there are no world draws."""
    return frame.get_column("world_draws").list.get(0, null_on_oob=True).fill_null(False)


def selection_target(inputs: EstimationInputs, sel: Selection):
    """The proxy value a selection conditions on: its target, else the value of its ``prompt:<v>`` pool."""
    if sel.target is not None:
        return sel.target
    if sel.pool.startswith("prompt:"):
        label = sel.pool.split(":", 1)[1]
        return next((v for v in inputs.task.proxy.values if target_label(v) == label), label)
    return None


def reference_for(inputs: EstimationInputs, sel: Selection) -> tuple[pl.DataFrame, str]:
    """The reference rows a selection is compared with, and a label for that comparison."""
    ref, parts = inputs.reference, []
    proxy = f"feat_{inputs.task.proxy.feature}"
    target = selection_target(inputs, sel)
    if target is not None and proxy in ref.columns:
        ref = ref.filter(matches(ref.get_column(proxy), target))
        parts.append(f"Z={target_label(target)}")
    if is_reward_like(sel.condition):
        if "world_draws" in ref.columns:
            ref = ref.filter(success0(ref))
            parts.append("R=1")
        else:
            parts.append("no reference world draws: F(H) used")
    return ref, "F(H | " + ", ".join(parts) + ")" if parts else "F(H)"


def matched(inputs: EstimationInputs, sel: Selection) -> pl.DataFrame:
    """Kept rows with Z' = target (the selection's, or its prompt pool's; all kept rows without one)."""
    proxy = f"feat_{inputs.task.proxy.feature}"
    target = selection_target(inputs, sel)
    if target is None or proxy not in sel.kept.columns:
        return sel.kept
    return sel.kept.filter(matches(sel.kept.get_column(proxy), target))


def latents(inputs: EstimationInputs) -> list[str]:
    """Latent feature names present in both the reference and the draws."""
    return [h for h in inputs.task.latents if h != inputs.task.proxy.feature
            and f"feat_{h}" in inputs.reference.columns and f"feat_{h}" in inputs.draws.columns]


def kind_of(inputs: EstimationInputs, name: str) -> str:
    """Kind of a feature, read from the reference and draws columns together."""
    return feature_kind(column(inputs.reference, name), column(inputs.draws, name))


def row(estimator: str, condition: str, feature: str, point: float, interval: tuple[float, float], n: int,
        method: str, **note: Any) -> Estimate:
    """An Estimate with ``interval`` = (lower, upper) and JSON-friendly note values (numpy scalars become floats,
    NaN stays out)."""
    lower, upper = interval
    clean = {k: _plain(v) for k, v in note.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
    return Estimate(estimator, condition, feature, float(point), float(lower), float(upper), int(n), method, clean)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
