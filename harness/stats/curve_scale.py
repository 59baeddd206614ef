"""One bounded scale for the curves' distances (Goodhart curve and score, synchronisation curve).

Every latent's distance lies in [0, 1] and reads the same way: the largest difference in
probability that the two distributions give to one event.

- categorical and binary features: total variation, TV = max_A |P(A) - Q(A)| = 0.5 sum_k |p_k - q_k|
  over all events A;
- numeric features: the Kolmogorov-Smirnov distance, KS = max_t |P(H <= t) - Q(H <= t)|: the same
  maximum over the events an ordered feature is read by, {H <= t}. A binary feature has KS = TV.

Why KS and not W1 of probability-integral-transformed values (also in [0, 1]): W1 after the PIT
through the reference CDF gives no weight to values the reference never shows (they all map to the
same PIT value), so a tilt towards an unseen length would not move it; KS sees every value, and
matches TV on binary features, so the Goodhart score averages one quantity. W1/IQR (the latent-shift
estimator's numeric distance) is unbounded: one numeric latent could dominate a mean with TVs.

Squared forms (the synchronisation curve's per-context rows need an exactly unbiased estimator,
which TV and KS do not have): d2 = sum_j w_j (P(A_j) - Q(A_j))^2 with
- categorical/binary: A_j the cells, w_j = 1/2 (half the squared L2 distance; <= TV^2, = TV^2 for binary);
- numeric: A_j = {H <= g_j}, w_j = the reference's mass at g_j: the Cramer-von Mises distance
  int (F_P - F_Q)^2 dF (Cramer 1928, von Mises 1931); <= KS^2.
Both lie in [0, 1], so sqrt(d2) is on the distances' scale.
"""

from __future__ import annotations

import numpy as np

DISTANCE_NAMES = {"numeric": "ks", "categorical": "tv", "binary": "tv"}
SQUARED_NAMES = {"numeric": "cvm", "categorical": "half-l2sq", "binary": "half-l2sq"}


def events(kind: str, mass: np.ndarray) -> np.ndarray:
    """Event probabilities of masses (..., G): the cells (categorical/binary) or P(H <= g_j), j < G - 1 (numeric)."""
    return np.cumsum(mass, axis=-1)[..., :-1] if kind == "numeric" else mass


def bounded_distance(kind: str, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise distance in [0, 1] between masses ``p`` and ``q`` (b, G) on one grid: TV, or KS for numeric."""
    diff = np.atleast_2d(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64))
    if kind != "numeric":
        return np.minimum(0.5 * np.abs(diff).sum(axis=1), 1.0)
    if diff.shape[1] < 2:
        return np.zeros(diff.shape[0])
    return np.minimum(np.abs(np.cumsum(diff, axis=1)[:, :-1]).max(axis=1), 1.0)


def squared_weights(kind: str, ref_mass: np.ndarray) -> np.ndarray:
    """Weights w_j of d2 = sum_j w_j (P(A_j) - Q(A_j))^2 on :func:`events` (see the module docstring)."""
    ref_mass = np.asarray(ref_mass, dtype=np.float64)
    if kind == "numeric":
        return ref_mass[:-1].copy()
    return np.full(ref_mass.shape[-1], 0.5)
