"""One resampling engine for every estimator: weighted rows grouped in clusters (contexts).

A bootstrap resample draws C clusters with replacement out of C; a row's weight in the resample
is its original weight times the number of times its cluster was drawn. Reference rows are
i.i.d.: each row is its own cluster. Every statistic here is a ratio of weighted sums, so a
resample is a matrix product ``counts (b x C) @ cluster_sums (C x d)``: no loop over rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from harness.stats.intervals import boot_sd

# Largest dense block (elements) built at once; keeps memory flat for million-row inputs.
BLOCK_ELEMENTS = 4_000_000


def chunk_sizes(total: int, width: int, block: int = BLOCK_ELEMENTS) -> Iterator[int]:
    """Split ``total`` resamples into chunks whose ``chunk x width`` matrices fit in ``block`` elements."""
    step = max(1, block // max(1, width))
    done = 0
    while done < total:
        b = min(step, total - done)
        yield b
        done += b


def resample_counts(rng: np.random.Generator, n_clusters: int, b: int) -> np.ndarray:
    """``b`` bootstrap resamples of ``n_clusters`` clusters: a (b, C) matrix of draw counts.

    Drawing indices and counting them with one offset ``bincount`` is the fastest exact way to
    get multinomial(C, uniform) counts for many resamples at once.
    """
    idx = rng.integers(0, n_clusters, size=(b, n_clusters))
    idx += (np.arange(b) * n_clusters)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n_clusters).reshape(b, n_clusters).astype(np.float64)


@dataclass(frozen=True)
class Clusters:
    """Rows with weights, grouped into clusters labelled 0..C-1."""

    labels: np.ndarray  # (n,) int cluster label per row
    weights: np.ndarray  # (n,) float, > 0
    n_clusters: int
    _members: sp.csr_matrix = field(repr=False, compare=False, default=None)

    @classmethod
    def build(cls, labels: np.ndarray | None, weights: np.ndarray | None, n: int) -> Clusters:
        """Clusters from any hashable labels (None: every row its own cluster) and weights (None: equal)."""
        if labels is None:
            codes = np.arange(n)
        else:
            _, codes = np.unique(np.asarray(labels), return_inverse=True)
            codes = codes.ravel()
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
        n_clusters = int(codes.max()) + 1 if n else 0
        members = sp.csr_matrix((w, (codes, np.arange(n))), shape=(n_clusters, n))
        return cls(codes.astype(np.int64), w, n_clusters, members)

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.labels.shape[0])

    @property
    def singleton(self) -> bool:
        """True when every cluster holds one row (the i.i.d. case, S = 1)."""
        return self.n_clusters == self.n

    @property
    def uniform(self) -> bool:
        """True when all weights are equal."""
        return self.n == 0 or bool(np.allclose(self.weights, self.weights[0]))

    @property
    def ess(self) -> float:
        """Kish effective sample size of the weights."""
        w = self.weights
        return float(w.sum() ** 2 / np.sum(w * w)) if self.n else 0.0

    @property
    def effective(self) -> float:
        """Effective number of clusters, (sum_c W_c)^2 / sum_c W_c^2 over the clusters' total weights.

        Clusters of very unequal size carry fewer degrees of freedom than their count (Carter,
        Schnepel & Steigerwald 2017, "Asymptotic behavior of a t-test robust to cluster
        heterogeneity", REStat 99: the effective number of clusters G*; this is its bound at full
        intra-cluster correlation). Equal clusters give C.
        """
        if self.n == 0:
            return 0.0
        totals = np.bincount(self.labels, weights=self.weights, minlength=self.n_clusters)
        return float(totals.sum() ** 2 / np.sum(totals**2))

    def rows(self) -> Clusters:
        """The same rows and weights with every row its own cluster (for design effects)."""
        return Clusters.build(None, self.weights, self.n)

    def sums(self, values: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
        """Weighted sums per cluster: (C, d) from per-row values (n, d); sparse stays sparse."""
        out = self._members @ values
        return out.tocsr() if sp.issparse(out) else np.asarray(out)

    def boot_sums(self, rng: np.random.Generator, values: np.ndarray, n_boot: int) -> np.ndarray:
        """Weighted column sums of ``values`` (n, d) in each of ``n_boot`` resamples: (n_boot, d)."""
        per_cluster = self.sums(np.asarray(values, dtype=np.float64).reshape(self.n, -1))
        out, c = [], self.n_clusters
        for b in chunk_sizes(n_boot, c):
            idx = rng.integers(0, c, size=(b, c))  # the same draws resample_counts would count
            if per_cluster.shape[1] <= 8:  # few columns: gathering the drawn clusters' sums is cheapest
                out.append(np.stack([col[idx].sum(axis=1) for col in per_cluster.T], axis=1))
            else:
                idx += (np.arange(b) * c)[:, None]
                counts = np.bincount(idx.ravel(), minlength=b * c).reshape(b, c).astype(np.float64)
                out.append(counts @ per_cluster)
        return np.vstack(out) if out else np.zeros((0, per_cluster.shape[1]))


def linear_deff(psi: np.ndarray, clusters: Clusters, domain: np.ndarray | None = None) -> float:
    """Design effect of a statistic whose influence values (linearisation) per row are ``psi``.

    The cluster-robust variance C/(C-1) sum_c (sum_{i in c} w_i psi_i)^2 over the same formula
    with every row its own cluster; exactly 1 when S = 1. Rows outside ``domain`` count for
    nothing (psi = 0 there) and neither do clusters without domain rows.
    """
    domain = np.ones(clusters.n) if domain is None else domain
    e = clusters.weights * domain * psi
    per_cluster = np.bincount(clusters.labels, weights=e, minlength=clusters.n_clusters)
    c = int(np.count_nonzero(np.bincount(clusters.labels, weights=domain, minlength=clusters.n_clusters)))
    n = int(np.count_nonzero(domain))
    if c < 2 or n < 2:
        return float("nan")
    v_cl = c / (c - 1) * float(np.sum(per_cluster**2))
    v_iid = n / (n - 1) * float(np.sum(e**2))
    return v_cl / v_iid if v_iid > 0 else 1.0


def ratio_deff(y: np.ndarray, d: np.ndarray, clusters: Clusters) -> tuple[float, float]:
    """Point and design effect of the weighted proportion ``p = sum(w d y) / sum(w d)``.

    ``d`` marks the rows in the domain (e.g. R = 1 rows for the forcing mass); the influence of
    a row is y - p. A user trades contexts against samples with the design effect (``mimic plan``).
    """
    w = clusters.weights * d
    total = w.sum()
    if total <= 0:
        return float("nan"), float("nan")
    p = float((w * y).sum() / total)
    deff = linear_deff(y - p, clusters, d)
    return p, (1.0 if not np.isfinite(deff) else deff)


def two_sample(rng: np.random.Generator, stat, ref: Clusters, ref_values: np.ndarray, mim: Clusters,
               mim_values: np.ndarray, n_boot: int) -> tuple[float, np.ndarray, float, float]:
    """Point, bootstrap draws, and the spreads from each side alone, of ``stat(ref_sums, mim_sums)``.

    ``stat`` maps two (b, d) matrices of weighted column sums to b values (a mean, a correlation,
    a difference of them). Both sides are resampled independently, each by its own clusters; the
    one-side spreads (the other side held at its sample values) tell ``mimic plan`` how much of
    the width more mimic draws can remove.
    """
    ref_values = np.asarray(ref_values, dtype=np.float64).reshape(ref.n, -1)
    mim_values = np.asarray(mim_values, dtype=np.float64).reshape(mim.n, -1)
    ref_total, mim_total = (ref.weights @ ref_values)[None, :], (mim.weights @ mim_values)[None, :]
    point = float(stat(ref_total, mim_total)[0])
    mim_draws = mim.boot_sums(rng, mim_values, n_boot)
    ref_draws = ref.boot_sums(rng, ref_values, n_boot)
    sd_ref = boot_sd(stat(ref_draws, np.broadcast_to(mim_total, ref_draws.shape)))
    sd_mim = boot_sd(stat(np.broadcast_to(ref_total, mim_draws.shape), mim_draws))
    return point, stat(ref_draws, mim_draws), sd_ref, sd_mim


def jackknife_factor(stat, ref: Clusters, ref_values: np.ndarray, mim: Clusters, mim_values: np.ndarray,
                     sd_mim: float) -> float:
    """How much wider than the mimic side's bootstrap spread (times CR1) its cluster jackknife spread is (>= 1).

    The delete-one-cluster jackknife variance (CV3; MacKinnon, Nielsen & Webb 2023, "Cluster-robust
    inference: a guide to empirical practice", J. Econometrics 232) is the recommended few-cluster
    variance and errs on the large side; the cluster bootstrap's is close to CR1's, which is too small
    where a few contexts carry most rows. Callers widen their interval by this factor.
    """
    c = mim.n_clusters
    if c < 3 or not np.isfinite(sd_mim) or sd_mim <= 0:
        return 1.0
    per = np.asarray(mim.sums(np.asarray(mim_values, dtype=np.float64).reshape(mim.n, -1)))
    loo = per.sum(axis=0)[None, :] - per
    ref_total = ref.weights @ np.asarray(ref_values, dtype=np.float64).reshape(ref.n, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = stat(np.broadcast_to(ref_total, loo.shape), loo)
    values = values[np.isfinite(values)]
    if values.size < 3:
        return 1.0
    var_jack = (values.size - 1) / values.size * float(np.sum((values - values.mean()) ** 2))
    return max(1.0, float(np.sqrt(var_jack / (sd_mim**2 * c / (c - 1)))))
