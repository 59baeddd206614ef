"""Designs under a budget: contexts x samples per pool that narrow the headline intervals most for the cost.

Cost model (the backend shares a context's prompt across its S samples: one prefill per context):
a context of a pool costs, for each context size ("arm") the pool draws at,
``prefill * prompt_tokens + S * decode * completion_tokens``, where ``prefill`` and ``decode`` are the
measured costs of a prompt token and of a generated token (milliseconds; or 1 and 1 for a token budget).
More samples per context are cheaper than more contexts, but the design effect makes them worth less.

Variance model (:mod:`harness.stats.planning`): an estimate's variance is
``V_ref + sigma2 * (1 + (S * yield - 1) * icc) / (C * S * yield)``. It assumes the pilot's per-row
variance ``sigma2``, its intra-context correlation ``icc`` and its yield (rows an estimate keeps per draw)
hold at any C and S, that contexts are exchangeable (the design effect is Kish's ``1 + (m - 1) icc`` for
``m`` used rows per context, equal cluster sizes) and that the reference part ``V_ref`` is fixed; it is
a large-sample model, so a pilot of few contexts gives a noisy plan.

Objective: under a budget, minimise the widest *mimic-side* half-width of the headline rows,
``Z95 * sqrt(sigma2 * deff / rows)``: the part that drawing more can narrow (the reference part is
fixed; a row the reference alone keeps wide would otherwise decide nothing and be paid for anyway). The
smallest such width the budget affords is found by bisection: the cheapest design reaching a width
(:func:`design_for_width`) costs less the wider the width, so the search is monotone and more budget
never gives a wider plan. A target ``--width`` is on the whole half-width, as :mod:`planning` plans it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from harness.stats.intervals import MIN_CONTEXTS
from harness.stats.planning import S_OPTIONS, Z95, PlanInput, plan_row

BISECTION_STEPS = 80


@dataclass(frozen=True)
class Arm:
    """One kind of context a pool draws: its prompt (prefilled once per context) and tokens per draw."""

    pool: str
    n_exemplars: int
    prompt_tokens: float
    completion_tokens: float
    headline: bool = True  # the main context size (feeds the headline rows); False: the sync curve's other sizes


@dataclass(frozen=True)
class UnitCosts:
    """Cost of one prompt token, one generated token and one call (milliseconds; or 1, 1, 0 for a token budget)."""

    prefill: float
    decode: float
    call: float = 0.0  # a call's fixed overhead: one call per context and context size


@dataclass(frozen=True)
class PoolDesign:
    """A pool's contexts x samples, what it costs and what it buys."""

    pool: str
    contexts: int
    samples: int
    cost: float  # every arm of the pool
    curve_cost: float = 0.0  # of which the sync curve's extra context sizes
    half_widths: dict[str, float] = field(default_factory=dict)  # expected, per headline row label
    draws: int = 0


def label(p: PlanInput) -> str:
    """``estimator condition feature``."""
    return f"{p.estimator} {p.condition} {p.feature}"


def context_cost(arms: Iterable[Arm], samples: int, unit: UnitCosts) -> float:
    """One context of each arm at ``samples`` samples: each prompt prefilled once, every draw decoded."""
    return sum(unit.call + unit.prefill * a.prompt_tokens + samples * unit.decode * a.completion_tokens for a in arms)


def expected_half_width(p: PlanInput, contexts: int, samples: int) -> float:
    """Half-width of a planned estimate's 95% interval at ``contexts`` x ``samples`` (the variance model above)."""
    y = min(max(p.yield_, 1e-9), 1.0)
    deff = 1.0 + max(samples * y - 1.0, 0.0) * max(p.icc, 0.0)
    return Z95 * math.sqrt(p.v_ref + p.sigma2 * deff / max(contexts * samples * y, 1e-9))


def reference_floor(p: PlanInput) -> float:
    """The half-width the reference side alone gives (no draws can go below it)."""
    return Z95 * math.sqrt(max(p.v_ref, 0.0))


def pool_contexts_needed(rows: Sequence[PlanInput], width: float, samples: int) -> int:
    """Contexts of a pool at ``samples`` so that every reachable row's half-width is at most ``width``."""
    need = MIN_CONTEXTS
    for p in rows:
        planned = plan_row(p, width, 1.0, 1.0, s_options=(samples,))
        if planned.status in ("ok", "too few contexts"):
            need = max(need, planned.contexts)
    return need


