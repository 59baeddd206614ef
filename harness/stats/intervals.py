"""95% intervals: Wilson (also with an effective n), percentile and basic bootstrap."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm
from scipy.stats import t as t_dist

Z95 = 1.959963984540054


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` (possibly effective, fractional) trials."""
    if not n or n <= 0 or not np.isfinite(p):
        return float("nan"), float("nan")
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def cluster_stretch(n_clusters: int, level: float = 0.95) -> float:
    """Few-cluster correction for a bootstrap spread: t_{C-1} over z quantiles times sqrt(C / (C - 1)).

    A cluster bootstrap's variance is (C - 1)/C times the unbiased cluster variance, and with C
    clusters that variance has C - 1 degrees of freedom (the CR1 + t(C - 1) rule of cluster-robust
    inference). With S = 1 and many rows the factor is 1 to three decimals.
    """
    if n_clusters is None or n_clusters < 2:
        return 1.0
    q = 1 - (1 - level) / 2
    return float(t_dist.ppf(q, n_clusters - 1) / norm.ppf(q) * np.sqrt(n_clusters / (n_clusters - 1)))


def critical(n_clusters: int | None, level: float = 0.95) -> float:
    """The quantile a clustered Wilson interval uses: t_{C-1} (z when C is unknown or huge)."""
    q = 1 - (1 - level) / 2
    if n_clusters is None or n_clusters < 2:
        return float(norm.ppf(q))
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
