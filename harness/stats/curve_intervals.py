"""Few-cluster 95% intervals for the curves (Goodhart curve and score, synchronisation curve), or none.

Every statistic of a curve is a smooth function of weighted sums over the mimic's contexts,
recomputed as a whole when a context is left out. The interval:

- **The delete-one-context jackknife.** theta_(c) is the statistic with context c left out (weights
  renormalised, tilts and best-of-n levels recomputed); its variance estimate
  (C-1)/C sum_c (theta_(c) - mean)^2 is the CV3 cluster-robust variance that MacKinnon, Nielsen &
  Webb (2023, "Cluster-robust inference: a guide to empirical practice", J. Econometrics 232:272-299)
  recommend for few or unbalanced clusters, with t(G - 1) critical values.
- **Degrees of freedom: G* - 1** with G* = (sum_c W_c^2)^2 / sum_c W_c^4, W_c = the context's share of
  the point's weight: the effective number of clusters of Carter, Schnepel & Steigerwald (2017,
  "Asymptotic behavior of a t-test robust to cluster heterogeneity", REStat 99:698-709) under a
  working model where a context's contribution scales with its weight. Equal weights give G* = C; a
  tilt that rests on three contexts has G* near 3, however many contexts the pool has.
- **Skewness.** Contexts differ a lot (a context's outputs are one mixture), so a statistic's
  pseudo-values C theta - (C-1) theta_(c) (Tukey 1958) are skewed and a symmetric t interval
  misses on one side (a share of 0.24 at 8 contexts: 0.90). The studentised mean of the
  pseudo-values is made symmetric by Hall's (1992) transformation (:func:`skew_corrected_mean`).
- **Scale**: the interval is built for g(theta), g = logit on [low, high] for a quantity bounded on
  both sides (a tilt's KL, in [0, 1/beta]) or the identity, then mapped back and cut to the
  quantity's range (cutting is harmless to coverage: the true value lies in the range). Proportions
  and distances: :mod:`harness.stats.curve_events`.
- **Withheld** (``lower``/``upper`` NaN, flag and reason in the note; :func:`harness.stats.flags.withheld`):
  fewer than 2 contexts or fewer effective contexts G* than ``MIN_EFFECTIVE_CONTEXTS``, or a
  replicate that is undefined (leaving a context out empties the selection): ``too_few_contexts``
  (the score says ``insufficient_data``); every replicate equal (``no_variance``: the sample shows
  no variance, e.g. a latent's mean when every context wrote the same value).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import t as student_t

from harness.stats import flags as F

# Fewer effective contexts than this: no interval. At G* < 2 the t quantile has under one degree
# of freedom and the jackknife rests on one context (harness.testing.curve_calibration).
MIN_EFFECTIVE_CONTEXTS = 2.0
_TINY = 1e-12


def delete_one_context(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(C, N) row multiplicities of the C delete-one-context samples (row i drops out of its own context's)."""
    labels = np.asarray(labels)
    return (labels[None, :] != np.arange(n_clusters)[:, None]).astype(np.float64)


def effective_contexts(weights: np.ndarray, labels: np.ndarray, n_clusters: int) -> float:
    """G* = (sum_c W_c^2)^2 / sum_c W_c^4 over the contexts' total weights (Carter, Schnepel & Steigerwald 2017)."""
    totals = np.bincount(np.asarray(labels), weights=np.asarray(weights, dtype=np.float64), minlength=n_clusters)
    squares = totals**2
    return float(squares.sum() ** 2 / np.sum(squares**2)) if squares.any() else 0.0


def jackknife_variance(replicates: np.ndarray) -> float:
    """(R-1)/R sum_r (theta_r - mean)^2 over R replicates; NaN when a replicate is undefined or R < 2."""
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.size < 2 or not np.all(np.isfinite(reps)):
        return math.nan
    return float((reps.size - 1) / reps.size * np.sum((reps - reps.mean()) ** 2))


def jackknife_bias(point: float, replicates: np.ndarray) -> float:
    """The jackknife's estimate of the plug-in's bias, (R-1)(mean_r theta_r - theta)."""
    reps = np.asarray(replicates, dtype=np.float64)
    return float((reps.size - 1) * (reps.mean() - point)) if reps.size > 1 else math.nan


def pseudo_values(point: float, replicates: np.ndarray) -> np.ndarray:
    """Tukey's pseudo-values C theta - (C-1) theta_(c): their mean is the bias-corrected value, their variance / C the jackknife's."""
    reps = np.asarray(replicates, dtype=np.float64)
    return reps.size * point - (reps.size - 1) * reps


