"""Proportions: control success P_Q(Z' = z) and forcing-set mass m_K.

Both are weighted ratios of a 0/1 outcome over a domain of rows. The interval is Wilson's:
on n rows for plain i.i.d. rows (S = 1, equal weights), otherwise on the effective number
ESS / deff with the t_{C-1} quantile, where ESS is Kish's effective size of the weights and
deff the linearised cluster design effect (cluster-robust variance over the i.i.d. variance of
the same ratio).
Wilson (unlike a percentile bootstrap) stays honest near 0 and 1, where m_K often lives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from scipy.stats import beta as beta_dist

from harness.protocols import Estimate, EstimationInputs, Selection
from harness.stats.bootstrap import Clusters, ratio_deff
from harness.stats.common import REFERENCE, clusters_of, column, kind_of, latents, row, valid, values_of
from harness.stats.distances import code_values, ks_distance
from harness.stats.intervals import critical, wilson
from harness.values import matches

KS = (1, 2, 4, 8, 16)


def proportion(y: np.ndarray, domain: np.ndarray, clusters: Clusters) -> dict[str, Any]:
    """Weighted proportion of ``y`` over ``domain`` rows with its Wilson/design-effect interval."""
    p, deff = ratio_deff(y, domain, clusters)
    w = clusters.weights * domain
    n = int((domain > 0).sum())
    ess = float(w.sum() ** 2 / np.sum(w * w)) if n else 0.0
    plain = clusters.uniform and bool(np.all(np.bincount(clusters.labels, weights=domain) <= 1))
    contexts = int(np.count_nonzero(np.bincount(clusters.labels, weights=domain, minlength=clusters.n_clusters)))
    if plain:
        lower, upper = wilson(p, n)
        method, deff = "wilson", 1.0
    else:  # t_{C-1} quantile: the design effect is estimated from C contexts
        lower, upper = wilson(p, ess / deff if deff > 0 else ess, z=critical(contexts))
        method = "wilson-design-effect"
    return {"point": p, "lower": lower, "upper": upper, "n": n, "method": method, "deff": deff, "ess": ess,
            "contexts": contexts}


class ControlSuccess:
    """P_Q(Z' = z) for every selection with a target (``prompt:v``, ``filter:v``).

    Kept rows whose proxy is null count as failures (the control did not produce z). A filter
    keeps only matching rows, so its value is 1 by construction: reported, marked so.
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
            note = {"target": str(sel.target), "deff": res["deff"], "ess": res["ess"], "contexts": res["contexts"],
                    "raw_draws": sel.raw_draws}
            if ref_col is not None:
                note["reference_rate"] = float(matches(ref_col, sel.target).mean())
            if none is not None and col in none.kept.columns and none.kept.height:
                hit = matches(none.kept.get_column(col), sel.target).cast(pl.Float64).to_numpy()
                note["none_rate"] = float(hit @ none.kept.get_column("weight").to_numpy()) if "weight" in none.kept.columns else float(hit.mean())
            method, lower, upper = res["method"], res["lower"], res["upper"]
            if sel.condition.startswith("filter:") and res["point"] == 1.0:
                method, lower, upper = "by-construction", 1.0, 1.0
            out.append(row(self.name, sel.condition, proxy, res["point"], lower, upper, res["n"], method, **note))
        return out


def _world(frame: pl.DataFrame) -> np.ndarray | None:
    """(n, 1+K) boolean matrix of world draws; None when the frame has none (or lengths differ)."""
    if "world_draws" not in frame.columns or frame.height == 0:
        return None
    draws = frame.get_column("world_draws")
    if draws.null_count():
        draws = draws.drop_nulls()
    lengths = draws.list.len()
    if draws.len() == 0 or lengths.min() != lengths.max() or lengths.min() < 2:
        return None
    width = int(lengths.min())
    return np.asarray(draws.list.to_array(width).to_numpy(), dtype=bool)


def forcing_rows(world: np.ndarray, clusters: Clusters, k: int, delta: float) -> dict[str, Any]:
    """m_K over R = 1 rows (draw 0), with interval and the Beta(1,1) posterior P(rho >= 1 - delta)."""
    r1 = world[:, 0].astype(np.float64)
    all_k = world[:, 1 : k + 1].all(axis=1).astype(np.float64)
    res = proportion(all_k, r1, clusters)
    s = world[:, 1 : k + 1].sum(axis=1)
    post = beta_dist.sf(1 - delta, 2 + s, 1 + k - s)  # Beta(1,1) prior, 1 + s successes of 1 + k draws
    w = clusters.weights * r1
    res["p_rho_high"] = float(post @ w / w.sum()) if w.sum() > 0 else float("nan")
    return res


class ForcingMass:
    """m_K = P(K extra world draws all succeed | R = 1), K in 1, 2, 4, 8, 16 (capped by the draws).

    Rows for the reference (condition ``reference``, i.i.d.) and each selection. For ``reward@K``
    (K >= 2) with a ``reward@1`` selection present, an extra row (feature ``bound``) gives the
    essay's bound 2(1 - m_{K-1}) measured on reward@1 (reward@K keeps R = 1 items whose K - 1
    further draws succeed) beside the measured distance between the reward@1 and reward@K latent
    distributions: TV for categorical/binary latents, the KS distance (largest gap over events
    H <= t) for numeric ones; ``bound_exceeded`` flags a measured distance above the bound.
    Selections that select on the world (reward, best-of, tilt) reuse draws 0..K-1, so their own
    m_K is inflated by construction: flagged ``selection_uses_world_draws``.
    """

    name = "forcing_mass"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.ks = tuple(int(k) for k in options.get("ks", KS))
        self.delta = float(options.get("delta", 0.05))

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Rows per (condition, K), plus the bound rows."""
        out: list[Estimate] = []
        world = _world(inputs.reference)
        if world is not None:
            out += self._rows(REFERENCE, world, Clusters.build(None, None, world.shape[0]), {})
        by_condition = {s.condition: s for s in inputs.selections}
        for sel in inputs.selections:
            kept = sel.kept.filter(pl.col("world_draws").is_not_null()) if "world_draws" in sel.kept.columns else sel.kept
            world = _world(kept)
            if world is None:
                continue
            flags = {"selection_uses_world_draws": True} if sel.condition.startswith(("reward@", "best-of-", "tilt@")) else {}
            out += self._rows(sel.condition, world, clusters_of(kept), flags)
            k = _reward_k(sel.condition)
            suffix = sel.condition.split("/", 1)[1] if "/" in sel.condition else ""
            base = by_condition.get("reward@1" + (f"/{suffix}" if suffix else ""))
            if k and k >= 2 and base is not None and base.kept.height and _world(base.kept) is not None:
                out.append(self._bound_row(inputs, sel, base, k))
        return out

    def _rows(self, condition: str, world: np.ndarray, clusters: Clusters, flags: dict) -> list[Estimate]:
        rows, k_max = [], world.shape[1] - 1
        for k in self.ks:
            if k > k_max:
                continue
            res = forcing_rows(world, clusters, k, self.delta)
            if res["n"] == 0:
                continue
            rows.append(row(self.name, condition, f"K={k}", res["point"], res["lower"], res["upper"], res["n"], res["method"],
                            K=k, bound=2 * (1 - res["point"]), deff=res["deff"], ess=res["ess"], contexts=res["contexts"],
                            p_rho_high=res["p_rho_high"], delta=self.delta, **flags))
        return rows

    def _bound_row(self, inputs: EstimationInputs, sel: Selection, base: Selection, k: int) -> Estimate:
        world = _world(base.kept)
        res = forcing_rows(world, clusters_of(base.kept), min(k - 1, world.shape[1] - 1), self.delta)
        bound = 2 * (1 - res["point"])
        measured, kinds = {}, {}
        for h in latents(inputs):
            kind = kind_of(inputs, h)
            a, b = valid(base.kept, h), valid(sel.kept, h)
            if a.height == 0 or b.height == 0:
                continue
            grid, (ca, cb) = code_values(kind, values_of(a.get_column(f"feat_{h}"), kind), values_of(b.get_column(f"feat_{h}"), kind))
            pa = np.bincount(ca, weights=clusters_of(a).weights, minlength=grid.size)
            pb = np.bincount(cb, weights=clusters_of(b).weights, minlength=grid.size)
            pa, pb = pa / pa.sum(), pb / pb.sum()
            measured[h] = ks_distance(pa, pb) if kind == "numeric" else float(0.5 * np.abs(pa - pb).sum())
            kinds[h] = "ks" if kind == "numeric" else "tv"
        worst = max(measured.values()) if measured else float("nan")
        return row(self.name, sel.condition, "bound", bound, 2 * (1 - res["upper"]), 2 * (1 - res["lower"]), res["n"],
                   res["method"], m=res["point"], m_condition=base.condition, deff=res["deff"], contexts=res["contexts"], bound_k=min(k - 1, world.shape[1] - 1),
                   measured_distance=measured, distance_kind=kinds, max_measured=worst,
                   bound_exceeded=bool(measured) and worst > bound)


def _reward_k(condition: str) -> int | None:
    if not condition.startswith("reward@"):
        return None
    try:
        return int(condition.split("@", 1)[1].split("/", 1)[0])  # reward@4 or reward@4/prompt:5
    except ValueError:
        return None
