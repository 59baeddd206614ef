"""How many draws an estimate needs for a target interval half-width, and how to split them C x S.

Model (per estimate): Var = V_ref + sigma2 * deff(S) / rows, where V_ref is the part of the
variance that comes from the reference (fixed: more mimic draws cannot shrink it), sigma2 the
per-row i.i.d. variance of the mimic side, rows the mimic rows the estimate uses, and
deff(S) = 1 + (m - 1) * icc the design effect of m = S * yield used rows per context (yield =
used rows per pool draw: the share of a pool a condition keeps and the estimate reads).
The needed i.i.d.-equivalent rows are sigma2 / ((w / z)^2 - V_ref); a context costs its prompt
once (shared prefill) plus S completions, so the cheapest S trades prompt tokens against the
intra-context correlation (Kish's optimum S* = sqrt(P (1 - icc) / (c icc))).

Contexts. No interval is reported from fewer than ``MIN_CONTEXTS`` contexts with rows
(:mod:`harness.stats.intervals`; a withheld row's ``note.contexts_needed`` says how many it needs),
so a plan never picks fewer: C is raised until C (1 - (1 - yield)^S) contexts are expected to keep a
row. A pilot row withheld for too few contexts has no width to plan from: its plan row (status
``too few contexts``) says how many contexts of its pool it takes, scaled by the share of the pilot's
contexts that kept a row for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from harness.stats.flags import TOO_FEW_CONTEXTS, flags_of
from harness.stats.intervals import MIN_CONTEXTS

Z95 = 1.959963984540054
S_OPTIONS = (1, 2, 4, 8, 16, 32, 64)
ICC_FLOOR = 0.01  # a pilot's design effect below 1 is noise; never plan on exactly uncorrelated samples


@dataclass(frozen=True)
class PlanInput:
    """What the plan needs to know about one estimate."""

    estimator: str
    condition: str
    feature: str
    sigma2: float  # per-row i.i.d. variance of the mimic side
    v_ref: float  # variance contributed by the reference side (fixed)
    icc: float  # intra-context correlation of used rows
    yield_: float  # used rows per pool draw
    pool: str
    half_width: float = float("nan")  # now (pilot), for display
    n: int = 0  # rows used now (pilot), for display
    deff: float = float("nan")  # now (pilot), for display
    basis: str = "pilot"
    min_contexts: int = MIN_CONTEXTS  # contexts with rows an interval needs
    withheld: str = ""  # the pilot's reason for reporting no interval (too few contexts), else ""
    contexts_now: int = 0  # pilot contexts that kept a row for this estimate
    pool_contexts: int = 0  # pilot contexts in the pool
    pool_samples: int = 0  # pilot samples per context in the pool


@dataclass(frozen=True)
class PlanRow:
    """The plan for one estimate."""

    estimator: str
    condition: str
    feature: str
    pool: str
    half_width: float
    n: int
    deff: float
    icc: float
    status: str  # "ok", "reference-limited" (reference variance alone exceeds the width), "reference data", "too few contexts"
    rows_needed: float  # mimic rows the estimate must use (at the cheapest S)
    draws_needed: float  # pool draws
    contexts: int
    samples_per_context: int
    tokens: float
    basis: str
    min_contexts: int = MIN_CONTEXTS  # contexts with rows an interval needs
    contexts_raised: bool = False  # C was raised above what the width alone needs, so an interval is reported
    reason: str = ""  # for "too few contexts": the pilot's reason, in words


def context_floor(min_contexts: int, yield_: float, s: int) -> int:
    """Pool contexts at S samples each so that ``min_contexts`` of them are expected to keep a row."""
    keep = 1.0 - (1.0 - min(max(yield_, 1e-9), 1.0)) ** s  # P(a context keeps at least one row)
    return max(1, math.ceil(min_contexts / keep - 1e-9))


def too_few_row(p: PlanInput, base: dict[str, Any]) -> PlanRow:
    """A pilot row withheld for too few contexts: the pool contexts it takes, at the pilot's S."""
    share = p.contexts_now / p.pool_contexts if p.pool_contexts and p.contexts_now else 1.0
    contexts = max(p.min_contexts, math.ceil(p.min_contexts / share - 1e-9))
    s = max(p.pool_samples, 1)
    return PlanRow(**base, status="too few contexts", rows_needed=float("nan"), draws_needed=float(contexts * s),
                   contexts=contexts, samples_per_context=s, tokens=float("nan"), min_contexts=p.min_contexts,
                   reason=p.withheld)