def skew_corrected_mean(values: np.ndarray, df: float | None = None, level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of C independent values whose distribution is skewed: Hall's (1992) transformation.

    The studentised mean T = (x - mu) / (s / sqrt(C)) is skewed when the values are. Hall (1992,
    "On the removal of skewness by transformation", JRSS B 54:221-228) maps T by
    g(T) = T + a T^2 + a^2 T^3 / 3 + b, a = gamma / (3 sqrt(C)), b = gamma / (6 sqrt(C)), gamma the
    adjusted sample skewness G1 (Joanes & Gill 1998, JRSS D 47:183-189; the moment estimator is
    biased towards 0 at few values), which is close to symmetric; inverting g at the t(df) quantiles (df = C - 1 by
    default) gives the interval (the plain t interval when gamma = 0).
    """
    x = np.asarray(values, dtype=np.float64)
    c = x.size
    mean, sd, biased = float(x.mean()), float(x.std(ddof=1)), float(x.std(ddof=0))
    gamma = float(np.mean((x - mean) ** 3) / biased**3) if biased > 0 and c > 2 else 0.0
    gamma *= math.sqrt(c * (c - 1)) / (c - 2) if c > 2 else 0.0  # the adjusted sample skewness G1 (Joanes & Gill 1998)
    a, b = gamma / (3 * math.sqrt(c)), gamma / (6 * math.sqrt(c))
    q = float(student_t.ppf(0.5 + level / 2, max(df if df is not None else c - 1, 1e-6)))

    def inverse(y: float) -> float:
        return y - b if abs(a) < 1e-9 else float((np.cbrt(1 + 3 * a * (y - b)) - 1) / a)

    se = sd / math.sqrt(c)
    return mean - se * inverse(q), mean - se * inverse(-q)


def withheld_flag(contexts: int, g_star: float, replicates: np.ndarray | None) -> str | None:
    """The reason a row gets no interval (a flag of :mod:`harness.stats.flags`), or None."""
    if contexts < 2 or g_star < MIN_EFFECTIVE_CONTEXTS or replicates is None or not np.all(np.isfinite(replicates)):
        return F.TOO_FEW_CONTEXTS
    if np.ptp(replicates) <= _TINY:
        return F.NO_VARIANCE
    return None


def jackknife_interval(point: float, replicates: np.ndarray, df: float, scale: str = "identity", low: float = -math.inf,
                       high: float = math.inf, var_floor: float = 0.0) -> tuple[float, float]:
    """95% interval from delete-one-context replicates: Hall-corrected t on the pseudo-values of g(theta), in [low, high].

    ``scale``: ``log`` (g = log(theta - low)), ``logit`` (on (low, high)) or ``identity``.
    ``var_floor``: the least credible variance of theta (e.g. the i.i.d. variance over the Kish
    effective sample size: a design effect below 1 comes from a sample that hides variance); the
    pseudo-values' spread is widened to reach it.
    """
    g, inverse, slope = _transform(scale, low, high)
    inside = low + _TINY < point < high - _TINY
    if scale != "identity" and not inside:
        g, inverse, slope = _transform("identity", low, high)
    values = pseudo_values(g(point), g(np.asarray(replicates, dtype=np.float64)))
    var = float(np.var(values, ddof=1)) / values.size
    floor = var_floor * slope(point) ** 2
    if 0 < var < floor:
        values = values.mean() + (values - values.mean()) * math.sqrt(floor / var)
    lower, upper = skew_corrected_mean(values, df)
    lower, upper = inverse(lower), inverse(upper)
    return max(min(lower, point), low), min(max(upper, point), high)


def _transform(scale: str, low: float, high: float):
    """(g, g^-1, g') of an interval scale."""
    if scale == "log":
        return (lambda x: np.log(np.maximum(x - low, 1e-300)), lambda y: low + math.exp(y), lambda x: 1.0 / (x - low))
    if scale == "logit":
        span = high - low

        def g(x):
            u = np.clip((np.asarray(x) - low) / span, 1e-12, 1 - 1e-12)
            return np.log(u / (1 - u))
        return g, lambda y: low + span * _expit(y), lambda x: span / ((x - low) * (high - x))
    return (lambda x: x), (lambda y: float(y)), (lambda x: 1.0)


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
