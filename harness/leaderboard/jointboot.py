"""One joint cluster bootstrap behind every synchronisation score, ranking and paired comparison.

Replicates. A *context* is one prompt: the run's seed, exemplar count, context id and the
exemplars it showed. Every context and every reference row gets one random weight per
replicate, drawn once for the whole section (all models, all cells): a context that two models
saw with the same exemplars carries the same weight for both, so their difference is paired,
and the reference rows carry the same weights in every cell and for every model, so reference
noise cancels in a difference. Each replicate recomputes every cell's plug-in distance from the
weighted samples, and every score from its cells.

The weights are Exp(1): the Bayesian bootstrap (Rubin 1981, Ann. Statist. 9:130), the smooth
form of resampling contexts with replacement. For a statistic that is smooth in the weighted
sums (as every distance here is, away from its kinks) it has the same linearised variance as
resampling C of C contexts (a count has mean 1, variance 1 - 1/C and covariance -1/C, which
cancels on centred influences), but no context is ever left out, so no cell is empty in a
replicate.

Interval. ``point +- t_{C-1, 0.975} sqrt(C / (C - 1)) sd(replicates)``, cut to the quantity's
range. A bootstrap variance is (C - 1)/C of the unbiased cluster variance (the CR1 factor
restores it) and a variance estimated from C clusters has C - 1 degrees of freedom: the
"CR1 + t(G - 1)" rule for few clusters (Cameron, Gelbach & Miller 2008, REStat 90:414; Cameron &
Miller 2015, J. Human Resources 50:317, sections VI.B-D). Percentile intervals of the same
replicates covered about 80% at 4 contexts. C is the number of contexts behind the number; a
difference uses the smaller side's C (a conservative Welch-type choice when the sides are not
paired). Fewer than 2 contexts: no interval (``too_few_contexts``); replicates without spread:
no interval (``no_variance``). ``benchmarks/planted_null.py`` measures the false-decision rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.stats import t as t_dist

from harness.leaderboard import latents as lt
from harness.records import Manifest
from harness.stats.bootstrap import Clusters, chunk_sizes
from harness.stats.common import feature_kind, valid
from harness.stats.distances import code_values, distance
from harness.stats.flags import NO_VARIANCE, TOO_FEW_CONTEXTS, no_interval_reason

SCORE_BOOT = 1000  # replicates: the sd of 1000 replicates is within ~4.5% of its limit (95%)
MIN_CONTEXTS = 2  # one context shows nothing of the spread between contexts
# Reference weight matrices up to this many elements are kept; larger ones are redrawn per cell.
_CACHE_ELEMENTS = 8_000_000


def context_keys(draws: pl.DataFrame, run_id: str, seed: Any) -> pl.Series:
    """One key per draw naming its context: seed, exemplar count, context id and exemplars.

    Two runs whose contexts share a key showed the same prompt, so their draws are paired. A
    table without ``exemplar_ids`` cannot show that: its contexts are keyed by the run. Pools of
    one run share a context id's exemplars (harness.prompts), so the key leaves the pool out.
    """
    if "exemplar_ids" in draws.columns:
        owner = pl.lit(f"seed:{seed}")
        exemplars = pl.col("exemplar_ids").cast(pl.List(pl.Utf8)).list.join(",").fill_null("")
    else:
        owner, exemplars = pl.lit(f"run:{run_id}"), pl.lit("")
    n_ex = pl.col("n_exemplars").cast(pl.Utf8).fill_null("") if "n_exemplars" in draws.columns else pl.lit("")
    context = pl.col("context_id").cast(pl.Utf8).fill_null("") if "context_id" in draws.columns else pl.int_range(pl.len()).cast(pl.Utf8)
    return draws.select(pl.concat_str([owner, n_ex, context, exemplars], separator="|").alias("_key")).to_series()


def side_draws(runs: Sequence[Manifest], draws: Mapping[str, pl.DataFrame]) -> pl.DataFrame | None:
    """The draws of one side (a model's runs) pooled, with a context key; None when a run lacks them."""
    frames = []
    for m in runs:
        frame = draws.get(str(m.run_id))
        if frame is None or "pool" not in frame.columns:
            return None  # one run without draws: the side cannot be resampled as a whole
        frames.append(frame.with_columns(context_keys(frame, str(m.run_id), m.seed)))
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


@dataclass(frozen=True)
class Replicates:
    """A plug-in value, its bootstrap replicates and the contexts (key indices) behind it."""

    point: float
    replicates: np.ndarray
    contexts: frozenset[int]

    @property
    def n_contexts(self) -> int:
        """Number of contexts behind the value."""
        return len(self.contexts)


@dataclass(frozen=True)
class Spread:
    """A point with its few-cluster interval, or none and the flag and words saying why."""

    point: float
    lower: float | None
    upper: float | None
    contexts: int
    flags: tuple[str, ...] = ()
    reason: str | None = None


def few_cluster_interval(point: float, replicates: np.ndarray, contexts: int, low: float, high: float) -> Spread:
    """``point +- t_{C-1} sqrt(C/(C-1)) sd`` cut to [low, high] (see the module docstring)."""
    if contexts < MIN_CONTEXTS:
        return Spread(point, None, None, contexts, (TOO_FEW_CONTEXTS,), no_interval_reason(TOO_FEW_CONTEXTS, contexts, MIN_CONTEXTS))
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    sd = float(reps.std(ddof=1)) if reps.size > 1 else float("nan")
    if not np.isfinite(sd) or sd <= 1e-12:
        return Spread(point, None, None, contexts, (NO_VARIANCE,), "no variance")
    # CR1 + t(C - 1) (Cameron, Gelbach & Miller 2008): see the module docstring
    half = float(t_dist.ppf(0.975, contexts - 1) * np.sqrt(contexts / (contexts - 1)) * sd)
    return Spread(point, max(low, min(high, point - half)), min(high, max(low, point + half)), contexts)


def difference(a: Replicates, b: Replicates, low: float = -1.0, high: float = 1.0) -> Spread:
    """a - b from the shared replicates, with the smaller side's context count."""
    return few_cluster_interval(a.point - b.point, a.replicates - b.replicates, min(a.n_contexts, b.n_contexts), low, high)


def cell_value(d: np.ndarray | float) -> np.ndarray | float:
    """A score cell from a plug-in distance: 1 - min(1, d)."""
    return 1.0 - np.minimum(1.0, d)


def mean_score(cells: Sequence[Replicates]) -> Replicates:
    """A score from its cells' plug-in distances: the mean of 1 - min(1, d), replicate by replicate."""
    return Replicates(float(np.mean([cell_value(r.point) for r in cells])),
                      np.mean([cell_value(r.replicates) for r in cells], axis=0),
                      frozenset().union(*(r.contexts for r in cells)))


class JointBootstrap:
    """Shared bootstrap weights for several sides (models) of one section, and the replicates they give."""

    def __init__(self, info: lt.TaskInfo, reference: pl.DataFrame, sides: Mapping[str, pl.DataFrame],
                 n_boot: int = SCORE_BOOT, seed: int = 0):
        keys = sorted(set().union(*(set(frame["_key"].to_list()) for frame in sides.values())))
        index = {k: i for i, k in enumerate(keys)}
        self.keys, self.info, self.n_boot, self.seed = keys, info, int(n_boot), int(seed)
        self.sides = {name: frame.with_columns(pl.col("_key").replace_strict(index, return_dtype=pl.Int64).alias("_ctx"))
                      for name, frame in sides.items()}
        self.reference = reference.with_row_index("_ref_row")
        self.context_weights = np.random.default_rng([self.seed, 0]).exponential(size=(self.n_boot, len(keys)))
        self._blocks = list(chunk_sizes(self.n_boot, max(1, reference.height)))
        small = self.n_boot * reference.height <= _CACHE_ELEMENTS
        self._ref_cache = [self._draw_reference(i, b) for i, b in enumerate(self._blocks)] if small else None
        self._cells: dict[tuple[str, str, str], Replicates | None] = {}
        self._kinds: dict[str, str] = {}
        self._frames: dict[tuple[str | None, str], pl.DataFrame | None] = {}

    def _draw_reference(self, block: int, size: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 1, block]).exponential(size=(size, self.reference.height))

    def _reference_blocks(self) -> Iterable[tuple[int, np.ndarray]]:
        start = 0
        for i, size in enumerate(self._blocks):
            yield start, (self._ref_cache[i] if self._ref_cache is not None else self._draw_reference(i, size))
            start += size

    def paired(self, a: str, b: str) -> bool:
        """Whether the two sides share at least one context (the same prompt shown to both)."""
        return bool(set(self.sides[a]["_ctx"].to_list()) & set(self.sides[b]["_ctx"].to_list()))

    def kind(self, latent: str) -> str:
        """The latent's kind, read from the reference and every side together (as the estimator reads it)."""
        if latent not in self._kinds:
            column = f"feat_{latent}"
            cols = [self.reference[column], *(f[column] for f in self.sides.values() if column in f.columns)]
            self._kinds[latent] = feature_kind(*cols)
        return self._kinds[latent]

    def cell(self, side: str, condition: str, latent: str) -> Replicates | None:
        """The plug-in distance of one (condition, latent) cell for one side, and its replicates.

        None when the cell cannot be rebuilt from the draws or has fewer than 2 items on either
        side (the ``latent_shift`` estimator's rule: the cell was not measured).
        """
        key = (side, condition, latent)
        if key not in self._cells:
            self._cells[key] = self._compute(side, condition, latent)
        return self._cells[key]

    def _compute(self, side: str, condition: str, latent: str) -> Replicates | None:
        column = f"feat_{latent}"
        if column not in self.reference.columns or not lt.rebuildable(condition):
            return None
        ref, rows = self._rows(None, condition), self._rows(side, condition)
        if ref is None or rows is None or column not in rows.columns:
            return None
        ref, rows = valid(ref, latent), valid(rows, latent)
        if ref.height < 2 or rows.height < 2:
            return None
        kind = self.kind(latent)
        grid, (rc, mc) = code_values(kind, lt.values_of(ref, latent, kind), lt.values_of(rows, latent, kind))
        size = grid.size
        ref_onehot = sp.csr_matrix((np.ones(rc.size), (np.arange(rc.size), rc)), shape=(rc.size, size))
        contexts, local = np.unique(rows["_ctx"].to_numpy(), return_inverse=True)
        clusters = Clusters.build(local.ravel(), None, mc.size)
        per_context = clusters.sums(sp.csr_matrix((np.ones(mc.size), (np.arange(mc.size), mc)), shape=(mc.size, size))).toarray()
        p = np.bincount(rc, minlength=size) / rc.size
        q = np.bincount(mc, minlength=size) / mc.size
        point = float(distance(kind, grid, (p - q)[None, :], p[None, :])[0])
        ref_rows, parts = ref["_ref_row"].to_numpy(), []
        for start, w_ref in self._reference_blocks():
            pr = np.ascontiguousarray(np.asarray(ref_onehot.T @ w_ref[:, ref_rows].T).T)  # row-major: distances cumsum along rows
            pr /= pr.sum(axis=1, keepdims=True)
            qm = self.context_weights[start : start + pr.shape[0]][:, contexts] @ per_context
            qm /= qm.sum(axis=1, keepdims=True)
            parts.append(distance(kind, grid, pr - qm, pr))
        return Replicates(point, np.concatenate(parts), frozenset(int(c) for c in contexts))

    def _rows(self, side: str | None, condition: str) -> pl.DataFrame | None:
        """A condition's reference rows (side None) or a side's draws, kept across latents."""
        if (side, condition) not in self._frames:
            self._frames[(side, condition)] = (lt.reference_rows(self.reference, self.info, condition) if side is None
                                               else lt.condition_rows(self.sides[side], self.info, condition))
        return self._frames[(side, condition)]

    def score(self, side: str, cells: Iterable[tuple[str, str]]) -> tuple[Replicates | None, list[tuple[str, str]]]:
        """The side's score over the cells it was measured on (mean of 1 - min(1, d)) and those cells."""
        measured = [(c, r) for c in cells if (r := self.cell(side, *c)) is not None]
        if not measured:
            return None, []
        return mean_score([r for _, r in measured]), [c for c, _ in measured]
