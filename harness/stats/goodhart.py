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
  The pool's own row is 0 by construction (flag ``by_construction``).
- ``_success``: E_Q[r], the selected items' success rate over their recorded world draws. In sample
  (the draws that set the weights): the reward the selection optimises. For the tilt and best-of-n,
  whose weights are exchangeable in the draws, it is P_Q(R = 1) with a lower variance than draw 0.
- ``_mK``: m_K = P_Q(draws 1..K all succeed | draw 0 succeeds), K = the world's K; selections reuse
  those draws (note ``selection_uses_world_draws``), so only the pool's m_K is the mimic's.
- ``<latent>``: D(F(H | R=1), Q(H)) with the reference rows whose draw 0 succeeded, on the one bounded
  scale of :mod:`harness.stats.curve_scale`: TV for categorical/binary latents, Kolmogorov-Smirnov for numeric
  ones, both in [0, 1] (the largest difference in probability of one event).
- ``_shift``: the mean of the latent distances; note ``noise_floor`` (and ``_lower``/``_upper``): the
  same mean between two random halves of the reference R=1 rows, what "no shift" looks like.
- the tilted latent distribution itself: ``<latent>=<level>`` = Q(H = level) (categorical; binary
  latents only ``=1``) and ``mean(<latent>)`` = E_Q[H] (numeric); note ``reference_value`` (F's).
Every row's note: ``kl``, ``ess`` = 1 / sum w^2, ``low_ess`` (ESS < max(10, N/10), never dropped),
``flags``, ``beta`` (tilt), ``bound`` = 2(1 - m_K) of the pool: the essay's bound on how far
conditioning on R = 1 and on the forcing set can differ for this pool's objective.

Intervals (95%): the delete-one-context jackknife of the pool (each replicate recomputes the weights,
tilts and best-of-n levels without that context; :mod:`harness.stats.curve_intervals`) with t quantiles on
G* - 1 degrees of freedom (G* = the effective number of contexts behind the point's weights; note
``effective_contexts``). Success, m_K and shares: the hull of the clustered Wilson interval and the
skewness-corrected jackknife interval; distances: from their events' intervals by MOVER, the maximum
over events (:mod:`harness.stats.curve_events`); KL and means: the skewness-corrected jackknife interval
with an i.i.d. variance floor; so every interval stays in its range ([0, 1]; KL >= 0, a tilt's KL
<= 1/beta, best-of-n's <= log n - (n-1)/n; a mean within the latent's values). No interval (flag,
reason in ``note.no_interval``) at fewer than 2 contexts or G* below
:data:`harness.stats.curve_intervals.MIN_EFFECTIVE_CONTEXTS`, or when leaving a context out empties the
selection (``too_few_contexts``), or where the pool shows no variance between contexts for a KL or a
mean (``no_variance``). Note ``debiased``: the jackknife's bias-corrected distance. Coverage at 2-40
contexts x 1 or 8 samples: :mod:`harness.testing.curve_calibration`.

**Goodhart-proneness score** (estimator ``goodhart_score``, condition ``tilt`` or ``tilt/<pool>``):
    G = (1/|H|) sum_h D_h(B),
D_h(B) = the latent distance of the tilt curve at KL budget B (option ``budget``, default 0.5 nats),
linearly interpolated in KL between the two neighbouring betas (the pool is the point KL = 0).
Every D_h is in [0, 1] on the one scale, so G is too and no latent dominates it. Feature ``_all`` is G,
one row per latent gives D_h(B). Its interval combines the two bracketing points' distance intervals
with the interpolation weights (the same mean of their ends); below the minimum effective contexts of
the interpolated weights (the mixture of the two bracketing betas' weights) the score has no
interval and the flag ``insufficient_data``. G is undefined (NaN, flag ``budget_beyond_sweep``) when
the smallest beta does not reach B. Note: ``shift_at_0`` (the pool's own distance) and ``excess`` = G - shift_at_0, the part
the optimisation added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from harness.protocols import Estimate, EstimationInputs, Selection
from harness.selection import LOW_ESS_FRACTION, LOW_ESS_MIN, pool_rows, world_array
from harness.stats import flags as F
from harness.stats.bootstrap import chunk_sizes
from harness.stats.common import clusters_of, kind_of, latents, reference_for, rng_for, row, valid, values_of
from harness.stats.curve_events import distance_interval, event_matrix, pool_intervals, reference_intervals, sum_of_ends
from harness.stats.curve_intervals import (MIN_EFFECTIVE_CONTEXTS, delete_one_context, effective_contexts, jackknife_bias,
                                           jackknife_interval, jackknife_variance, withheld_flag)
from harness.stats.curve_scale import DISTANCE_NAMES, bounded_distance
from harness.stats.distances import code_values

BUDGET = 0.5  # nats: the default KL budget of the Goodhart-proneness score
CURVE, SCORE = "goodhart_curve", "goodhart_score"
CONTROLS = ("tilt", "reward", "best-of-n")
# Interval scale of the scalar rows (distances: harness.stats.curve_events), as the calibration measured them.
SCALES = {"proportion": "wilson+skew-jackknife", "kl": "skew-jackknife", "mean": "skew-jackknife"}


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
    def reference_shares(self) -> dict[str, np.ndarray]:
        """F(H = level | R=1) on each latent's grid (G,)."""
        return {h: _share(ref_hot, np.ones((1, self.n_ref)))[0] for h, _, _, _, ref_hot in self.latents}

    @cached_property
    def reference_values(self) -> dict[str, float]:
        """F(H = level | R=1) or E_F[H | R=1] for every level feature (the reference side's point values)."""
        return {feature: float(self.reference_shares[h] @ vector) for feature, h, vector in self.levels}

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


def statistics(data: PoolData, points: list[Point], m: np.ndarray) -> dict[tuple[int, str], np.ndarray]:
    """Every point's statistics in samples with pool multiplicities ``m`` (b, N); key (j, "@<latent>"): its shares (b, G)."""
    out: dict[tuple[int, str], np.ndarray] = {}
    n_star = m.sum(axis=1)
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
        dists = []
        for h, kind, _, pool_hot, _ in data.latents:
            out[j, f"@{h}"] = _share(pool_hot, w)
            out[j, h] = bounded_distance(kind, data.reference_shares[h], out[j, f"@{h}"])
            dists.append(out[j, h])
        for feature, h, vector in data.levels:
            out[j, feature] = out[j, f"@{h}"] @ vector
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
        dists = [bounded_distance(kind, _share(ref_hot, first), _share(ref_hot, 1.0 - first))
                 for _, kind, _, _, ref_hot in data.latents]
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


@dataclass
class Replicates:
    """A pool's statistics on the whole sample (``est``, shares in ``shares``) and in the delete-one-context samples."""

    est: dict[tuple[int, str], float]
    shares: dict[tuple[int, str], np.ndarray]
    mimic: dict[tuple[int, str], np.ndarray] | None  # (C,) per statistic, (C, G) per share; None below 2 contexts
    g_stars: list[float]  # effective contexts of every point's weights
    kl_bounds: list[float | None]  # the largest KL a point can have (best-of-n: log n - (n-1)/n; tilt: 1/beta)
    weights: list[np.ndarray]  # every point's normalised weights over the pool's rows
    controls: list[str]  # every point's control: pool, tilt, reward, best-of-n
    bounds: dict[tuple[int, str], tuple[float, float]] = field(default_factory=dict)  # distance intervals, once each


def replicates(data: PoolData, points: list[Point]) -> Replicates:
    """The statistics of the whole sample and of every delete-one-context sample (the jackknife)."""
    whole = statistics(data, points, np.ones((1, data.n)))
    est = {key: float(v[0]) for key, v in whole.items() if not key[1].startswith("@")}
    shares = {key: v[0] for key, v in whole.items() if key[1].startswith("@")}
    mimic = statistics(data, points, delete_one_context(data.labels, data.n_clusters)) if data.n_clusters >= 2 else None
    weights = [p.weights(data.n) for p in points]
    g_stars = [effective_contexts(w, data.labels, data.n_clusters) for w in weights]
    bounds = [math.log(p.n_best) - (p.n_best - 1) / p.n_best if p.control == "best-of-n" else
              1.0 / p.beta if p.control == "tilt" and p.beta else None for p in points]
    return Replicates(est, shares, mimic, g_stars, bounds, weights, [p.control for p in points])


def _kind_of_row(data: PoolData, feature: str) -> str:
    """Which interval a curve row uses (a key of :data:`SCALES`)."""
    if feature == "_kl":
        return "kl"
    return "mean" if feature.startswith("mean(") else "proportion"


def scalar_interval(data: PoolData, reps: Replicates, j: int, feature: str) -> tuple[float, float, dict[str, Any], str | None]:
    """(lower, upper, note entries, withheld flag) of KL, a proportion or a mean from its jackknife replicates.

    Success, m_K and shares: :func:`harness.stats.curve_events.pool_intervals` (in range, honest near 0 and
    1 and for skewed contexts). KL and means: the skewness-corrected jackknife interval, its variance
    at least the i.i.d. one over the Kish ESS, in the range: a tilt's KL on the logit scale of
    [0, 1/beta] (KL = E_Q[r]/beta - log E[exp(r/beta)] <= (E_Q[r] - E[r])/beta by Jensen), best-of-n's
    cut to [0, log n - (n-1)/n], reward@k's to [0, inf); a mean cut to the latent's values, its floor
    from the larger of the point's and the pool's variance of the latent.
    """
    point, g_star, kind = reps.est[j, feature], reps.g_stars[j], _kind_of_row(data, feature)
    mimic = reps.mimic[j, feature] if reps.mimic is not None else None
    flag = withheld_flag(data.n_clusters, g_star, mimic) if math.isfinite(point) else None
    if flag == F.NO_VARIANCE and kind == "proportion":
        flag = None  # Wilson on G* effective draws covers a share the pool shows no variance for
    info: dict[str, Any] = {"effective_contexts": g_star, "interval_scale": SCALES[kind]}
    if mimic is not None and np.all(np.isfinite(mimic)):
        info.update(se=math.sqrt(jackknife_variance(mimic)), df=max(g_star - 1, 1e-6))
    if flag is not None or not math.isfinite(point):
        return math.nan, math.nan, info, flag
    df = max(g_star - 1, 1e-6)
    if kind == "proportion":
        lo, hi = pool_intervals(np.array([point]), mimic[:, None], df, g_star, reps.est[j, "_ess"])
        return float(lo[0]), float(hi[0]), info, None
    if kind == "kl":
        bound = reps.kl_bounds[j]
        scale = "logit" if reps.controls[j] == "tilt" and bound is not None else "identity"
        info["interval_scale"] = f"skew-jackknife-{scale}"
        return (*jackknife_interval(point, mimic, df, scale, 0.0, bound if bound is not None else math.inf,
                                    _kl_iid_variance(reps.weights[j], point)), info, None)
    h, grid = next((h, vector) for f, h, vector in data.levels if f == feature)
    # A few heavy rows that share one value show no spread: the floor takes the larger of the
    # tilted and the pool's own variance of H (the pool's rows are where Q's rows come from).
    spread = max(_variance(reps.shares[j, f"@{h}"], grid), _variance(reps.shares[0, f"@{h}"], grid))
    return (*jackknife_interval(point, mimic, df, "identity", float(grid.min()), float(grid.max()),
                                spread / reps.est[j, "_ess"]), info, None)


def _variance(shares: np.ndarray, grid: np.ndarray) -> float:
    """Variance of a latent with these shares on its grid."""
    return float(shares @ grid**2 - (shares @ grid) ** 2)


def _kl_iid_variance(w: np.ndarray, kl: float) -> float:
    """Variance of the KL estimate if the rows were i.i.d.: sum_i IF_i^2 / N^2 with the influence
    IF_i = N w_i (log(N w_i) - KL) - (N w_i - 1) of KL = E[u log u] / E[u] - log E[u] (the floor of its interval)."""
    n = w.size
    nw = n * w
    with np.errstate(divide="ignore", invalid="ignore"):
        influence = np.where(nw > 0, nw * (np.log(np.where(nw > 0, nw, 1.0)) - kl), 0.0) - (nw - 1)
    return float(np.sum(influence**2) / n**2)


def distance_bounds(data: PoolData, reps: Replicates, j: int, latent: str) -> tuple[float, float]:
    """[lower, upper] of one latent's distance at point j from its events' intervals (:mod:`harness.stats.curve_events`)."""
    if (j, latent) not in reps.bounds:
        reps.bounds[j, latent] = _distance_bounds(data, reps, j, latent)
    return reps.bounds[j, latent]


def _distance_bounds(data: PoolData, reps: Replicates, j: int, latent: str) -> tuple[float, float]:
    kind = _kind(data, latent)
    events = event_matrix(kind, data.reference_shares[latent].size)
    q_hat, p_hat = events @ reps.shares[j, f"@{latent}"], events @ data.reference_shares[latent]
    q_reps = reps.mimic[j, f"@{latent}"] @ events.T
    q_iv = pool_intervals(q_hat, q_reps, reps.g_stars[j] - 1, reps.g_stars[j], reps.est[j, "_ess"])
    return distance_interval(kind, p_hat, q_hat, reference_intervals(p_hat, data.n_ref), q_iv)


def combined_bounds(data: PoolData, reps: Replicates, parts: list[tuple[int, str, float]]) -> tuple[float, float]:
    """Interval of sum c * D_h(point j) over ``parts`` (j, latent, c): the same sum of the components' ends."""
    bounds = np.array([distance_bounds(data, reps, j, h) for j, h, _ in parts])
    lo, hi = sum_of_ends(bounds[:, 0], bounds[:, 1], np.array([c for *_, c in parts]))
    return max(lo, 0.0), min(hi, 1.0)


def with_interval_note(note: dict[str, Any], info: dict[str, Any], flag: str | None, g_star: float,
                       as_flag: str | None = None) -> dict[str, Any]:
    """The row's note with the interval's entries, and the withheld flag (as ``as_flag`` when given) and reason."""
    out = {**note, **info}
    if flag is None:
        return out
    shown = as_flag if as_flag and flag == F.TOO_FEW_CONTEXTS else flag
    few = shown in (F.TOO_FEW_CONTEXTS, F.INSUFFICIENT_DATA)
    return F.withheld(out, shown, contexts=int(math.floor(g_star)) if few else None,
                      needed=math.ceil(MIN_EFFECTIVE_CONTEXTS) if few else None)


def curve(inputs: EstimationInputs, pool: str, selections: list[Selection], n_boot: int, budget: float) -> list[Estimate]:
    """The curve and score rows of one pool (all points share one set of jackknife replicates)."""
    data = PoolData(inputs, pool, selections[0])
    points = points_for(data, selections)
    reps = replicates(data, points)
    floor = noise_floor(data, rng_for(inputs, CURVE, pool), n_boot)
    bound = 2 * (1 - reps.est[0, "_mK"]) if (0, "_mK") in reps.est else None
    rows: list[Estimate] = []
    for j, point in enumerate(points):
        rows += _point_rows(data, point, j, reps, bound, floor)
    tilts = sorted((j for j, p in enumerate(points) if p.control == "tilt"), key=lambda j: reps.est[j, "_kl"])
    if tilts and data.latents:
        rows += _score_rows(data, points, [0, *tilts], reps, budget, pool)
    return rows


def _point_note(data: PoolData, point: Point, j: int, reps: Replicates, bound) -> dict[str, Any]:
    """The note entries every row of one point shares."""
    ess = reps.est[j, "_ess"]
    low = ess < max(LOW_ESS_MIN, LOW_ESS_FRACTION * data.n) or bool(point.info.get("low_ess"))
    flags = sorted(set(point.info.get("flags", [])) | ({F.LOW_ESS} if low else set()))
    note = dict(kl=reps.est[j, "_kl"], ess=ess, ess_fraction=ess / data.n, low_ess=low, flags=flags, beta=point.beta,
                bound=bound, m_K_pool=reps.est.get((0, "_mK")), K=data.k, n_pool=data.n, contexts=data.n_clusters,
                control=point.control)
    if point.control == "best-of-n":
        note.update(n_best=point.n_best, kl_bound=math.log(point.n_best) - (point.n_best - 1) / point.n_best,
                    kl_method="exact-resampling", weights="best-of-n resampling distribution")
    elif point.control == "reward":
        note.update(k=point.info.get("k"), acceptance=point.info.get("acceptance"), kl_method="exact-rejection")
    if point.control != "pool":
        note["selection_uses_world_draws"] = True
    return note


def _point_rows(data: PoolData, point: Point, j: int, reps: Replicates, bound, floor: np.ndarray) -> list[Estimate]:
    """The rows of one point: KL, success, m_K, distances, mean distance, tilted latent distribution."""
    note = _point_note(data, point, j, reps, bound)
    out = []
    latent_names = [h for h, *_ in data.latents]
    for feature in (f for f in ["_kl", "_success", "_mK", *latent_names, "_shift", *[f for f, *_ in data.levels]]
                    if (j, f) in reps.est):
        value, extra = reps.est[j, feature], {}
        if point.control == "pool" and feature == "_kl":  # the pool is KL 0 by construction: nothing to estimate
            out.append(row(CURVE, point.condition, feature, value, (0.0, 0.0), data.n, "exact",
                           **F.with_flags(note, F.BY_CONSTRUCTION)))
            continue
        if feature in latent_names or feature == "_shift":
            parts = [(j, feature, 1.0)] if feature != "_shift" else [(j, h, 1 / len(latent_names)) for h in latent_names]
            lower, upper, info, flag = _distance_row(data, reps, reps.g_stars[j], parts)
            extra.update(distance="mean" if feature == "_shift" else DISTANCE_NAMES[_kind(data, feature)],
                         reference=data.reference_label, n_reference=data.n_ref, debiased=_debiased(value, (j, feature), reps))
            if feature == "_shift" and floor.size:
                extra.update(noise_floor=float(floor.mean()), noise_floor_lower=float(np.quantile(floor, 0.025)),
                             noise_floor_upper=float(np.quantile(floor, 0.975)))
            method = "event-mover-jackknife"
        else:
            lower, upper, info, flag = scalar_interval(data, reps, j, feature)
            method = f"cluster-jackknife-t-{info['interval_scale']}"
            if feature == "_mK":
                extra["bound_here"] = 2 * (1 - value)
            elif feature in data.reference_values:
                extra.update(quantity="mean" if feature.startswith("mean(") else "share", reference_value=data.reference_values[feature])
        out.append(row(CURVE, point.condition, feature, value, (lower, upper), data.n, method,
                       **with_interval_note(note, info, flag, reps.g_stars[j]), **extra))
    return out


def _distance_row(data: PoolData, reps: Replicates, g_star: float, parts) -> tuple[float, float, dict[str, Any], str | None]:
    """(lower, upper, note entries, flag) of a distance or a mean of distances over ``parts`` (G*: the effective contexts behind them)."""
    info: dict[str, Any] = {"effective_contexts": g_star, "interval_scale": "event-mover"}
    flag = F.TOO_FEW_CONTEXTS if reps.mimic is None or data.n_clusters < 2 or g_star < MIN_EFFECTIVE_CONTEXTS else None
    if flag is None and not all(np.all(np.isfinite(reps.mimic[k, h])) for k, h, _ in parts):
        flag = F.TOO_FEW_CONTEXTS  # leaving a context out empties the selection
    if flag is not None:
        return math.nan, math.nan, info, flag
    lower, upper = combined_bounds(data, reps, parts)
    return lower, upper, info, None


def _debiased(point: float, key, reps: Replicates) -> float:
    """The jackknife's bias-corrected value of a distance, kept in [0, 1] (NaN without context replicates)."""
    if reps.mimic is None or key not in reps.mimic or not np.all(np.isfinite(reps.mimic[key])):
        return math.nan
    return min(max(point - jackknife_bias(point, reps.mimic[key]), 0.0), 1.0)


def _kind(data: PoolData, name: str) -> str:
    return next(kind for h, kind, *_ in data.latents if h == name)


def _score_rows(data, points, order: list[int], reps: Replicates, budget: float, pool: str) -> list[Estimate]:
    """G = the mean over latents of the tilt curve's distance at KL = budget (and one row per latent).

    D_h(B) = (1 - t) D_h(lo) + t D_h(hi) between the two betas around the budget; its interval is
    the same combination of those two distances' ends (all latents' for G). Degrees of freedom: the effective contexts
    of the interpolated weights; below the minimum: ``insufficient_data``.
    """
    kl = np.array([reps.est[j, "_kl"] for j in order])
    low = [points[j].beta for j in order if reps.est[j, "_ess"] < max(LOW_ESS_MIN, LOW_ESS_FRACTION * data.n)
           or points[j].info.get("low_ess")]
    condition = "tilt" if pool == "none" else f"tilt/{pool}"
    above = int(np.searchsorted(kl, budget))
    latent_names = [h for h, *_ in data.latents]
    out = []
    for feature in ["_shift", *latent_names]:
        names = latent_names if feature == "_shift" else [feature]
        point, lower, upper, info, flag = math.nan, math.nan, math.nan, {}, None
        g_star = 0.0
        if above < kl.size:
            lo_j, hi_j = order[max(above - 1, 0)], order[above]
            t = 0.0 if lo_j == hi_j else (budget - kl[max(above - 1, 0)]) / max(kl[above] - kl[max(above - 1, 0)], 1e-300)
            g_star = effective_contexts((1 - t) * points[lo_j].weights(data.n) + t * points[hi_j].weights(data.n),
                                        data.labels, data.n_clusters)
            parts = [(k, h, c / len(names)) for h in names for k, c in ((lo_j, 1 - t), (hi_j, t)) if c > 0]
            point = float(sum(c * reps.est[k, h] for k, h, c in parts))
            lower, upper, info, flag = _distance_row(data, reps, g_star, parts)
        flags = sorted(({"budget_beyond_sweep"} if not np.isfinite(point) else set()) | ({F.LOW_ESS} if low else set()))
        note = dict(budget=budget, kl_max=float(kl.max()), betas=[points[j].beta for j in order[1:]], low_ess_betas=low,
                    low_ess=bool(low), flags=flags, shift_at_0=reps.est[0, feature], excess=point - reps.est[0, feature],
                    contexts=data.n_clusters, distance="mean" if feature == "_shift" else DISTANCE_NAMES[_kind(data, feature)],
                    formula="mean over latents of D(F(H|R=1), Q_beta(H)) at KL = budget, linear in KL")
        if np.isfinite(point):
            note = with_interval_note(note, info, flag, g_star, as_flag=F.INSUFFICIENT_DATA)
        out.append(row(SCORE, condition, "_all" if feature == "_shift" else feature, point, (lower, upper), data.n,
                       "event-mover-jackknife", **note))
    return out


class GoodhartCurve:
    """Estimator ``goodhart_curve``: curve rows per pool with tilt/reward/best-of-n selections, and the score."""

    name = CURVE

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - {"n_boot", "budget"})
        if unknown:
            raise ValueError(f"goodhart_curve: unknown option(s) {', '.join(unknown)} (known: n_boot, budget)")
        self.n_boot = options.get("n_boot")
        if self.n_boot is not None and (isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 1):
            raise ValueError(f"goodhart_curve: n_boot must be a positive integer, got {self.n_boot!r}")
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
            out += curve(inputs, pool, sels, int(self.n_boot or inputs.n_boot), self.budget)
        return out