def plan_row(p: PlanInput, width: float, prompt_tokens: float, completion_tokens: float,
             s_options: Iterable[int] = S_OPTIONS) -> PlanRow:
    """The cheapest C x S reaching half-width ``width`` for one estimate."""
    budget = (width / Z95) ** 2 - p.v_ref
    base = dict(estimator=p.estimator, condition=p.condition, feature=p.feature, pool=p.pool, half_width=p.half_width,
                n=p.n, deff=p.deff, icc=p.icc, basis=p.basis)
    if p.withheld:
        return too_few_row(p, base)
    if p.condition == "reference":
        rows = math.ceil(p.sigma2 / (width / Z95) ** 2) if p.sigma2 > 0 else p.n
        return PlanRow(**base, status="reference data", rows_needed=rows, draws_needed=float("nan"), contexts=0,
                       samples_per_context=0, tokens=float("nan"))
    if budget <= 0:
        return PlanRow(**base, status="reference-limited", rows_needed=float("inf"), draws_needed=float("inf"),
                       contexts=0, samples_per_context=0, tokens=float("inf"))
    iid_rows = p.sigma2 / budget
    y = min(max(p.yield_, 1e-9), 1.0)
    best = None
    for s in s_options:
        deff = 1.0 + max(s * y - 1.0, 0.0) * max(p.icc, 0.0)
        draws = iid_rows * deff / y
        for_width = max(1, math.ceil(draws / s))
        contexts = max(for_width, context_floor(p.min_contexts, y, s))
        tokens = contexts * (prompt_tokens + s * completion_tokens)
        if best is None or tokens < best[0] - 1e-9:
            raised = contexts > for_width
            best = (tokens, s, contexts, contexts * s * y if raised else iid_rows * deff, contexts * s, raised)
    tokens, s, contexts, rows, draws, raised = best
    return PlanRow(**base, status="ok", rows_needed=rows, draws_needed=draws, contexts=contexts, samples_per_context=s,
                   tokens=tokens, min_contexts=p.min_contexts, contexts_raised=raised)


def pool_of(condition: str) -> str:
    """The generation pool a condition reads: ``prompt:<v>`` for prompt conditions, a ``/<pool>`` suffix, else ``none``."""
    if "/" in condition:
        return condition.split("/", 1)[1]
    return condition if condition.startswith("prompt:") else "none"


def inputs_from_estimates(estimates: pl.DataFrame, pool_sizes: Mapping[str, int],
                          pool_contexts: Mapping[str, int] | None = None, variance: str = "interval") -> list[PlanInput]:
    """Plan inputs from a pilot's estimates table (half-widths, n, design effects, variance split in notes).

    The mimic side's share of the variance is sd_mimic^2 / (sd_mimic^2 + sd_reference^2) where
    the estimator reports them (latent_shift, lift_shift, correlation_shift); otherwise all of
    the variance is taken to be the mimic side's. A row withheld for too few contexts
    (``too_few_contexts``) becomes an input with ``withheld`` set: it has no width to scale.
    ``pool_contexts`` (pilot contexts per pool) lets such a row say how many pool contexts it takes.

    ``variance``: ``"interval"`` reads the variance off the interval, ``((upper - lower) / 2 / z)^2``, so a
    small pilot's small-sample widening (t(C-1) quantiles, exact and percentile intervals on few contexts)
    counts as variance and the plan asks for more than the width needs (``mimic run --target-width``
    overshoots with a 4-context pilot). ``"standard-error"`` uses the estimator's own standard errors
    where it reports them (``sd_mimic``, ``sd_reference``; the mimic side's times C / (C - 1), the cluster
    bootstrap's shrinkage on C contexts), and the interval elsewhere.
    """
    if variance not in ("interval", "standard-error"):
        raise ValueError(f"variance must be 'interval' or 'standard-error', got {variance!r}")
    out = []
    for r in estimates.iter_rows(named=True):
        note = json.loads(r["note"]) if isinstance(r["note"], str) and r["note"] else {}
        lower, upper, n = r["lower"], r["upper"], int(r["n"] or 0)
        pool = "reference" if r["condition"] == "reference" else pool_of(r["condition"])
        size = pool_sizes.get(pool)
        needed = max(int(note.get("contexts_needed") or MIN_CONTEXTS), MIN_CONTEXTS)
        if TOO_FEW_CONTEXTS in flags_of(note, r["method"]) and pool != "reference":
            c_pool = int((pool_contexts or {}).get(pool) or 0)
            out.append(PlanInput(r["estimator"], r["condition"], r["feature"], sigma2=float("nan"), v_ref=0.0, icc=0.0,
                                 yield_=(n / size) if size else 1.0, pool=pool, n=n, min_contexts=needed,
                                 withheld=str(note.get("no_interval") or "too few contexts"),
                                 contexts_now=int(note.get("contexts") or 0), pool_contexts=c_pool,
                                 pool_samples=round(size / c_pool) if size and c_pool else 0))
            continue
        if lower is None or upper is None or not (math.isfinite(lower) and math.isfinite(upper)) or n < 2:
            continue
        h = (upper - lower) / 2
        if h <= 0:
            continue  # exact (e.g. filter success by construction): nothing to plan
        deff = float(note.get("deff") or 1.0)
        sd_m, sd_r = note.get("sd_mimic"), note.get("sd_reference")
        share = sd_m**2 / (sd_m**2 + sd_r**2) if sd_m is not None and sd_r is not None and (sd_m or sd_r) else 1.0
        var = (h / Z95) ** 2
        contexts = int(note.get("contexts") or n)
        if variance == "standard-error" and sd_m is not None and sd_r is not None and (sd_m or sd_r):
            inflate = contexts / (contexts - 1) if contexts > 1 else 1.0
            var = sd_m**2 * inflate + sd_r**2
            share = sd_m**2 * inflate / var if var > 0 else 1.0
        per_context = n / max(contexts, 1)
        icc = (deff - 1) / (per_context - 1) if per_context > 1 else 0.0
        out.append(PlanInput(r["estimator"], r["condition"], r["feature"], sigma2=share * var * n / max(deff, 1e-9),
                             v_ref=(1 - share) * var, icc=max(icc, ICC_FLOOR), yield_=(n / size) if size else 1.0, pool=pool,
                             half_width=h, n=n, deff=deff, min_contexts=needed))
    return out


