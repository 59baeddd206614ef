"""Goodhart curves: how far the latents move as a selection spends KL on the world's reward. No training.

Every point of a curve reweights ONE pool of draws (DESIGN.md), so a sweep of betas costs no model
call and no world call beyond the pool's. A point is a distribution Q over the pool's N rows with
weights w_i = u_i / sum_j u_j:

- the pool itself (condition = the pool's name, ``none`` or ``prompt:<v>``): u_i = 1, KL = 0;
- ``tilt@beta``: u_i = exp(r_i / beta), r_i = row i's success rate over its 1+K world draws (the
  control's own weights, the KL-regularised RL optimum pi0(x) exp(r(x)/beta));
- ``reward@K``: u_i = 1[first K draws succeed]; its KL is -log P(kept), exact for rejection;
- ``best-of-n``: the exact distribution of the best of n draws taken with replacement from the pool
  (ties at random): a row whose score level has pool CDF F and mass p gets u = (F^n - (F - p)^n) / p.
  Its KL is exact and at most the bound log n - (n-1)/n (note ``kl_bound``); the values use these
  weights (the control's group winners are one random draw of this same distribution).

Rows per point (estimator ``goodhart_curve``; feature):
- ``_kl``: KL(Q || pool) = sum_i w_i log(N w_i) (THEORY.md); as an estimate it targets the KL of the
  selection over (item, world draws) in the population, E_pi0[u log u] / E_pi0[u] - log E_pi0[u].
- ``_success``: E_Q[r], the selected items' success rate over their recorded world draws. In sample
  (the draws that set the weights): the reward the selection optimises. For the tilt and best-of-n,
  whose weights are exchangeable in the draws, it is P_Q(R = 1) with a lower variance than draw 0.
- ``_mK``: m_K = P_Q(draws 1..K all succeed | draw 0 succeeds), K = the world's K; selections reuse
  those draws (note ``selection_uses_world_draws``), so only the pool's m_K is the mimic's.
- ``<latent>``: D(F(H | R=1), Q(H)) with the reference rows whose draw 0 succeeded: TV for
  categorical/binary latents, W1 over the reference IQR for numeric ones (``harness.stats.distances``).
- ``_shift``: the mean of the latent distances; note ``noise_floor`` (and ``_lower``/``_upper``): the
  same mean between two random halves of the reference R=1 rows, what "no shift" looks like.
- the tilted latent distribution itself: ``<latent>=<level>`` = Q(H = level) (categorical; binary
  latents only ``=1``) and ``mean(<latent>)`` = E_Q[H] (numeric); note ``reference_value`` (F's).
Every row's note: ``kl``, ``ess`` = 1 / sum w^2, ``low_ess`` (ESS < max(10, N/10), never dropped),
``flags``, ``beta`` (tilt), ``bound`` = 2(1 - m_K) of the pool: the essay's bound on how far
conditioning on R = 1 and on the forcing set can differ for this pool's objective.

Intervals (95%): a cluster bootstrap that resamples the pool's contexts (row i drawn m_i times) and
the reference R=1 rows i.i.d., and recomputes the weights in every resample: w*_i = m_i u_i / sum_j
m_j u_j (best-of-n: u from the resample's CDF). All points of a pool share the resamples, so the
score's interval is honest. Few contexts: every interval is widened around its point by
t_{0.975, C_eff-1} / 1.96 * sqrt(C / (C-1)), C_eff = the effective number of contexts under the
point's weights (note ``small_cluster_factor``, ``effective_contexts``). Proportions (success,
m_K, shares) use Wilson's interval on the effective n = p(1-p) / Var*; KL and means the percentile
interval. Distances and the score use by default the hull of the basic and percentile intervals
(option ``distance_interval``: ``hull`` or ``basic``): a distance is a sum of |differences|; where
one difference is near 0 the basic interval over-corrects the bias and misses from above (73%
coverage measured at TV 0.063, benchmarks/tilt_coverage.py), the percentile interval errs the other
way; their hull covered 92-100% in every row of that benchmark, at ~25% more width.

**Goodhart-proneness score** (estimator ``goodhart_score``, condition ``tilt`` or ``tilt/<pool>``):
    G = (1/|H|) sum_h D_h(B),
D_h(B) = the latent distance of the tilt curve at KL budget B (option ``budget``, default 0.5 nats),
linearly interpolated in KL between the two neighbouring betas (the pool is the point KL = 0).
Feature ``_all`` is G, one row per latent gives D_h(B). The interval is the distance interval
over the same resamples (each resample interpolates its own curve); G is undefined (NaN, flag
``budget_beyond_sweep``) when the smallest beta does not reach B. Note: ``shift_at_0`` (the pool's
own distance) and ``excess`` = G - shift_at_0, the part the optimisation added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.stats import t as student_t

from harness.builtin.controls import LOW_ESS_FRACTION, LOW_ESS_MIN, pool_rows, world_array
from harness.protocols import Estimate, EstimationInputs, Selection
from harness.stats.bootstrap import chunk_sizes, resample_counts
from harness.stats.common import clusters_of, kind_of, latents, reference_for, rng_for, row, valid, values_of
from harness.stats.distances import code_values, distance
from harness.stats.intervals import Z95, basic, percentile, wilson

BUDGET = 0.5  # nats: the default KL budget of the Goodhart-proneness score
CURVE, SCORE = "goodhart_curve", "goodhart_score"
CONTROLS = ("tilt", "reward", "best-of-n")
INTERVALS = ("hull", "basic")  # for distances and the score (option ``distance_interval``)


@dataclass
class Point:
    """One distribution over the pool's rows: fixed weights ``u``, or best-of-n ``levels`` of a score."""

    condition: str
    control: str  # "pool", "tilt", "reward" or "best-of-n"
    u: np.ndarray | None = None
    levels: np.ndarray | None = None  # best-of-n: score level per row, ascending
    n_best: int = 0
    beta: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def masses(self, m: np.ndarray, onehot_levels: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
        """Unnormalised row masses W = m * u (b, N) in resamples with multiplicities ``m``, and u."""
        if self.levels is None:
            return m * self.u, np.broadcast_to(self.u, m.shape)
        p = np.asarray(onehot_levels.T @ m.T).T / m.sum(axis=1, keepdims=True)  # (b, L) level shares
        cdf = np.minimum(np.cumsum(p, axis=1), 1.0)
        below = np.maximum(cdf - p, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(p > 0, (cdf**self.n_best - below**self.n_best) / p, 0.0)
        u = g[:, self.levels]
        return m * u, u

    def weights(self, n: int) -> np.ndarray:
        """The point's normalised weights over the pool's ``n`` rows."""
        hot = None if self.levels is None else _onehot(np.arange(n), self.levels, n, int(self.levels.max()) + 1)
        w, _ = self.masses(np.ones((1, n)), hot)
        return w[0] / w[0].sum()


def bon_levels(scores: np.ndarray) -> np.ndarray:
    """Ascending score level of each row (null scores, -inf, lowest)."""
    return np.unique(scores, return_inverse=True)[1].ravel()


def best_of_n_weights(scores: np.ndarray, n: int) -> np.ndarray:
    """Normalised weights of the exact best-of-n resampling distribution over the rows (ties share equally)."""
    levels = bon_levels(np.asarray(scores, dtype=float))
    return Point("best-of-n", "best-of-n", levels=levels, n_best=n).weights(levels.size)


def resampling_kl(u: np.ndarray) -> float:
    """KL of the distribution w = u / sum u over N rows from the uniform one: sum_i w_i log(N w_i)."""
    w = np.asarray(u, dtype=float) / np.sum(u)
    n, w = w.size, w[w > 0]
    return float(max(np.sum(w * np.log(n * w)), 0.0))


class PoolData:
    """A pool's rows coded for resampling: contexts, world draws, latents on grids shared with the reference."""

    def __init__(self, inputs: EstimationInputs, pool: str, example: Selection):
        self.rows = pool_rows(inputs.draws, pool, inputs.task)
        self.n = self.rows.height
        clusters = clusters_of(self.rows)
        self.labels, self.n_clusters = clusters.labels, clusters.n_clusters
        world = world_array(self.rows, CURVE)
        self.k = world.shape[1] - 1
        self.r = world.mean(axis=1)
        self.r0 = world[:, 0].astype(float)
        self.forced = (world[:, 0] & world[:, 1:].all(axis=1)).astype(float)
        ref, self.reference_label = reference_for(inputs, example)
        self.n_ref = ref.height
        self.latents = []  # (name, kind, grid, pool onehot (N, G), ref onehot (n_ref, G))
        self.levels: list[tuple[str, str, np.ndarray]] = []  # (feature, latent, vector): Q(H=level) or E_Q[H] = q @ vector
        for h in latents(inputs):
            kind = kind_of(inputs, h)
            pool_ok = valid(self.rows.with_row_index("_i"), h)
            ref_ok = valid(ref.with_row_index("_i"), h)
            if pool_ok.height < 2 or ref_ok.height < 2:
                continue
            grid, (rc, pc) = code_values(kind, values_of(ref_ok[f"feat_{h}"], kind), values_of(pool_ok[f"feat_{h}"], kind))
            self.latents.append((h, kind, grid, _onehot(pool_ok["_i"].to_numpy(), pc, self.n, grid.size),
                                 _onehot(ref_ok["_i"].to_numpy(), rc, self.n_ref, grid.size)))
            if kind == "numeric":
                self.levels.append((f"mean({h})", h, grid.astype(float)))
            elif kind == "binary":
                self.levels.append((f"{h}=1", h, (grid == 1.0).astype(float)))
            else:
                self.levels += [(f"{h}={level}", h, (grid == level).astype(float)) for level in grid]

    @cached_property
    def reference_values(self) -> dict[str, float]:
        """F(H = level | R=1) or E_F[H | R=1] for every level feature (the reference side's point values)."""
        refs = {h: _share(ref_hot, np.ones((1, self.n_ref)))[0] for h, _, _, _, ref_hot in self.latents}
        return {feature: float(refs[h] @ vector) for feature, h, vector in self.levels}

    def key_index(self) -> dict[tuple[int, int], int]:
        """Row position of each (context_id, sample_index) key."""
        keys = zip(self.rows["context_id"].to_list(), self.rows["sample_index"].to_list())
        return {key: i for i, key in enumerate(keys)}


def _onehot(rows: np.ndarray, codes: np.ndarray, n: int, size: int) -> sp.csr_matrix:
    """(n, size) indicator of each valid row's grid cell; invalid rows are all zero."""
    return sp.csr_matrix((np.ones(rows.size), (rows, codes)), shape=(n, size))


def _share(onehot: sp.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """Normalised grid masses (b, G) of row weights (b, n)."""
    mass = np.asarray(onehot.T @ weights.T).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return mass / mass.sum(axis=1, keepdims=True)


def points_for(data: PoolData, selections: list[Selection]) -> list[Point]:
    """The pool (KL 0) followed by one point per tilt, reward and best-of-n selection of the pool."""
    points, index = [Point(data.rows["pool"][0], "pool", u=np.ones(data.n))], data.key_index()
    for sel in selections:
        if sel.control == "best-of-n":
            score = sel.info.get("score", "world")
            values = data.r if score == "world" else data.rows[f"feat_{score}"].cast(pl.Float64).fill_null(-math.inf).to_numpy()
            points.append(Point(sel.condition, sel.control, levels=bon_levels(values), n_best=int(sel.info["n"]), info=sel.info))
            continue
        if sel.kept.height == 0:
            continue  # nothing kept (reward@K with no success): no distribution to place
        u = np.zeros(data.n)
        for c, s, w in zip(sel.kept["context_id"].to_list(), sel.kept["sample_index"].to_list(), sel.kept["weight"].to_list()):
            u[index[(c, s)]] = w
        beta = sel.info.get("beta") if sel.control == "tilt" else None
        points.append(Point(sel.condition, sel.control, u=u, beta=beta, info=sel.info))
    return points


def statistics(data: PoolData, points: list[Point], m: np.ndarray, mr: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
    """Every point's statistics in resamples with pool multiplicities ``m`` (b, N), reference ``mr`` (b, n_ref)."""
    out: dict[tuple[int, str], np.ndarray] = {}
    n_star = m.sum(axis=1)
    refs = [_share(ref_hot, mr) for _, _, _, _, ref_hot in data.latents]
    level_hot = {}
    for j, point in enumerate(points):
        if point.levels is not None and id(point.levels) not in level_hot:
            level_hot[id(point.levels)] = _onehot(np.arange(data.n), point.levels, data.n, int(point.levels.max()) + 1)
        w, u = point.masses(m, level_hot.get(id(point.levels)))
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            log_u = np.log(np.where(u > 0, u, 1.0))
            out[j, "_kl"] = np.maximum((w * log_u).sum(axis=1) / total + np.log(n_star / total), 0.0)
            out[j, "_ess"] = total**2 / (w * u).sum(axis=1)
            out[j, "_success"] = w @ data.r / total
            if data.k:
                out[j, "_mK"] = w @ data.forced / (w @ data.r0)
        dists, shares = [], {}
        for (h, kind, grid, pool_hot, _), ref in zip(data.latents, refs):
            shares[h] = _share(pool_hot, w)
            out[j, h] = distance(kind, grid, ref - shares[h], ref)
            dists.append(out[j, h])
        for feature, h, vector in data.levels:
            out[j, feature] = shares[h] @ vector
        if dists:
            out[j, "_shift"] = np.mean(dists, axis=0)
    return out


def noise_floor(data: PoolData, rng: np.random.Generator, n_split: int) -> np.ndarray:
    """Mean latent distance between two random halves of the reference R=1 rows, per split."""
    if data.n_ref < 4 or not data.latents:
        return np.array([])
    out = []
    for b in chunk_sizes(n_split, data.n_ref):
        first = (rng.random((b, data.n_ref)).argsort(axis=1) < data.n_ref // 2).astype(float)
        dists = []
        for _, kind, grid, _, ref_hot in data.latents:
            a, c = _share(ref_hot, first), _share(ref_hot, 1.0 - first)
            dists.append(distance(kind, grid, a - c, _share(ref_hot, np.ones((1, data.n_ref)))))
        out.append(np.mean(dists, axis=0))
    return np.concatenate(out)


def interpolate(kl: np.ndarray, y: np.ndarray, at: float) -> np.ndarray:
    """Per row, y at KL = ``at`` by linear interpolation along ascending ``kl`` (b, P); NaN beyond the last."""
    out = np.full(kl.shape[0], np.nan)
    for j in range(kl.shape[1] - 1):
        lo, hi = kl[:, j], kl[:, j + 1]
        inside = (lo <= at) & (at <= hi) & np.isnan(out)
        t = (at - lo[inside]) / np.maximum(hi[inside] - lo[inside], 1e-300)
        out[inside] = y[inside, j] + t * (y[inside, j + 1] - y[inside, j])
    return out


def small_cluster_factor(weights: np.ndarray, labels: np.ndarray, n_clusters: int) -> tuple[float, float]:
    """(factor, effective contexts): widen bootstrap intervals by t_{0.975, C_eff - 1} / z * sqrt(C / (C - 1)).

    C_eff = (sum_c W_c)^2 / sum_c W_c^2 over the contexts' total weights W_c: a tilt that rests on a
    few contexts has few independent units, and a bootstrap over C units under-states the variance
    by (C-1)/C and ignores the t quantile (the usual few-cluster correction, as for CR1 + t_{G-1}).
    """
    totals = np.bincount(labels, weights=weights, minlength=n_clusters)
    c_eff = float(totals.sum() ** 2 / np.sum(totals**2)) if totals.any() else 0.0
    if n_clusters < 2 or c_eff <= 1:
        return math.inf, c_eff
    return float(student_t.ppf(0.975, max(c_eff - 1, 1.0)) / Z95 * math.sqrt(n_clusters / (n_clusters - 1))), c_eff


def _interval(point: float, draws: np.ndarray, kind: str, factor: float = 1.0) -> tuple[float, float]:
    """95% interval from bootstrap draws: ``percentile``, ``basic``, ``hull`` (of both) or ``wilson``, widened by ``factor``.

    ``wilson``: Wilson's interval for a proportion on the effective n = p(1 - p) / (factor^2 Var*(p)):
    honest near 0 and 1, where a percentile interval of a small share misses from above.
    """
    finite = draws[np.isfinite(draws)]
    if kind == "wilson":
        var = float(np.var(finite, ddof=1)) if finite.size > 1 else 0.0
        if 0 < point < 1 and var > 0:
            return wilson(point, point * (1 - point) / (var * factor**2))
        kind = "percentile"
    if kind == "percentile":
        lo, hi = percentile(draws)
    elif kind == "basic":
        lo, hi = basic(point, draws)
    else:
        (b_lo, b_hi), (p_lo, p_hi) = basic(point, draws), percentile(draws)
        lo, hi = min(b_lo, p_lo), max(b_hi, p_hi)
    return point - factor * (point - lo), point + factor * (hi - point)


def curve(inputs: EstimationInputs, pool: str, selections: list[Selection], n_boot: int, budget: float,
          interval: str = "hull") -> list[Estimate]:
    """The curve and score rows of one pool (all points share one set of resamples)."""
    data = PoolData(inputs, pool, selections[0])
    points = points_for(data, selections)
    rng = rng_for(inputs, CURVE, pool)
    est = {key: float(v[0]) for key, v in statistics(data, points, np.ones((1, data.n)), np.ones((1, data.n_ref))).items()}
    chunks = []
    for b in chunk_sizes(n_boot, max(data.n, data.n_ref) * max(2, len(points))):
        m = resample_counts(rng, data.n_clusters, b)[:, data.labels]
        mr = resample_counts(rng, data.n_ref, b) if data.n_ref else np.zeros((b, 0))
        chunks.append(statistics(data, points, m, mr))
    boot = {key: np.concatenate([c[key] for c in chunks]) for key in est}
    floor = noise_floor(data, rng, n_boot)
    factors = [small_cluster_factor(p.weights(data.n), data.labels, data.n_clusters) for p in points]
    bound = 2 * (1 - est[0, "_mK"]) if (0, "_mK") in est else None
    rows: list[Estimate] = []
    for j, point in enumerate(points):
        rows += _point_rows(data, point, j, est, boot, bound, floor, interval, factors[j])
    tilts = sorted((j for j, p in enumerate(points) if p.control == "tilt"), key=lambda j: est[j, "_kl"])
    if tilts and data.latents:
        rows += _score_rows(data, points, [0, *tilts], est, boot, budget, pool, interval, factors)
    return rows


def _point_rows(data, point: Point, j: int, est, boot, bound, floor, interval: str, factor: tuple[float, float]) -> list[Estimate]:
    """The rows of one point: KL, success, m_K, distances, mean distance, tilted latent distribution."""
    ess = est[j, "_ess"]
    low = ess < max(LOW_ESS_MIN, LOW_ESS_FRACTION * data.n) or bool(point.info.get("low_ess"))
    flags = sorted(set(point.info.get("flags", [])) | ({"low_ess"} if low else set()))
    note = dict(kl=est[j, "_kl"], ess=ess, ess_fraction=ess / data.n, low_ess=low, flags=flags, beta=point.beta,
                bound=bound, m_K_pool=est.get((0, "_mK")), K=data.k, n_pool=data.n, contexts=data.n_clusters,
                control=point.control, small_cluster_factor=factor[0], effective_contexts=factor[1])
    if point.control == "best-of-n":
        note.update(n_best=point.n_best, kl_bound=math.log(point.n_best) - (point.n_best - 1) / point.n_best,
                    kl_method="exact-resampling", weights="best-of-n resampling distribution")
    elif point.control == "reward":
        note.update(k=point.info.get("k"), acceptance=point.info.get("acceptance"), kl_method="exact-rejection")
    if point.control != "pool":
        note["selection_uses_world_draws"] = True
    out = []
    distances = [*[h for h, *_ in data.latents], "_shift"]
    features = ["_kl", "_success", "_mK", *distances, *[f for f, *_ in data.levels]]
    for feature in (f for f in features if (j, f) in est):
        draws = boot[j, feature]
        kind = interval if feature in distances else "percentile" if feature == "_kl" or feature.startswith("mean(") else "wilson"
        exact = point.control == "pool" and feature == "_kl"  # the pool is KL 0 by construction
        lower, upper = (0.0, 0.0) if exact else _interval(est[j, feature], draws, kind, factor[0])
        method = "exact" if exact else f"cluster-bootstrap-{kind}"
        extra = {"undefined_resamples": int(np.sum(~np.isfinite(draws)))}
        if feature == "_mK":
            extra["bound_here"] = 2 * (1 - est[j, feature])
        elif feature in data.reference_values:
            extra.update(quantity="mean" if feature.startswith("mean(") else "share", reference_value=data.reference_values[feature])
        elif feature in distances:
            extra.update(distance="mean" if feature == "_shift" else ("w1/iqr" if _kind(data, feature) == "numeric" else "tv"),
                         reference=data.reference_label, n_reference=data.n_ref, debiased=2 * est[j, feature] - np.nanmean(draws))
            if feature == "_shift" and floor.size:
                extra.update(noise_floor=float(floor.mean()), noise_floor_lower=float(np.quantile(floor, 0.025)),
                             noise_floor_upper=float(np.quantile(floor, 0.975)))
        out.append(row(CURVE, point.condition, feature, est[j, feature], lower, upper, data.n, method, **note, **extra))
    return out


def _kind(data: PoolData, name: str) -> str:
    return next(kind for h, kind, *_ in data.latents if h == name)


def _score_rows(data, points, order: list[int], est, boot, budget: float, pool: str, interval: str, factors) -> list[Estimate]:
    """G = the mean over latents of the tilt curve's distance at KL = budget (and one row per latent).

    The interval is widened by the larger small-cluster factor of the two betas around the budget.
    """
    kl_hat = np.array([[est[j, "_kl"] for j in order]])
    kl_boot = np.column_stack([boot[j, "_kl"] for j in order])
    betas = [points[j].beta for j in order[1:]]
    low = [points[j].beta for j in order if est[j, "_ess"] < max(LOW_ESS_MIN, LOW_ESS_FRACTION * data.n)
           or points[j].info.get("low_ess")]
    condition = "tilt" if pool == "none" else f"tilt/{pool}"
    above = int(np.searchsorted(kl_hat[0], budget))
    factor = max(factors[j][0] for j in order[max(above - 1, 0): above + 1])
    out = []
    for feature in ["_shift", *[h for h, *_ in data.latents]]:
        y_hat = np.array([[est[j, feature] for j in order]])
        point = float(interpolate(kl_hat, y_hat, budget)[0])
        draws = interpolate(kl_boot, np.column_stack([boot[j, feature] for j in order]), budget)
        lower, upper = _interval(point, draws, interval, factor) if np.isfinite(point) else (math.nan, math.nan)
        flags = (["budget_beyond_sweep"] if not np.isfinite(point) else []) + (["low_ess"] if low else [])
        out.append(row(SCORE, condition, "_all" if feature == "_shift" else feature, point, lower, upper, data.n,
                       f"cluster-bootstrap-{interval}", budget=budget, kl_max=float(kl_hat.max()), betas=betas,
                       low_ess_betas=low, low_ess=bool(low), flags=flags, shift_at_0=est[0, feature],
                       excess=point - est[0, feature], small_cluster_factor=factor,
                       undefined_resamples=int(np.sum(~np.isfinite(draws))),
                       formula="mean over latents of D(F(H|R=1), Q_beta(H)) at KL = budget, linear in KL"))
    return out


class GoodhartCurve:
    """Estimator ``goodhart_curve``: curve rows per pool with tilt/reward/best-of-n selections, and the score."""

    name = CURVE

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - {"n_boot", "budget", "distance_interval"})
        if unknown:
            raise ValueError(f"goodhart_curve: unknown option(s) {', '.join(unknown)} (known: n_boot, budget, distance_interval)")
        self.interval = str(options.get("distance_interval", "hull"))
        if self.interval not in INTERVALS:
            raise ValueError(f"goodhart_curve: distance_interval must be one of {', '.join(INTERVALS)}, got {self.interval!r}")
        self.n_boot = options.get("n_boot")
        self.budget = float(options.get("budget", BUDGET))
        if not self.budget > 0:
            raise ValueError(f"goodhart_curve: budget must be > 0 nats, got {self.budget}")

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Rows for every pool that a tilt, reward or best-of-n selection reweights."""
        by_pool: dict[str, list[Selection]] = {}
        for sel in inputs.selections:
            if sel.control in CONTROLS:
                by_pool.setdefault(sel.pool, []).append(sel)
        out = []
        for pool, sels in by_pool.items():
            out += curve(inputs, pool, sels, int(self.n_boot or inputs.n_boot), self.budget, self.interval)
        return out
