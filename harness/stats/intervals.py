"""95% intervals: exact binomial (Clopper-Pearson, Korn-Graubard for clustered data), Wilson, MOVER
differences of proportions, percentile and basic bootstrap, and the few-cluster rules.

Few contexts. Nothing about the spread between contexts can be learned from one context, so no
interval is reported from fewer than :data:`MIN_CONTEXTS` (the ``too_few_contexts`` flag says so).
From 2 contexts on, a spread estimated from C contexts has C - 1 degrees of freedom: intervals use
t_{C-1} quantiles (Bell & McCaffrey 2002; Cameron, Gelbach & Miller 2008, "CR1 + t(G - 1)").
``benchmarks/calibration.py`` measures every interval at C = 2 .. 40 and S = 1, 8.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import norm
from scipy.stats import t as t_dist

Z95 = 1.959963984540054
# Fewest mimic contexts behind an interval: with one context the between-context variance, which
# is part of every estimand averaged over contexts, cannot be estimated at all.
MIN_CONTEXTS = 2


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` (possibly effective, fractional) trials."""
    if not n or n <= 0 or not np.isfinite(p):
        return float("nan"), float("nan")
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def clopper_pearson(x: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for ``x`` successes in ``n`` trials; ``x`` and ``n`` may be fractional.

    Fractional counts are the effective counts of the Korn-Graubard interval
    (:func:`korn_graubard`), computed by the same beta quantiles. Coverage is at least the level
    at every p (Clopper & Pearson 1934), including 0 of n and n of n, where a bootstrap sees no
    variance at all; at small n it is above the level because the binomial is discrete.
    """
    if not n or n <= 0 or not np.isfinite(x):
        return float("nan"), float("nan")
    x = min(max(float(x), 0.0), float(n))
    alpha = 1 - level
    lower = 0.0 if x <= 0 else float(beta_dist.ppf(alpha / 2, x, n - x + 1))
    upper = 1.0 if x >= n else float(beta_dist.ppf(1 - alpha / 2, x + 1, n - x))
    return lower, upper


def korn_graubard(p: float, n_effective: float, n_clusters: float, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson on the design-effect-adjusted, degrees-of-freedom-adjusted effective count.

    Korn & Graubard (1998, Survey Methodology 24: "Confidence intervals for proportions with small
    expected number of positive counts estimated from survey data"): n* = n_eff (z / t_{C-1})^2 with
    n_eff = n / deff, and the exact interval for p n* successes of n*. The NCHS presentation
    standard for proportions (Parker et al. 2017) uses it for clustered samples. With 2 contexts
    (t_1 = 12.7) the interval is close to [0, 1]: all that one degree of freedom supports.
    ``n_clusters`` may be the (fractional) effective number of clusters.
    """
    if n_clusters is None or n_clusters <= 1 + 1e-9 or not np.isfinite(n_effective) or n_effective <= 0:
        return float("nan"), float("nan")
    q = 1 - (1 - level) / 2
    n_star = n_effective * (norm.ppf(q) / t_dist.ppf(q, n_clusters - 1)) ** 2
    return clopper_pearson(p * n_star, n_star, level)


def mover_difference(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float]:
    """Interval for ``b - a`` from each proportion's own (point, lower, upper): MOVER.

    Newcombe (1998, Stat Med 17, method 10) and Zou & Donner (2008, Stat Med 27): the limits of a
    difference recovered from the two single-sample limits, which carry the skewness near 0 and 1
    that a symmetric interval (or a bootstrap of an all-zero sample) misses.
    """
    (pa, la, ua), (pb, lb, ub) = a, b
    d = pb - pa
    lower = d - np.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    upper = d + np.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return float(max(lower, -1.0)), float(min(upper, 1.0))


def folded(lower: float, upper: float) -> tuple[float, float]:
    """Interval for |d| from an interval [lower, upper] for d (it covers |d| whenever the first covers d)."""
    if lower >= 0:
        return lower, upper
    if upper <= 0:
        return -upper, -lower
    return 0.0, max(-lower, upper)


def clipped(lower: float, upper: float, low: float | None = None, high: float | None = None) -> tuple[float, float]:
    """An interval cut to the parameter's range: a parameter inside the range is covered exactly as before."""
    if low is not None:
        lower, upper = max(lower, low), max(upper, low)
    if high is not None:
        lower, upper = min(lower, high), min(upper, high)
    return float(lower), float(upper)


def cluster_stretch(n_clusters: float, level: float = 0.95) -> float:
    """Few-cluster correction for a bootstrap spread: t_{C-1} over z quantiles times sqrt(C / (C - 1)).

    A cluster bootstrap's variance is (C - 1)/C times the unbiased cluster variance, and with C
    clusters that variance has C - 1 degrees of freedom (the CR1 + t(C - 1) rule of cluster-robust
    inference). With S = 1 and many rows the factor is 1 to three decimals. At one cluster
    there is no such factor (NaN): the caller reports no interval.
    ``n_clusters`` may be fractional: the effective number of clusters
    (:attr:`harness.stats.bootstrap.Clusters.effective`), which is what the few-cluster callers pass.
    """
    if n_clusters is None or n_clusters < 1 + 1e-9:
        return float("nan")
    q = 1 - (1 - level) / 2
    return float(t_dist.ppf(q, n_clusters - 1) / norm.ppf(q) * np.sqrt(n_clusters / (n_clusters - 1)))


def critical(n_clusters: float | None, level: float = 0.95) -> float:
    """The two-sided quantile for a spread estimated from C (possibly effective, fractional) clusters:
    t_{C-1}; z when C is unknown; infinite at one cluster or fewer (no spread can be estimated)."""
    q = 1 - (1 - level) / 2
    if n_clusters is None:
        return float(norm.ppf(q))
    if n_clusters <= 1 + 1e-9:
        return float("inf")
    return float(t_dist.ppf(q, n_clusters - 1))


def percentile(draws: np.ndarray, level: float = 0.95, stretch: float = 1.0) -> tuple[float, float]:
    """Percentile bootstrap interval; undefined (NaN) resamples are dropped.

    ``stretch`` (see :func:`cluster_stretch`) widens the interval about the bootstrap median.
    """
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, mid, hi = np.quantile(draws, [alpha, 0.5, 1 - alpha])
    return float(mid - stretch * (mid - lo)), float(mid + stretch * (hi - mid))


def basic(point: float, draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Basic (reverse-percentile) bootstrap interval ``[2 t - q_hi, 2 t - q_lo]``.

    It subtracts the bootstrap's estimate of the bias, which a percentile interval adds a second
    time; distances (TV, W1) are biased upward, so this is the one that covers a planted shift.
    """
    lo, hi = percentile(draws, level)
    return float(2 * point - hi), float(2 * point - lo)


def boot_sd(draws: np.ndarray) -> float:
    """Standard deviation of the finite bootstrap draws."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    return float(draws.std(ddof=1)) if draws.size > 1 else float("nan")


def half_width(lower: float, upper: float) -> float:
    """Half the width of an interval (what ``mimic plan`` targets)."""
    return float((upper - lower) / 2)
