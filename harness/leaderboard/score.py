"""The synchronisation score and the ranking built on it.

Definition (``SCORE_DEFINITION``, shown on the site). The task's cells are (``prompt:<v>`` and
``filter:<v>`` for the controls it has) x its latents. A model is *measured* on a cell when its
draws hold at least 2 items with Z' = v and the latent (and the reference at least 2 with
Z = v): the ``latent_shift`` estimator's rule. In each measured cell let d be the plug-in latent
shift recomputed from the draws (TV for categorical and binary latents, W1 over the reference
IQR for numeric ones), and

    s_cell = 1 - min(1, d)          score = mean of s_cell over the measured cells.

Unmeasured cells are left out of the score and counted beside it (n measured / n cells); they
are not a certain 0. The plug-in, not a debiased value: a distance from few draws is biased
upward, so noise can only lower a cell, never lift it to a perfect 1 (a debiased shift from a
stretched null did exactly that). The price is that the score depends on the run's design
(contexts x samples): it is the score *at that design*, and it rises with more draws. Models run
with the same plan are compared fairly; the interval is for the expected score at the design.

Interval: one joint cluster bootstrap of the whole score (:mod:`harness.leaderboard.jointboot`):
contexts and reference rows are reweighted, every cell recomputed in each replicate, and
``score +- t_{C-1} sqrt(C/(C-1)) sd`` cut to [0, 1], C the contexts behind the score. Runs of
one model (several seeds) are pooled into one sample of contexts. No interval, and no rank, with
fewer than 2 contexts (``too_few_contexts``) or when a run's draws or the reference table were
not saved (``insufficient_data``; the point then averages the estimates' plug-in points).

Ranking: the same replicates give every paired difference of two models' scores (a context
both saw with the same exemplars has one weight; the reference weights are shared). A model's
rank is 1 + the number of models whose score is *decided* better (the difference's interval
excludes 0); models share a rank otherwise, shown as ``1=``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from harness.leaderboard import jointboot as jb
from harness.leaderboard import latents as lt
from harness.records import EstimateNote, Manifest
from harness.stats.flags import INSUFFICIENT_DATA, describe

# Names of the built-in estimators (harness.builtin.estimators) the score and charts read; compared
# after normalising (lower case, '-' and ' ' read as '_').
SHIFT_ESTIMATORS = frozenset({"latent_shift"})
TRANSFER_ESTIMATORS = frozenset({"transfer_gap"})
FORCING_ESTIMATORS = frozenset({"forcing_mass"})
SCORED_PREFIXES = ("prompt:", "filter:")
SCORE_DEFINITION = (
    "mean, over the task's (prompt:<v> | filter:<v>) x latent cells the model was measured on, of 1 - min(1, d), d the plug-in "
    "latent shift (TV, or W1 over the reference IQR) recomputed from the draws; cells not measured (fewer than 2 items) are left "
    "out and counted (n measured / n cells). Noise raises a plug-in distance, so it can only lower a cell; the score is for the "
    "run's design (contexts x samples) and rises with more draws. Interval: one joint cluster bootstrap over contexts and "
    "reference rows recomputing every cell, score +- t(C-1) sqrt(C/(C-1)) sd, cut to [0, 1]; none (and no rank) below 2 "
    "contexts or without saved draws. Models share a rank unless their paired score difference is decided (its interval excludes 0)."
)
_NO_DRAWS = "the runs' draws or reference table were not saved, so the score cannot be resampled"
_NO_COMMON_CELL = "no score cell was measured on both sides"
_NOT_REBUILT = "the saved draws cannot rebuild the score's cells (proxy or latent columns missing), so the score cannot be resampled"


def norm_name(name: Any) -> str:
    """Estimator names compared loosely: ``Latent-Shift`` and ``latent_shift`` are one name."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95% interval (ends may be None when unknown)."""

    point: float | None
    lower: float | None
    upper: float | None

    def as_dict(self) -> dict[str, float | None]:
        """JSON form: ``{point, lower, upper}``."""
        return {"point": self.point, "lower": self.lower, "upper": self.upper}

    @property
    def contains_zero(self) -> bool:
        """Whether 0 lies inside the interval (unknown ends count as containing it)."""
        return self.lower is None or self.upper is None or self.lower <= 0 <= self.upper