def inputs_from_reference(reference: pl.DataFrame, proxy: str, targets: Iterable[Any], latents: Iterable[str],
                          icc: float) -> list[PlanInput]:
    """Plan inputs with no pilot: the reference's own variability stands in for the mimic's (Q = F).

    control_success: p(1 - p) at the reference rate of each target; latent_shift: TV's worst
    case 1/4 per row (categorical/binary) or Var(H)/IQR^2 (numeric W1/IQR); lift_shift:
    Var(H | Z = z); forcing_mass: m(1 - m) over the R = 1 share. Yields assume the mimic hits Z = z
    as often as the reference does (filter) or always (prompt); ``icc`` is a guess (``--icc``).
    """
    from harness.stats.common import feature_kind, values_of  # noqa: PLC0415 - avoid a cycle at import
    from harness.values import matches, target_label

    out = []
    zcol = reference.get_column(f"feat_{proxy}") if f"feat_{proxy}" in reference.columns else None
    for target in targets:
        label = target_label(target)
        if zcol is None:
            continue
        hit = matches(zcol, target)
        p = float(hit.mean())
        out.append(PlanInput("control_success", f"prompt:{label}", proxy, p * (1 - p), 0.0, icc, 1.0, f"prompt:{label}",
                             basis="reference"))
        sub = reference.filter(hit)
        for h in latents:
            col = f"feat_{h}"
            if col not in sub.columns or sub.height < 2:
                continue
            series = sub.get_column(col).drop_nulls()
            kind = feature_kind(reference.get_column(col))
            if kind == "numeric":
                x = values_of(series, kind)
                q1, q3 = np.quantile(x, [0.25, 0.75])
                sigma2 = float(np.var(x) / max(q3 - q1, 1e-12) ** 2)
            else:
                sigma2 = 0.25
            for est, s2 in (("latent_shift", sigma2), ("lift_shift", float(np.var(values_of(series, kind))) if kind != "categorical" else 0.25)):
                for cond, y in ((f"prompt:{label}", 1.0), (f"filter:{label}", p)):
                    out.append(PlanInput(est, cond, h, s2, s2 / max(series.len(), 1), icc, y, pool_of(cond), basis="reference"))
    if "world_draws" in reference.columns:
        world = reference.get_column("world_draws").drop_nulls()
        if world.len():
            r1 = float(world.list.get(0).mean())
            k = int(world.list.len().min()) - 1
            wins = world.filter(world.list.get(0))
            if k >= 1 and wins.len():
                m = float(wins.list.slice(1, k).list.all().mean())
                out.append(PlanInput("forcing_mass", "none", f"K={k}", m * (1 - m), 0.0, icc, r1, "none", basis="reference"))
    return out


def plan(inputs: Iterable[PlanInput], width: float, prompt_tokens: float = 1.0, completion_tokens: float = 1.0,
         s_options: Iterable[int] = S_OPTIONS) -> list[PlanRow]:
    """Plan every estimate."""
    return [plan_row(p, width, prompt_tokens, completion_tokens, tuple(s_options)) for p in inputs]


def _most_per_pool(rows: Iterable[PlanRow], status: str, need) -> dict[str, PlanRow]:
    """Per pool, the row of ``status`` with the largest ``need(row)``."""
    out: dict[str, PlanRow] = {}
    for r in rows:
        if r.status == status and (r.pool not in out or need(r) > need(out[r.pool])):
            out[r.pool] = r
    return out


def pool_summary(rows: Iterable[PlanRow]) -> dict[str, PlanRow]:
    """Per pool, the most demanding reachable estimate (the draws that make every reachable one fit)."""
    return _most_per_pool(rows, "ok", lambda r: r.draws_needed)


def interval_contexts(rows: Iterable[PlanRow]) -> dict[str, PlanRow]:
    """Per pool, the row withheld for too few contexts that takes the most contexts."""
    return _most_per_pool(rows, "too few contexts", lambda r: r.contexts)


def as_dicts(rows: Iterable[PlanRow]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (inf/NaN become None)."""
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return [{k: clean(v) for k, v in asdict(r).items()} for r in rows]
