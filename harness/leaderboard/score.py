"""The synchronisation score and the ranking built on it.

Definition (also in the README). For a model on one task, take every latent-shift estimate under a
condition where the operator conditioned on the proxy (``prompt:<v>`` and ``filter:<v>``), one cell
per (condition, latent). In each cell let d be the *debiased* shift (the plug-in TV or IQR-scaled
W1 minus the mean of its null distribution, ``note.debiased``; the plug-in when absent) and
[l, u] its 95% interval: the estimator's interval as it is when it is a basic bootstrap interval
(which already removes the bias once), else moved down by the same bias correction; widened to
contain d if needed. Then

    s_cell = 1 - clip(d, 0, 1)        interval [1 - clip(u, 0, 1), 1 - clip(l, 0, 1)]
    score  = mean of s_cell over the task's cells
    interval = [mean of the cells' lower ends, mean of the cells' upper ends]

The task's cells are prompt:<v> and filter:<v> (for the controls the task has) x its latents,
less any cell no model of the section was measured on. A cell a model was not measured on (the
estimator needs 2 items with Z' = v and the latent on each side) counts as s_cell = 0 [0, 0]: the
model showed no synchronisation there. A score therefore depends only on the model's own runs
and the task, not on which other models share the leaderboard (up to that last rule).

1 means the model's latents move exactly as the reference data predicts under the proxy
condition; 0 means total variation 1 (or a W1 shift of at least one reference IQR). The interval
is a conservative combination: its half-width is the mean of the cells' half-widths, and because
sd(X1 + ... + Xm) <= sd(X1) + ... + sd(Xm) whatever the correlations, that is never narrower than
the normal-approximation interval of the mean; it is exact when the cells are perfectly
correlated. Runs of one model (several seeds) are pooled cell by cell the same way (average of
points, average of ends): seeds share the reference data, so they are not independent.
A difference of two scores uses [l_A - u_B, u_A - l_B] (half-widths add, again by the
triangle inequality for standard deviations); when it contains 0 the two are not distinguishable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

# Names of the built-in estimators (harness.builtin.estimators) the score and charts read; compared
# after normalising (lower case, '-' and ' ' read as '_').
SHIFT_ESTIMATORS = frozenset({"latent_shift"})
TRANSFER_ESTIMATORS = frozenset({"transfer_gap"})
FORCING_ESTIMATORS = frozenset({"forcing_mass"})
SCORED_PREFIXES = ("prompt:", "filter:")
SCORE_DEFINITION = (
    "mean over the task's (condition, latent) cells under prompt:<v> and filter:<v> of 1 - clip(debiased latent shift, 0, 1), "
    "a cell the model could not be measured on counting as 0; interval = mean of the cells' interval ends "
    "(conservative: sd of a sum <= sum of sds)"
)


def norm_name(name: Any) -> str:
    """Estimator names compared loosely: ``Latent-Shift`` and ``latent_shift`` are one name."""
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


def parse_note(note: Any) -> dict[str, Any]:
    """The estimates ``note`` column (a JSON object as text) as a dict; anything else is empty."""
    if isinstance(note, dict):
        return note
    try:
        value = json.loads(note) if note else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


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


def mean_interval(items: Iterable[Interval]) -> Interval | None:
    """The conservative combination: average of points and of each end (None if any end is unknown)."""
    items = list(items)
    if not items or any(i.point is None for i in items):
        return None
    points = sum(i.point for i in items) / len(items)
    if any(i.lower is None or i.upper is None for i in items):
        return Interval(points, None, None)
    return Interval(points, sum(i.lower for i in items) / len(items), sum(i.upper for i in items) / len(items))


def difference(a: Interval, b: Interval) -> Interval:
    """a - b with the conservative interval [l_a - u_b, u_a - l_b]."""
    point = None if a.point is None or b.point is None else a.point - b.point
    if None in (a.lower, a.upper, b.lower, b.upper):
        return Interval(point, None, None)
    return Interval(point, a.lower - b.upper, a.upper - b.lower)


def debiased_shift(point: Any, lower: Any, upper: Any, note: dict[str, Any], method: str = "") -> Interval | None:
    """The debiased shift of one estimate row and its interval (see the module docstring).

    A ``basic`` bootstrap interval already removes the plug-in's upward bias, so it is kept as it
    is; any other interval is moved down by the bias correction (plug-in minus debiased). Either
    way it is widened, if needed, to contain the debiased point.
    """
    p = _num(point)
    if p is None:
        return None
    d = _num(note.get("debiased"))
    d = p if d is None else d
    offset = 0.0 if "basic" in str(method) else p - d
    lo = None if _num(lower) is None else min(_num(lower) - offset, d)
    hi = None if _num(upper) is None else max(_num(upper) - offset, d)
    return Interval(d, lo, hi)


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def cell_score(shift: Interval) -> Interval:
    """1 - clip(shift): a high score is a small shift, so the ends swap."""
    lo = None if shift.upper is None else 1.0 - _clip01(shift.upper)
    hi = None if shift.lower is None else 1.0 - _clip01(shift.lower)
    return Interval(1.0 - _clip01(shift.point), lo, hi)


def is_scored(estimator: str, condition: str) -> bool:
    """Whether an estimate row is a cell of the synchronisation score."""
    return norm_name(estimator) in SHIFT_ESTIMATORS and str(condition).startswith(SCORED_PREFIXES)


def model_cells(estimates: pl.DataFrame) -> dict[str, dict[tuple[str, str], Interval]]:
    """model id -> {(condition, latent): cell score}, runs of one model pooled by averaging."""
    per_run: dict[str, dict[tuple[str, str], list[Interval]]] = {}
    for row in estimates.iter_rows(named=True):
        if not is_scored(row["estimator"], row["condition"]):
            continue
        shift = debiased_shift(row["point"], row["lower"], row["upper"], parse_note(row["note"]), row["method"])
        if shift is not None:
            per_run.setdefault(row["model"], {}).setdefault((row["condition"], row["feature"]), []).append(cell_score(shift))
    return {model: {key: mean_interval(v) for key, v in cells.items()} for model, cells in per_run.items()}


@dataclass(frozen=True)
class Ranked:
    """One model's line in a section's ranking."""

    rank: int | None
    model: str
    model_name: str
    runs: tuple[str, ...]
    score: Interval | None
    n_cells: int
    vs_next: Interval | None  # score minus the next model's score, conservative interval

    @property
    def distinguishable_from_next(self) -> bool | None:
        """False when the difference with the next model's score has an interval containing 0."""
        return None if self.vs_next is None else not self.vs_next.contains_zero


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