def _design(pool: str, rows: Sequence[PlanInput], arms: Sequence[Arm], contexts: int, samples: int,
            unit: UnitCosts) -> PoolDesign:
    per_context = context_cost(arms, samples, unit)
    curve = context_cost([a for a in arms if not a.headline], samples, unit)
    widths = {label(p): (float("nan") if p.withheld else expected_half_width(p, contexts, samples)) for p in rows}
    return PoolDesign(pool, contexts, samples, contexts * per_context, contexts * curve, widths,
                      contexts * samples * len(arms))


def grouped(inputs: Iterable[PlanInput], arms: Iterable[Arm]) -> tuple[dict[str, list[PlanInput]], dict[str, list[Arm]]]:
    """Headline inputs and arms per pool (only pools the pilot drew)."""
    by_arm: dict[str, list[Arm]] = {}
    for a in arms:
        by_arm.setdefault(a.pool, []).append(a)
    by_pool: dict[str, list[PlanInput]] = {pool: [] for pool in by_arm}
    for p in inputs:
        if p.pool in by_pool:
            by_pool[p.pool].append(p)
    return by_pool, by_arm


def design_for_width(inputs: Sequence[PlanInput], arms: Sequence[Arm], width: float, unit: UnitCosts,
                     s_options: Sequence[int] = S_OPTIONS, uniform: bool = False) -> list[PoolDesign]:
    """The cheapest design in which every reachable headline row's half-width is at most ``width``.

    Per pool, each S of ``s_options`` with the fewest contexts that reach the width, the cheapest kept
    (ties: fewer samples). ``uniform``: one C x S for every pool (what one ``mimic run`` takes).
    """
    by_pool, by_arm = grouped(inputs, arms)
    if uniform:
        best = None
        for s in s_options:
            c = max(pool_contexts_needed(by_pool[pool], width, s) for pool in by_arm)
            cost = c * context_cost([a for pool in by_arm for a in by_arm[pool]], s, unit)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, c, s)
        return [_design(pool, by_pool[pool], by_arm[pool], best[1], best[2], unit) for pool in sorted(by_arm)]
    out = []
    for pool in sorted(by_arm):
        options = [_design(pool, by_pool[pool], by_arm[pool], pool_contexts_needed(by_pool[pool], width, s), s, unit)
                   for s in s_options]
        out.append(min(options, key=lambda d: (round(d.cost, 9), d.samples)))
    return out


def mimic_side(inputs: Iterable[PlanInput]) -> list[PlanInput]:
    """The inputs with the reference part taken out (what the budget objective narrows)."""
    return [replace(p, v_ref=0.0) for p in inputs]


def total_cost(designs: Iterable[PoolDesign]) -> float:
    """Cost of a whole design."""
    return sum(d.cost for d in designs)


def design_for_budget(inputs: Sequence[PlanInput], arms: Sequence[Arm], budget: float, unit: UnitCosts,
                      s_options: Sequence[int] = S_OPTIONS, uniform: bool = False) -> tuple[list[PoolDesign], float] | None:
    """The design within ``budget`` with the narrowest widest mimic-side headline half-width, and that width.

    None when even the smallest design (each pool at the contexts an interval needs) costs more.
    """
    def cheapest(width: float) -> list[PoolDesign]:
        planned = design_for_width(mimic_side(inputs), arms, width, unit, s_options, uniform)
        # the same C x S, its widths reported with the reference part put back
        return [_design(d.pool, [p for p in inputs if p.pool == d.pool], [a for a in arms if a.pool == d.pool],
                        d.contexts, d.samples, unit) for d in planned]

    hi = 1e6
    if total_cost(cheapest(hi)) > budget:
        return None
    lo = 1e-9
    for _ in range(BISECTION_STEPS):  # on a log scale: widths span orders of magnitude
        mid = math.sqrt(lo * hi)
        if total_cost(cheapest(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    designs = cheapest(hi)
    achieved = max((expected_half_width(p, d.contexts, d.samples) for d in designs
                    for p in mimic_side(inputs) if p.pool == d.pool and not p.withheld), default=float("nan"))
    return designs, achieved


def headline_width(designs: Iterable[PoolDesign]) -> float:
    """The widest expected headline half-width of a design (NaN when no row has one)."""
    return max((v for d in designs for v in d.half_widths.values() if math.isfinite(v)), default=float("nan"))
