"""95% intervals for the curves' bounded distances (TV, KS) and their means, built from event probabilities.

A distance on the curves' scale (:mod:`harness.stats.curve_scale`) is a largest difference of one event's
probability: TV = max_A |F(A) - Q(A)| over events A of the levels, KS = max_t |F(H <= t) - Q(H <= t)|.
A Wald interval of the distance itself fails where a pool share sits near 0 or 1 (its jackknife
variance is then too small: a level no context produced shows none), and the plug-in distance is
biased upward. So the interval is assembled from the events:

1. each event's pool probability Q(A): the hull of the skewness-corrected jackknife interval
   (:mod:`harness.stats.curve_intervals`) and Wilson's score interval on the effective sample size
   n_eff = q (1 - q) / V_jackknife with the t(G* - 1) quantile in place of z (the clustered Wilson
   interval, e.g. Dean & Pagano 2015, J. Survey Statistics and Methodology 3:484-503; Korn &
   Graubard 1998 for the degrees of freedom); where the pool shows no variance for the event
   (q = 0 or 1, or equal replicates), n_eff = G*, as if every effective context were one draw; and
   n_eff never exceeds the Kish effective sample size of the weights (a design effect below 1 means
   the sample does not show the variance, e.g. a tilt whose heavy rows lack a level);
2. its reference probability F(A): Wilson's interval on the reference's i.i.d. rows;
3. the difference F(A) - Q(A) by MOVER (Newcombe 1998, Stat. Med. 17:873-890, method 10; Zou &
   Donner 2008, Stat. Med. 27:1693-1702), and |F(A) - Q(A)| by projecting that interval;
4. the distance: [max_A lower_A, max_A upper_A], cut to [0, 1]. The upper end covers whenever the
   maximising event's interval does; the lower end can only miss where some event's lower end
   exceeds its own |difference|.
Categorical features use every event (each subset up to its complement) up to ``MAX_SUBSET_LEVELS``
levels; with more levels, the single levels give the lower end and min(sum_k max(U_k, 0),
sum_k max(-L_k, 0)) bounds TV = sum_k (F_k - Q_k)^+ from above.

Means of distances (``_shift``, the Goodhart score, which interpolates two betas) take the same
mean of the components' ends (:func:`sum_of_ends`), which covers whenever every component does.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.stats import t as student_t

from harness.stats.curve_intervals import jackknife_interval
from harness.stats.intervals import Z95

MAX_SUBSET_LEVELS = 8
_TINY = 1e-12


def event_matrix(kind: str, size: int) -> np.ndarray:
    """(E, G) 0/1 matrix: each row an event whose probability is that row times the masses."""
    if size < 2:
        return np.zeros((0, size))
    if kind == "numeric":
        return np.tril(np.ones((size - 1, size)))  # {H <= g_j}, j < G - 1
    if kind == "binary":
        return np.eye(size)[1:]  # one event per non-reference level: {H = 1} on the grid {0, 1}
    if size > MAX_SUBSET_LEVELS:
        return np.eye(size)
    rest = range(1, size)  # subsets of the levels holding level 0, but not all of them: one per pair (A, complement)
    subsets = [(0, *c) for r in range(0, size - 1) for c in itertools.combinations(rest, r)]
    out = np.zeros((len(subsets), size))
    for i, s in enumerate(subsets):
        out[i, list(s)] = 1.0
    return out


def wilson(p: np.ndarray, n: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval for proportions ``p`` on (effective) sizes ``n`` with critical value ``q``."""
    p, n = np.asarray(p, dtype=np.float64), np.maximum(np.asarray(n, dtype=np.float64), _TINY)
    q2 = q * q
    centre = (p + q2 / (2 * n)) / (1 + q2 / n)
    half = q * np.sqrt(np.maximum(p * (1 - p), 0.0) / n + q2 / (4 * n * n)) / (1 + q2 / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def pool_intervals(q_hat: np.ndarray, q_reps: np.ndarray, df: float, g_star: float, ess: float) -> tuple[np.ndarray, np.ndarray]:
    """Intervals of the pool's event probabilities (E,) from their delete-one-context replicates (R, E).

    The hull of two: the clustered Wilson interval (n_eff = q (1 - q) / V_jackknife, never above
    ``ess``, the Kish effective sample size of the weights: a design effect below 1 comes from a
    sample that hides variance; n_eff = G* where the replicates show none), honest near 0 and 1; and
    the skewness-corrected jackknife interval (:func:`harness.stats.curve_intervals.jackknife_interval`),
    honest where the contexts' shares are skewed. Both use t(G* - 1).
    """
    q_hat = np.asarray(q_hat, dtype=np.float64)
    reps = np.asarray(q_reps, dtype=np.float64)
    r = reps.shape[0]
    var = (r - 1) / r * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0)
    inside = (q_hat > _TINY) & (q_hat < 1 - _TINY) & (var > _TINY**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.minimum(np.where(inside, q_hat * (1 - q_hat) / var, g_star), ess)
    lower, upper = wilson(q_hat, np.maximum(n_eff, _TINY), float(student_t.ppf(0.975, max(df, 1e-6))))
    for e in np.flatnonzero(inside):
        lo, hi = jackknife_interval(float(q_hat[e]), reps[:, e], df, "identity", 0.0, 1.0)
        lower[e], upper[e] = min(lower[e], lo), max(upper[e], hi)
    return lower, upper


def reference_intervals(p_hat: np.ndarray, n_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson intervals of the reference's event probabilities (i.i.d. rows)."""
    return wilson(p_hat, np.full(np.shape(p_hat), float(n_ref)), Z95)


def distance_interval(kind: str, p_hat: np.ndarray, q_hat: np.ndarray, p_iv, q_iv) -> tuple[float, float]:
    """[lower, upper] of TV or KS between reference events ``p_hat`` and pool events ``q_hat`` (see the module docstring)."""
    if p_hat.size == 0:
        return 0.0, 0.0
    diff = p_hat - q_hat
    low = diff - np.sqrt((p_hat - p_iv[0]) ** 2 + (q_iv[1] - q_hat) ** 2)
    high = diff + np.sqrt((p_iv[1] - p_hat) ** 2 + (q_hat - q_iv[0]) ** 2)
    abs_low = np.where(low > 0, low, np.where(high < 0, -high, 0.0))
    abs_high = np.maximum(np.abs(low), np.abs(high))
    if kind == "categorical" and p_hat.size > 1 and _singletons(p_hat.size):
        upper = min(float(np.sum(np.maximum(high, 0.0))), float(np.sum(np.maximum(-low, 0.0))))
        return float(abs_low.max()), min(upper, 1.0)
    return float(min(abs_low.max(), 1.0)), float(min(abs_high.max(), 1.0))


def _singletons(size: int) -> bool:
    """Whether a categorical feature's events are its single levels (too many levels for every subset)."""
    return size > MAX_SUBSET_LEVELS


def sum_of_ends(lowers: np.ndarray, uppers: np.ndarray, coefs: np.ndarray) -> tuple[float, float]:
    """Interval of sum_i c_i theta_i (c_i >= 0) of distances: [sum_i c_i l_i, sum_i c_i u_i].

    It covers whenever every component's interval does. MOVER (Zou 2008) would combine the margins
    in quadrature with the components' correlations, but a distance is a folded quantity: its
    plug-in bias is upward in every component (so the lower margins add), and near 0 the jackknife
    correlations of folded values are not those of the errors (a negative one shrank the upper end
    of an interpolated score below both components' truths: 0.92 at 40 contexts). Measured by
    :mod:`harness.testing.curve_calibration`.
    """
    c = np.asarray(coefs, dtype=np.float64)
    return float(c @ lowers), float(c @ uppers)
