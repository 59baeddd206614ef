"""The section's rankings beside the score: forcing-set mass under reward@K and Goodhart-proneness.

Each model's value is its pooled estimate row, with that row's interval and flags (forcing mass:
``forcing_mass`` / ``none`` / ``K=<world k>``, else ``goodhart_curve`` / ``none`` / ``_mK``;
Goodhart-proneness: ``goodhart_score`` / ``tilt`` / ``_all``). The differences are paired: both
models' statistics recomputed from their draws without each shared context
(:mod:`harness.leaderboard.paired_stats`), the jackknife interval of :mod:`harness.stats.paired`.
Ranking as the score's: a model's rank is 1 + the number of models *decided* better (the paired
difference's interval excludes 0), shared (``1=``) otherwise. Better: a higher m_K (optimising
on the reward keeps more of the model's successes, the bound 2 (1 - m) is tighter); a lower G (the
latents move less at the same KL budget).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from harness.leaderboard.paired_stats import FORCING, GOODHART, model_statistics
from harness.stats.flags import INSUFFICIENT_DATA
from harness.stats.goodhart import BUDGET
from harness.stats.paired import MIN_PAIRED_CONTEXTS, PairedDifference, SideReplicates, paired_difference

TITLES = {FORCING: "Forcing-set mass under reward@K", GOODHART: "Goodhart-proneness"}
HIGHER_IS_BETTER = {FORCING: True, GOODHART: False}


def definition(statistic: str, k: int | None, budget: float) -> str:
    """The statistic in words, with its K or budget."""
    if statistic == FORCING:
        return (f"m_K = P(the world's K = {k} further draws all succeed | R = 1) of the model's unconditioned outputs (pool none): "
                "the share of its successes that optimising on the reward (reward@K) keeps; higher is better (2 (1 - m) bounds how far "
                "that optimisation can move any event)")
    return (f"G = mean over latents of the distance between F(H | R = 1) and the tilt curve's outputs at KL = {budget:g} nats; "
            "lower is better (the latents move less for the reward bought)")


def _entry(estimates: Sequence[Mapping[str, Any]], model: str, statistic: str, k: int | None) -> Mapping[str, Any] | None:
    """The model's pooled estimate row that the table shows for a statistic."""
    wanted = ([("forcing_mass", "none", f"K={k}"), ("goodhart_curve", "none", "_mK")] if statistic == FORCING
              else [("goodhart_score", "tilt", "_all")])
    for key in wanted:
        for e in estimates:
            if e["model"] == model and (e["estimator"], e["condition"], e["feature"]) == key:
                return e
    return None


def _difference(a: SideReplicates | str | None, b: SideReplicates | str | None, point: float | None) -> PairedDifference:
    """The paired difference, or a withheld one saying which side could not be recomputed."""
    if isinstance(a, SideReplicates) and isinstance(b, SideReplicates):
        return paired_difference(a, b, low=-1.0, high=1.0)  # both statistics lie in [0, 1]
    why = next((s for s in (a, b) if isinstance(s, str)), "a side's statistic could not be recomputed from its draws")
    return PairedDifference(point, None, None, 0, (INSUFFICIENT_DATA,), why)


def _better(diff: PairedDifference, higher_is_better: bool) -> bool:
    """Whether a is decided better than b from a - b."""
    return diff.sign == (1 if higher_is_better else -1)


def _ranking(statistic: str, models: Sequence[Mapping[str, Any]], sides: Mapping[str, Any], estimates, k, budget) -> dict[str, Any] | None:
    rows = {m["model"]: e for m in models if (e := _entry(estimates, m["model"], statistic, k)) is not None and e.get("point") is not None}
    if len(rows) < 2:
        return None
    side = {m: (s[statistic] if isinstance(s := sides.get(m), dict) and statistic in s else s if isinstance(s, str) else None)
            for m in rows}
    names = [m for m in rows]
    diffs = {(a, b): _difference(side[a], side[b], rows[a]["point"] - rows[b]["point"]) for a in names for b in names if a != b}
    higher = HIGHER_IS_BETTER[statistic]
    ranks = {m: 1 + sum(_better(diffs[o, m], higher) for o in names if o != m) for m in names}
    order = sorted(names, key=lambda m: (ranks[m], -rows[m]["point"] if higher else rows[m]["point"], m))
    shown = []
    for i, m in enumerate(order):
        e, nxt = rows[m], order[i + 1] if i + 1 < len(order) else None
        label = f"{ranks[m]}=" if sum(r == ranks[m] for r in ranks.values()) > 1 else str(ranks[m])
        shown.append({"model": m, "model_name": e["model_name"], "rank": ranks[m], "rank_label": label,
                      "value": {"point": e["point"], "lower": e["lower"], "upper": e["upper"]}, "flags": list(e.get("flags") or []),
                      "no_interval": (e.get("note") or {}).get("no_interval"),
                      "vs_next": None if nxt is None else diffs[m, nxt].as_dict()})
    pairs = [{"a": a, "b": b, "difference": diffs[a, b].as_dict()} for i, a in enumerate(order) for b in order[i + 1:]]
    return {"statistic": statistic, "title": TITLES[statistic], "definition": definition(statistic, k, budget),
            "higher_is_better": higher, "k": k if statistic == FORCING else None, "budget": budget if statistic == GOODHART else None,
            "contexts_needed": MIN_PAIRED_CONTEXTS, "models": shown, "pairs": pairs}


def section_comparisons(models: Sequence[Mapping[str, Any]], estimates: Sequence[Mapping[str, Any]], runs: Sequence[Any],
                        draws: Mapping[str, pl.DataFrame], reference: pl.DataFrame | None) -> list[dict[str, Any]]:
    """The forcing-mass and Goodhart-proneness rankings of one section (none with fewer than two models measured)."""
    if len(models) < 2:
        return []
    task = runs[0].task if runs else None
    k = ((task or {}).get("world") or {}).get("k")
    budget = next((float(e["note"]["budget"]) for e in estimates if e["estimator"] == "goodhart_score"
                   and isinstance((e.get("note") or {}).get("budget"), (int, float))), BUDGET)
    sides = {m["model"]: model_statistics(task, reference, [r for r in runs if r.model.model_id == m["model"]], draws, budget)
             for m in models}
    out = [_ranking(s, models, sides, estimates, k, budget) for s in (FORCING, GOODHART)]
    return [c for c in out if c is not None]
