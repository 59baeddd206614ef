"""Latent values per condition, read straight from draws and reference tables, and the distances
(TV, IQR-scaled W1) between them, also as vectorised bootstrap replicates.

Feature kinds, values and distances are :mod:`harness.stats`' (one implementation for the estimators
and the leaderboard: :func:`harness.stats.common.feature_kind`, :func:`harness.stats.common.values_of`,
:func:`harness.stats.distances.distance`). Only the conditions that need no world or control plugin are rebuilt here:
``none`` (the ``none`` pool), ``prompt:<v>`` (items of the ``prompt:<v>`` pool whose proxy came out
as v) and ``filter:<v>`` (``none`` items whose proxy is v), as ``latent_shift`` compares them.
Their reference side is F(H) for ``none`` and F(H | Z = v) otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from harness.stats.common import values_of as stats_values_of
from harness.stats.distances import code_values
from harness.stats.distances import distance as stats_distance
from harness.values import matches, target_label

Kind = Literal["categorical", "numeric", "binary"]


@dataclass(frozen=True)
class TaskInfo:
    """What the leaderboard needs from a manifest's task spec."""

    proxy: str | None
    proxy_values: tuple[Any, ...]
    latents: tuple[str, ...]


def task_info(task: Mapping[str, Any] | None) -> TaskInfo:
    """Proxy feature, its targets and the latents, from a task spec (``TaskSpec.to_dict()``, a manifest's ``task``)."""
    task = task or {}
    proxy = task.get("proxy") or {}
    return TaskInfo(proxy.get("feature"), tuple(proxy.get("values") or ()), tuple(task.get("latents") or ()))


def rebuildable(condition: str) -> bool:
    """Whether :func:`condition_rows` can rebuild a condition from the draws alone."""
    return condition == "none" or condition.startswith(("prompt:", "filter:"))


def conditions_for(info: TaskInfo) -> list[str]:
    """The rebuildable conditions of a task, in display order."""
    labels = [target_label(v) for v in info.proxy_values]
    return ["none", *(f"prompt:{v}" for v in labels), *(f"filter:{v}" for v in labels)]


def condition_rows(draws: pl.DataFrame, info: TaskInfo, condition: str) -> pl.DataFrame | None:
    """The draws a condition keeps (None when it cannot be rebuilt from the draws)."""
    if "pool" not in draws.columns:
        return None
    if condition == "none":
        return draws.filter(pl.col("pool") == "none")
    kind, _, value = condition.partition(":")
    if kind not in ("prompt", "filter") or not info.proxy or f"feat_{info.proxy}" not in draws.columns:
        return None
    # As the latent_shift estimator does: Q(H' | Z' = v), the items of the pool whose proxy came out as v.
    pool = draws.filter(pl.col("pool") == (condition if kind == "prompt" else "none"))
    return pool.filter(matches(pool[f"feat_{info.proxy}"], value))


def reference_rows(reference: pl.DataFrame, info: TaskInfo, condition: str) -> pl.DataFrame | None:
    """F for ``none``, F restricted to Z = v for ``prompt:<v>`` and ``filter:<v>``."""
    if condition == "none":
        return reference
    kind, _, value = condition.partition(":")
    if kind in ("prompt", "filter") and info.proxy and f"feat_{info.proxy}" in reference.columns:
        return reference.filter(matches(reference[f"feat_{info.proxy}"], value))
    return None


def values_of(frame: pl.DataFrame, latent: str, kind: Kind) -> np.ndarray:
    """A latent's non-null values in ``frame``: text for categorical, float otherwise (:func:`harness.stats.common.values_of`)."""
    return stats_values_of(frame[f"feat_{latent}"].drop_nulls(), kind)


def weighted_distance(kind: Kind, ref: np.ndarray, w_ref: np.ndarray, mod: np.ndarray, w_mod: np.ndarray) -> np.ndarray:
    """D(ref, model) for each row of weights (shape B x n): TV for categorical/binary; for numeric,
    W1 over the IQR of that row's weighted reference sample (:mod:`harness.stats.distances`).

    A replicate whose weights on either side sum to 0 gives NaN (the condition is empty there).
    """
    w_ref, w_mod = np.atleast_2d(w_ref).astype(float), np.atleast_2d(w_mod).astype(float)
    grid, (rc, mc) = code_values(kind, ref, mod)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = _masses(w_ref, rc, grid.size)
        q = _masses(w_mod, mc, grid.size)
        return stats_distance(kind, grid, p - q, p)


def _masses(weights: np.ndarray, codes: np.ndarray, size: int) -> np.ndarray:
    """Probability mass on the grid of each weight row (B x size)."""
    onehot = sp.csr_matrix((np.ones(codes.size), (np.arange(codes.size), codes)), shape=(codes.size, size))
    totals = np.asarray(onehot.T @ weights.T).T
    return totals / totals.sum(axis=1, keepdims=True)


def distance(kind: Kind, ref: np.ndarray, mod: np.ndarray) -> float:
    """The plug-in distance between two samples (unit weights)."""
    if ref.size == 0 or mod.size == 0:
        return float("nan")
    return float(weighted_distance(kind, ref, np.ones(ref.size), mod, np.ones(mod.size))[0])


def distribution(kind: Kind, values: np.ndarray, bins: list[Any]) -> list[float]:
    """Share of values per category (categorical/binary) or per histogram bin (numeric: edges)."""
    if values.size == 0:
        return [0.0] * (len(bins) if kind != "numeric" else len(bins) - 1)
    if kind == "numeric":
        counts, _ = np.histogram(np.clip(values, bins[0], bins[-1]), bins=np.asarray(bins, dtype=float))
        return (counts / values.size).tolist()
    text = [target_label(v) for v in values.tolist()]
    return [text.count(str(b)) / len(text) for b in bins]


def bins_for(kind: Kind, ref: np.ndarray, others: list[np.ndarray], max_categories: int = 12) -> list[Any]:
    """Categories (most frequent first, reference order) or 10 equal-width edges over the reference's 1-99% range."""
    if kind == "numeric":
        pool = ref if ref.size else np.concatenate([o for o in others if o.size] or [np.zeros(1)])
        lo, hi = (float(x) for x in np.percentile(pool, [1, 99]))
        hi = hi if hi > lo else lo + 1.0
        return np.linspace(lo, hi, 11).tolist()
    counts: dict[str, int] = {}
    for arr in [ref, *others]:
        for v in arr.tolist():
            counts[target_label(v)] = counts.get(target_label(v), 0) + 1
    if kind == "binary":
        return sorted(counts, key=float)
    return sorted(counts, key=lambda c: (-counts[c], c))[:max_categories]