def difference(a: Interval, b: Interval) -> Interval:
    """a - b with the conservative interval [l_a - u_b, u_a - l_b] (sd(A - B) <= sd(A) + sd(B))."""
    point = None if a.point is None or b.point is None else a.point - b.point
    if None in (a.lower, a.upper, b.lower, b.upper):
        return Interval(point, None, None)
    return Interval(point, a.lower - b.upper, a.upper - b.lower)


def is_scored(estimator: str, condition: str) -> bool:
    """Whether an estimate row is a cell of the synchronisation score."""
    return norm_name(estimator) in SHIFT_ESTIMATORS and str(condition).startswith(SCORED_PREFIXES)


def has_shift_rows(estimates: pl.DataFrame) -> bool:
    """Whether the rows include any latent-shift estimate (the model ran the estimator)."""
    return any(norm_name(e) in SHIFT_ESTIMATORS for e in estimates["estimator"].unique().to_list())


def estimate_points(estimates: pl.DataFrame) -> dict[tuple[str, str], float]:
    """(condition, latent) -> the plug-in point of the score cells' estimates, runs averaged."""
    per_cell: dict[tuple[str, str], list[float]] = {}
    for row in estimates.iter_rows(named=True):
        point = _num(row["point"])
        if point is not None and is_scored(row["estimator"], row["condition"]):
            per_cell.setdefault((row["condition"], row["feature"]), []).append(point)
    return {cell: sum(v) / len(v) for cell, v in per_cell.items()}


