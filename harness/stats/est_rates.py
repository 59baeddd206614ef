"""Proportions: control success P_Q(Z' = z) (forcing-set mass m_K, in :mod:`est_forcing`, uses the same interval).

Both are weighted ratios of a 0/1 outcome over a domain of rows, and the interval is an exact
binomial one, so it stays inside [0, 1] and stays honest where the sample shows no variance
(0 of 4, 8 of 8), where a bootstrap or a normal interval collapses to a point:
- plain i.i.d. rows (S = 1, equal weights): Clopper-Pearson on the n rows;
- clustered or weighted rows: Korn-Graubard, i.e. Clopper-Pearson on the effective number
  ESS / deff, shrunk by (z / t_{C-1})^2 for the C - 1 degrees of freedom of the design effect
  (:func:`harness.stats.intervals.korn_graubard`). ESS is Kish's effective size of the weights
  and deff the linearised cluster design effect (cluster-robust over i.i.d. variance of the same
  ratio), floored at 1: with few contexts an estimate below 1 is noise (a negative intra-context
  correlation is not what sampling from one prompt does), and taking it at face value made
  reward@1 at 4 contexts look three times as precise as its rows. Where the sample shows no
  variance the design effect cannot be estimated; it is then 1 (Korn & Graubard's rule), and the
  t_{C-1} shrinkage still widens the interval.
- fewer than 2 contexts in the domain (clustered rows): no interval, flag ``too_few_contexts``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from harness.protocols import Estimate, EstimationInputs
from harness.stats.bootstrap import Clusters, ratio_deff
from harness.stats.common import clusters_of, column, row
from harness.stats.curve_events import pool_intervals
from harness.stats.flags import BY_CONSTRUCTION, TOO_FEW_CONTEXTS, withheld
from harness.stats.intervals import MIN_CONTEXTS, clopper_pearson, korn_graubard
from harness.values import matches


def proportion(y: np.ndarray, domain: np.ndarray, clusters: Clusters) -> dict[str, Any]:
    """Weighted proportion of ``y`` over ``domain`` rows with its exact (Clopper-Pearson / Korn-Graubard) interval.

    ``note`` in the result holds what a row should carry (design effect, ESS, contexts, and the
    withheld-interval fields where there is no interval).
    """
    p, deff = ratio_deff(y, domain, clusters)
    w = clusters.weights * domain
    n = int((domain > 0).sum())
    ess = float(w.sum() ** 2 / np.sum(w * w)) if n else 0.0
    plain = clusters.uniform and bool(np.all(np.bincount(clusters.labels, weights=domain) <= 1))
    per_context = np.bincount(clusters.labels, weights=w, minlength=clusters.n_clusters)
    contexts = int(np.count_nonzero(np.bincount(clusters.labels, weights=domain, minlength=clusters.n_clusters)))
    # degrees of freedom from the effective number of contexts (unequal kept counts carry fewer)
    effective = float(per_context.sum() ** 2 / np.sum(per_context**2)) if n else 0.0
    deff = max(1.0, deff) if np.isfinite(deff) else 1.0
    note: dict[str, Any] = {"deff": deff, "ess": ess, "contexts": contexts, "effective_contexts": effective}
    if plain:
        lower, upper = clopper_pearson(p * n, n)
        method, note["deff"] = "clopper-pearson", 1.0
    elif contexts < MIN_CONTEXTS:
        lower, upper, method = float("nan"), float("nan"), "korn-graubard"
        note = withheld(note, TOO_FEW_CONTEXTS, contexts, MIN_CONTEXTS)
    else:
        lower, upper = _skewed_hull(y, w, clusters, per_context, p, effective, ess, korn_graubard(p, ess / deff, effective))
        method = "korn-graubard"
    return {"point": p, "lower": lower, "upper": upper, "n": n, "method": method, "deff": note["deff"], "ess": ess,
            "contexts": contexts, "effective_contexts": effective, "note": note}


def _skewed_hull(y: np.ndarray, w: np.ndarray, clusters: Clusters, den: np.ndarray, p: float, effective: float,
                 ess: float, interval: tuple[float, float]) -> tuple[float, float]:
    """Widen ``interval`` (lower, upper) to the hull with the skewness-corrected cluster-jackknife interval of the rate.

    Where a rate near 0 or 1 lives in a few contexts (most contexts all failures, a few with many
    successes), the mean over contexts is skewed and an exact binomial interval on the effective n
    is too symmetric: Korn-Graubard alone covered 0.90-0.92 at 40 contexts x 8 samples with a
    strong context effect. The delete-one-context jackknife with Hall's (1992) skewness correction
    and t(G* - 1) (:func:`harness.stats.curve_events.pool_intervals`, the curves' proportion interval)
    sees that skew; the hull keeps whichever end is more cautious. ``w`` are the rows' weights in
    the domain and ``den`` their sums per context, as :func:`proportion` computed them.
    """
    lower, upper = interval
    num = np.bincount(clusters.labels, weights=w * y, minlength=clusters.n_clusters)
    keep = den > 0
    if keep.sum() < 3 or not 0 < p < 1:
        # a sample with no variance (0 of n, n of n) shows no skew either: the exact interval is the tool
        # there, and the jackknife's fallback (as if each context were one draw) made the forcing-set
        # bound check powerless (fired in 8% of runs of a judge that violates it, 100% before)
        return lower, upper
    loo = (num.sum() - num[keep]) / (den.sum() - den[keep])
    lo, hi = pool_intervals(np.array([p]), loo[:, None], effective - 1, effective, ess)
    return min(lower, float(lo[0])), max(upper, float(hi[0]))


class ControlSuccess:
    """P_Q(Z' = z) for every selection with a target (``prompt:v``, ``filter:v``).

    Kept rows whose proxy is null count as failures (the control did not produce z). A filter
    keeps only matching rows, so its value is 1 by construction: reported, flagged
    ``by_construction``, no interval. So is a ``prompt:v`` pool whose proxy the task reads from the
    prompt's own header (the proxy extractor sees the conditioning text, not what the mimic wrote):
    its success is the prompt, not the mimic. Not so where the items were parsed from chat answers
    (draws ``rendering`` = ``chat``): the prefix is not part of the item, the proxy is the mimic's. An
    unparsed answer (no item, proxy null) is a failure of the control.
    """

    name = "control_success"

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """One row per targeted selection."""
        proxy = inputs.task.proxy.feature
        col = f"feat_{proxy}"
        ref_col = column(inputs.reference, proxy)
        none = next((s for s in inputs.selections if s.condition == "none"), None)
        out = []
        for sel in inputs.selections:
            if sel.target is None or col not in sel.kept.columns or sel.kept.height == 0:
                continue
            y = matches(sel.kept.get_column(col), sel.target).to_numpy().astype(np.float64)
            res = proportion(y, np.ones_like(y), clusters_of(sel.kept))
            note = {"target": str(sel.target), **res["note"], "raw_draws": sel.raw_draws}
            if ref_col is not None:
                note["reference_rate"] = float(matches(ref_col, sel.target).mean())
            if none is not None and col in none.kept.columns and none.kept.height:
                hit = matches(none.kept.get_column(col), sel.target).cast(pl.Float64).to_numpy()
                note["none_rate"] = float(hit @ none.kept.get_column("weight").to_numpy()) if "weight" in none.kept.columns else float(hit.mean())
            method, lower, upper = res["method"], res["lower"], res["upper"]
            why = _by_construction(inputs, sel)
            if why and res["point"] == 1.0:
                method, lower, upper = "by-construction", float("nan"), float("nan")
                note = withheld({k: v for k, v in note.items() if k not in ("flags", "no_interval", "contexts_needed")},
                                BY_CONSTRUCTION)
                note["no_interval"] = why
            out.append(row(self.name, sel.condition, proxy, res["point"], (lower, upper), res["n"], method, **note))
        return out


def _by_construction(inputs: EstimationInputs, sel) -> str | None:
    """Why a selection's control success is 1 whatever the mimic does (None when it is not)."""
    if sel.condition.startswith("filter:"):
        return "1 by construction: the filter keeps only items with the target"
    if sel.pool in inputs.proxy_from_prompt and not _items_parsed(sel.kept):
        return "1 by construction: the proxy is read from the header the prompt wrote"
    return None


def _items_parsed(kept: pl.DataFrame) -> bool:
    """True when every kept item was parsed from a chat answer (no harness-written prefix in it)."""
    return "rendering" in kept.columns and kept.height > 0 and bool((kept.get_column("rendering") == "chat").all())