def score_cells(task: Mapping[str, Any] | None, measured: Mapping[str, Mapping[tuple[str, str], Interval]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The cells a section's score averages over: the task's cells that at least one model was
    measured on (the union of measured cells without a task spec); plus notes on cells left out."""
    union = set().union(*(set(c) for c in measured.values())) if measured else set()
    expected = task_cells(task)
    if expected is None:
        return sorted(union), []
    cells = sorted(set(expected) & union)
    unmeasured = sorted(set(expected) - union)
    notes = [f"no model was measured on {', '.join(f'{c}/{f}' for c, f in unmeasured)} (too few items on either side); "
             "left out of the score"] if unmeasured and union else []
    return cells, notes


ZERO = Interval(0.0, 0.0, 0.0)


def model_score(cells_of_model: Mapping[tuple[str, str], Interval], cells: list[tuple[str, str]]) -> Interval | None:
    """Mean over ``cells``; a cell the model was not measured on counts as 0 (no synchronisation shown)."""
    return mean_interval(cells_of_model.get(k, ZERO) for k in cells) if cells else None


def rank_section(estimates: pl.DataFrame, task: Mapping[str, Any] | None = None) -> tuple[list[Ranked], list[tuple[str, str]], list[str]]:
    """Rank the models of one section (one task, version and reference hash).

    Returns the ranking, the cells the score averages over, and notes for the reader (cells a
    model lacks and that count as 0, models that cannot be scored).
    """
    cells = model_cells(estimates)
    models = estimates.select("model", "model_name", "run_id").unique().sort("model", "run_id")
    names = {m: n for m, n in zip(models["model"], models["model_name"])}
    runs: dict[str, list[str]] = {}
    for m, r in zip(models["model"], models["run_id"]):
        runs.setdefault(m, []).append(r)
    # A model with no latent-shift row at all did not run the estimator: it cannot be scored. One
    # with shift rows but none in a score cell produced no assessable item there: it scores 0.
    has_shift = set(estimates.filter(pl.col("estimator").map_elements(lambda e: norm_name(e) in SHIFT_ESTIMATORS, return_dtype=pl.Boolean))["model"])
    shared, notes = score_cells(task, {m: cells.get(m, {}) for m in runs if m in has_shift})
    for m in runs:
        if m not in has_shift:
            notes.append(f"{names[m] or m}: no latent-shift estimates; listed unranked")
            continue
        missing = [k for k in shared if k not in cells.get(m, {})]
        if missing:
            notes.append(f"{names[m] or m}: not measured on {len(missing)} of {len(shared)} cell(s), counted as 0 "
                         f"(too few items with the proxy target or the latent): {', '.join(f'{c}/{f}' for c, f in missing)}")
    scores = {m: model_score(cells.get(m, {}), shared) if m in has_shift else None for m in runs}
    order = sorted(runs, key=lambda m: (scores[m] is None or scores[m].point is None, -(scores[m].point if scores[m] and scores[m].point is not None else 0.0), m))
    ranked: list[Ranked] = []
    for i, m in enumerate(order):
        score = scores[m]
        nxt = scores[order[i + 1]] if i + 1 < len(order) else None
        vs_next = difference(score, nxt) if score is not None and nxt is not None else None
        rank = i + 1 if score is not None else None
        ranked.append(Ranked(rank, m, names[m] or m, tuple(runs[m]), score, len(shared) if score is not None else 0, vs_next))
    return ranked, shared, notes