def task_cells(task: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """The score cells a task defines: (prompt:<v> and filter:<v> for each proxy target, when the task
    has that control) x (each latent); None when the manifest carries no task spec."""
    if not task:
        return None
    from harness.values import target_label

    controls = {c.get("type") for c in task.get("controls") or [] if isinstance(c, Mapping)}
    proxy = task.get("proxy") or {}
    latents = [h for h in task.get("latents") or [] if h != proxy.get("feature")]
    return [(f"{kind}:{target_label(v)}", h) for kind in ("prompt", "filter") if kind in controls
            for v in proxy.get("values") or [] for h in latents] or None


def score_cells(task: Mapping[str, Any] | None, measured: Mapping[str, Sequence[tuple[str, str]]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The cells a section's scores are over: the task's cells that at least one model was measured
    on (the union of measured cells without a task spec); plus notes on cells left out."""
    union = set().union(*(set(c) for c in measured.values())) if measured else set()
    expected = task_cells(task)
    if expected is None:
        return sorted(union), []
    cells = sorted(set(expected) & union)
    unmeasured = sorted(set(expected) - union)
    notes = [f"no model was measured on {', '.join(f'{c}/{f}' for c, f in unmeasured)} (too few items on either side); "
             "left out of the score"] if unmeasured and union else []
    return cells, notes


@dataclass(frozen=True)
class SideScore:
    """One model's (or comparison side's) score: the value with its interval, the cells behind it, the replicates."""

    spread: jb.Spread | None  # None: measured on no cell
    measured: tuple[tuple[str, str], ...]
    replicates: jb.Replicates | None  # None: not resampled (no saved draws)
    cell_replicates: Mapping[tuple[str, str], jb.Replicates] = field(default_factory=dict)  # per measured cell

    @property
    def interval(self) -> Interval | None:
        """The score as an :class:`Interval` (ends None where no interval is reported)."""
        return None if self.spread is None else Interval(self.spread.point, self.spread.lower, self.spread.upper)

    @property
    def has_interval(self) -> bool:
        """Whether the score carries an interval (and can therefore be ranked)."""
        return self.spread is not None and self.spread.lower is not None


@dataclass(frozen=True)
class SideData:
    """What scoring one side needs: its estimate rows and run manifests (and, for comparing rows,
    the rows' parsed notes: ``LeaderboardData.notes``)."""

    estimates: pl.DataFrame
    runs: Sequence[Manifest]
    notes: Mapping[Any, EstimateNote] = field(default_factory=dict)


def score_sides(sides: Mapping[str, SideData], task: Mapping[str, Any] | None, draws: Mapping[str, pl.DataFrame],
                reference: pl.DataFrame | None, n_boot: int = jb.SCORE_BOOT, seed: int = 0
                ) -> tuple[list[tuple[str, str]], dict[str, SideScore], jb.JointBootstrap | None, list[str]]:
    """Score every side that ran ``latent_shift`` from one joint bootstrap (see the module docstring).

    Returns the section's cells, the scores, the bootstrap (for paired differences; None when no
    side could be resampled) and notes on cells no side was measured on.
    """
    scored = {name: side for name, side in sides.items() if has_shift_rows(side.estimates)}
    pooled = {name: jb.side_draws(side.runs, draws) for name, side in scored.items()} if reference is not None else {}
    pooled = {name: frame for name, frame in pooled.items() if frame is not None}
    info = lt.task_info(task)
    boot = jb.JointBootstrap(info, reference, pooled, n_boot, seed) if pooled else None
    points = {name: estimate_points(side.estimates) for name, side in scored.items()}
    candidates = task_cells(task) or sorted(set().union(*(set(p) for p in points.values())) if points else set())
    rebuilt = {name: [c for c in candidates if boot.cell(name, *c) is not None] for name in pooled}
    resampled = {name for name, cells in rebuilt.items() if cells}  # else the draws cannot rebuild a cell: fall back
    measured = {name: rebuilt[name] if name in resampled else list(points[name]) for name in scored}
    shared, notes = score_cells(task, measured)
    out = {}
    for name in scored:
        replicates, cells = boot.score(name, shared) if name in resampled else (None, [])
        per_cell = {c: boot.cell(name, *c) for c in cells} if replicates is not None else {}
        if replicates is not None:
            spread = jb.few_cluster_interval(replicates.point, replicates.replicates, replicates.n_contexts, 0.0, 1.0)
        else:  # not resampled: the estimates' plug-in points, and no interval
            cells = [c for c in shared if c in points[name]]
            value = sum(jb.cell_value(points[name][c]) for c in cells) / len(cells) if cells else None
            why = _NOT_REBUILT if name in pooled else _NO_DRAWS
            spread = jb.Spread(float(value), None, None, 0, (INSUFFICIENT_DATA,), why) if cells else None
        out[name] = SideScore(spread, tuple(cells), replicates, per_cell)
    return shared, out, boot, notes


def paired_difference(a: SideScore, b: SideScore) -> jb.Spread | None:
    """a - b: from the shared replicates when both were resampled, else a point without interval.

    Over the cells BOTH sides were measured on: a side's score averages only its own measured cells,
    and a difference between averages over different cells would compare different things.
    """
    if a.spread is None or b.spread is None:
        return None
    if a.replicates is None or b.replicates is None:
        return jb.Spread(a.spread.point - b.spread.point, None, None, 0, (INSUFFICIENT_DATA,), _NO_DRAWS)
    if a.measured == b.measured:
        return jb.difference(a.replicates, b.replicates)
    common = [c for c in a.measured if c in b.measured]
    if not common:
        return jb.Spread(a.spread.point - b.spread.point, None, None, 0, (INSUFFICIENT_DATA,), _NO_COMMON_CELL)
    return jb.difference(jb.mean_score([a.cell_replicates[c] for c in common]),
                         jb.mean_score([b.cell_replicates[c] for c in common]))


def decided_better(a: SideScore, b: SideScore) -> bool:
    """Whether a's score is decided above b's: both carry an interval and their paired difference excludes 0."""
    if not (a.has_interval and b.has_interval):
        return False
    diff = paired_difference(a, b)
    return diff is not None and diff.lower is not None and diff.lower > 0


@dataclass(frozen=True)
class Ranked:
    """One model's line in a section's ranking."""

    rank: int | None  # 1 + models decided better; None: not ranked (no interval, or no score)
    model: str
    model_name: str
    runs: tuple[str, ...]
    score: Interval | None
    n_cells: int  # the section's score cells
    vs_next: Interval | None  # score minus the next model's score, paired interval where both were resampled
    rank_label: str | None = None  # "1", or "1=" when another model shares the rank
    n_measured: int = 0  # cells the score averages over (of n_cells)
    flags: tuple[str, ...] = ()  # why the score has no interval (harness.stats.flags)
    no_interval: str | None = None  # the same in words
    contexts: int = 0  # contexts behind the score

    @property
    def distinguishable_from_next(self) -> bool | None:
        """False when the difference with the next model's score has an interval containing 0 (or none)."""
        return None if self.vs_next is None else not self.vs_next.contains_zero


def _ranks(scores: Mapping[str, SideScore]) -> dict[str, int]:
    ranked = [m for m, s in scores.items() if s.has_interval]
    return {m: 1 + sum(decided_better(scores[o], scores[m]) for o in ranked if o != m) for m in ranked}


def _label(rank: int | None, ranks: Mapping[str, int]) -> str | None:
    if rank is None:
        return None
    return f"{rank}=" if sum(r == rank for r in ranks.values()) > 1 else str(rank)


def _notes(names: Mapping[str, str], scores: Mapping[str, SideScore], shared: list[tuple[str, str]], runs: Mapping[str, Any]) -> list[str]:
    notes = []
    for m in runs:
        name = names[m] or m
        s = scores.get(m)
        if s is None:
            notes.append(f"{name}: no latent-shift estimates; listed unranked")
            continue
        missing = [k for k in shared if k not in s.measured]
        if missing and s.measured:
            notes.append(f"{name}: not measured on {len(missing)} of {len(shared)} cell(s) (too few items with the proxy target "
                         f"or the latent), left out of its score: {', '.join(f'{c}/{f}' for c, f in missing)}; "
                         "its paired differences are over the cells both models were measured on")
        if s.spread is None:
            notes.append(f"{name}: measured on none of the {len(shared)} score cell(s); not scored")
        elif not s.has_interval:
            notes.append(f"{name}: score without interval ({s.spread.reason}; {describe(s.spread.flags)}); not ranked")
    return notes


def rank_section(estimates: pl.DataFrame, task: Mapping[str, Any] | None = None, *, runs: Sequence[Manifest] = (),
                 draws: Mapping[str, pl.DataFrame] | None = None, reference: pl.DataFrame | None = None,
                 n_boot: int = jb.SCORE_BOOT, seed: int = 0) -> tuple[list[Ranked], list[tuple[str, str]], list[str]]:
    """Rank the models of one section (one task, version and reference hash).

    ``runs`` are the section's manifests (their seeds key the contexts), ``draws`` the runs' draws
    by run id and ``reference`` the section's reference table; without them every score falls back
    to the estimates' points with no interval. Returns the ranking, the score cells and notes.
    """
    models = estimates.select("model", "model_name", "run_id").unique().sort("model", "run_id")
    names = {m: n for m, n in zip(models["model"], models["model_name"])}
    run_ids: dict[str, list[str]] = {}
    for m, r in zip(models["model"], models["run_id"]):
        run_ids.setdefault(m, []).append(r)
    manifests = {str(m.run_id): m for m in runs}
    sides = {m: SideData(estimates.filter(pl.col("model") == m), [manifests.get(r, Manifest(run_id=r)) for r in rs]) for m, rs in run_ids.items()}
    shared, scores, _, notes = score_sides(sides, task, draws or {}, reference, n_boot, seed)
    notes += _notes(names, scores, shared, run_ids)
    ranks = _ranks(scores)
    point = lambda m: scores[m].spread.point if m in scores and scores[m].spread else None  # noqa: E731
    order = sorted(run_ids, key=lambda m: (m not in ranks, point(m) is None, ranks.get(m, 0), -(point(m) or 0.0), m))
    ranked = []
    for i, m in enumerate(order):
        s = scores.get(m)
        nxt = scores.get(order[i + 1]) if i + 1 < len(order) else None
        diff = paired_difference(s, nxt) if s is not None and nxt is not None else None
        spread = s.spread if s is not None else None
        ranked.append(Ranked(ranks.get(m), m, names[m] or m, tuple(run_ids[m]), s.interval if s else None,
                             len(shared) if spread is not None else 0,
                             Interval(diff.point, diff.lower, diff.upper) if diff is not None else None,
                             _label(ranks.get(m), ranks), len(s.measured) if s else 0, spread.flags if spread else (),
                             spread.reason if spread else None, spread.contexts if spread else 0))
    return ranked, shared, notes
