"""`mimic run --target-width W`: a pilot, then a main stage sized from it (an internal pilot).

Stage 1 is the ordinary run with ``--contexts C0`` (``--pilot-contexts``). From its estimates the
planner (:mod:`harness.stats.planning`) takes each *headline* estimate's variance split and design
effect at the run's samples per context S and says how many contexts per pool bring the full width of
its 95% interval to ``W``; the largest of these, capped by the budget (tokens from the pilot's
measured tokens per context, minutes from its measured seconds per context) and never below C0, is
C1. Stage 2 is the ordinary run with ``--contexts C1``: its contexts 0..C1-1 include the pilot's (a
context's exemplars and a draw's seed depend only on its key), so the pilot's draws come back from the
draw cache at no cost, and only contexts C0..C1-1 call the model.

Why the intervals stay valid: C1 is a function of the pilot alone, and the final estimates are the
ordinary estimates of the fixed-size design C1 x S. Re-estimating the sample size from an internal
pilot's variance and then analysing all the data as a fixed design keeps the nominal coverage up to
a small bias (Wittes & Brittain 1990, "The role of internal pilot studies in increasing the
efficiency of clinical trials", Stat Med 9:65-72); ``benchmarks/target_width.py`` checks the
coverage of this rule against planted truth. What is not done: no stage looks at the main stage's
widths to decide whether to go on (that would need anytime-valid intervals).

Headline estimates: ``control_success`` of the prompt pools (``prompt:<v>``; not where it is 1 by
construction, as when the prompt writes the proxy's header) and ``latent_shift`` of the task's
latents under every mimic condition: the rows the leaderboard's synchronisation score and the
planner are built on. A headline row the reference alone keeps wider than W
(``reference-limited``) cannot be narrowed by drawing more; it is named and left out of the sizing.

The decision (pilot widths, contexts, measured costs) is written to the pilot's run directory
(``target_width.json``, keyed by W and the budget), so a rerun of the same command makes the same
decision, whatever the clock says, and resumes both stages as ordinary runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import polars as pl

from harness.durable import atomic_write_bytes
from harness.errors import DataError, UsageError
from harness.mimic import Mimic
from harness.records import read_manifest
from harness.registry import Registries
from harness.run.config import RunConfig
from harness.run.runner import RunResult, run_async, run_many
from harness.store import load_draws

DECISION_FILE = "target_width.json"
DEFAULT_PILOT_CONTEXTS = 4
Say = Callable[[str], None]


@dataclass(frozen=True)
class TargetWidth:
    """What a staged run aims for: the full width of the headline 95% intervals, the pilot size, the budget."""

    width: float
    pilot_contexts: int = DEFAULT_PILOT_CONTEXTS
    max_minutes: float | None = None
    max_tokens: int | None = None

    def __post_init__(self):
        if not (math.isfinite(self.width) and self.width > 0):
            raise UsageError(f"--target-width must be a positive number, got {self.width}", "pass e.g. --target-width 0.2")
        if self.pilot_contexts < 2:
            raise UsageError(f"--pilot-contexts must be at least 2, got {self.pilot_contexts}",
                             "pass --pilot-contexts 4 (an interval needs 2 contexts)")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise UsageError(f"--max-minutes must be positive, got {self.max_minutes}", "pass e.g. --max-minutes 30")

    def key(self) -> str:
        """The decision's key in the pilot's ``target_width.json``: the width and the budget."""
        return f"width={self.width!r} max_minutes={self.max_minutes!r} max_tokens={self.max_tokens!r}"


def is_headline(estimator: str, condition: str) -> bool:
    """Control success of a prompt pool, or a latent shift under any mimic condition."""
    if estimator == "control_success":
        return condition.startswith("prompt:")
    return estimator == "latent_shift" and condition != "reference"


def headline(estimates: pl.DataFrame) -> pl.DataFrame:
    """The headline rows of an estimates table (not those exact by construction: a prompt that writes the proxy)."""
    methods = estimates.get_column("method") if "method" in estimates.columns else [None] * estimates.height
    keep = [is_headline(e, c) and m != "by-construction"
            for e, c, m in zip(estimates.get_column("estimator"), estimates.get_column("condition"), methods)]
    return estimates.filter(pl.Series(keep, dtype=pl.Boolean))


def label(row: Any) -> str:
    """``estimator condition feature`` of an estimate row or plan input."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k)
    return f"{get('estimator')} {get('condition')} {get('feature')}"


def final_widths(estimates: pl.DataFrame) -> dict[str, float]:
    """Full 95% interval width of every headline row (NaN where no interval was reported)."""
    out = {}
    for r in headline(estimates).iter_rows(named=True):
        lo, hi = r["lower"], r["upper"]
        ok = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
        out[label(r)] = (hi - lo) if ok else float("nan")
    return out


@dataclass(frozen=True)
class Decision:
    """What the pilot decided: contexts per pool for the main stage, and why."""

    pilot_contexts: int
    samples_per_context: int
    needed_contexts: int  # for the width alone (no budget)
    contexts: int  # C1: what the main stage runs
    bound: str = ""  # "" | "tokens" | "minutes": the budget that capped C1 below the need
    pilot_widths: dict[str, float] = field(default_factory=dict)
    expected_widths: dict[str, float] = field(default_factory=dict)  # at C1, from the pilot's variance model
    unreachable: tuple[str, ...] = ()  # reference-limited headline rows
    tokens_per_context: float = 0.0
    seconds_per_context: float = 0.0
    pilot_tokens: int = 0  # tokens the pilot's model calls spent
    pilot_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form (NaN as None)."""
        def clean(v):
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {k: clean(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decision:
        """Inverse of :meth:`to_json`."""
        nan = lambda d: {k: float("nan") if v is None else float(v) for k, v in (d or {}).items()}  # noqa: E731
        return cls(**{**data, "pilot_widths": nan(data.get("pilot_widths")), "expected_widths": nan(data.get("expected_widths")),
                      "unreachable": tuple(data.get("unreachable") or ())})


def expected_width(p: Any, contexts: int, samples: int) -> float:
    """Full 95% width of a planned estimate at ``contexts`` x ``samples`` (the planner's variance model)."""
    from harness.stats.planning import Z95

    y = min(max(p.yield_, 1e-9), 1.0)
    deff = 1.0 + max(samples * y - 1.0, 0.0) * max(p.icc, 0.0)
    var = p.v_ref + p.sigma2 * deff / max(contexts * samples * y, 1e-9)
    return 2 * Z95 * math.sqrt(var)


def headline_inputs(estimates: pl.DataFrame, pool_sizes: dict[str, int], pilot_contexts: int,
                    variance: str = "interval") -> tuple[pl.DataFrame, list]:
    """The pilot's headline rows and the planner's inputs for them (variance split, design effect, yield; ``variance``:
    where the planner reads each row's variance, :func:`harness.stats.planning.inputs_from_estimates`)."""
    from harness.stats import planning

    rows = headline(estimates)
    if rows.height == 0:
        raise DataError("the pilot has no headline estimates (control_success of a prompt pool, latent_shift)",
                        "run the control_success and latent_shift estimators (drop --estimator), or use `mimic plan`")
    return rows, planning.inputs_from_estimates(rows, pool_sizes, {pool: pilot_contexts for pool in pool_sizes}, variance)


def plan_main_stage(rows: pl.DataFrame, inputs: Sequence[Any], pilot_contexts: int, samples: int, width: float) -> Decision:
    """Contexts per pool that bring every reachable headline width to ``width`` (no budget yet)."""
    from harness.stats import planning

    need, unreachable = pilot_contexts, []
    for p in inputs:
        planned = planning.plan_row(p, width / 2, 1.0, 1.0, s_options=(samples,))
        if planned.status == "reference-limited":
            unreachable.append(label(p))
        elif planned.status in ("ok", "too few contexts"):
            need = max(need, planned.contexts)
    decision = Decision(pilot_contexts, samples, need, need, pilot_widths=final_widths(rows), unreachable=tuple(unreachable))
    return capped(decision, inputs, {})


def capped(decision: Decision, inputs: Sequence[Any], caps: dict[str, int]) -> Decision:
    """The decision with C1 cut to the smallest budget cap (never below the pilot); expected widths at C1."""
    contexts, bound = decision.needed_contexts, ""
    for name, cap in sorted(caps.items(), key=lambda kv: kv[1]):
        if cap < contexts:
            contexts, bound = max(cap, decision.pilot_contexts), name
    expected = {label(p): (float("nan") if p.withheld else expected_width(p, contexts, decision.samples_per_context))
                for p in inputs}
    return replace(decision, contexts=contexts, bound=bound, expected_widths=expected)


def budget_caps(target: TargetWidth, decision: Decision) -> dict[str, int]:
    """Most contexts per pool the budget allows: the pilot's spend plus whole extra contexts at its measured cost."""
    caps = {}
    c0 = decision.pilot_contexts
    if target.max_tokens is not None and decision.tokens_per_context > 0:
        caps["tokens"] = c0 + max(0, math.floor((target.max_tokens - decision.pilot_tokens) / decision.tokens_per_context))
    if target.max_minutes is not None and decision.seconds_per_context > 0:
        caps["minutes"] = c0 + max(0, math.floor((60 * target.max_minutes - decision.pilot_seconds) / decision.seconds_per_context))
    return caps


def decide(result: RunResult, target: TargetWidth) -> Decision:
    """The main stage's size from a completed pilot run (its estimates, draws and measured costs)."""
    manifest = read_manifest(result.run_dir)
    plan = manifest.plan or {}
    draws = load_draws(result.run_dir)
    if "n_exemplars" in draws.columns and plan.get("n_exemplars") is not None:
        main = draws.filter(pl.col("n_exemplars") == int(plan["n_exemplars"]))  # not the sync curve's other sizes
    else:
        main = draws
    sizes = {p: n for p, n in main.group_by("pool").len().iter_rows()}
    c0, samples = target.pilot_contexts, int(plan.get("samples_per_context") or 1)
    rows, inputs = headline_inputs(result.estimates, sizes, c0)
    decision = plan_main_stage(rows, inputs, c0, samples, target.width)
    # a context's cost whether or not the cache answered it this time: every token of every draw, plus other phases
    draw_tokens = sum(int(draws.get_column(c).fill_null(0).sum()) for c in ("prompt_tokens", "completion_tokens") if c in draws.columns)
    phases = (result.usage or {}).get("phases") or {}
    other = sum(int(u.get("prompt_tokens") or 0) + int(u.get("completion_tokens") or 0) for k, u in phases.items() if k != "draws")
    seconds = sum(result.timings.get(k, 0.0) for k in ("generate", "field_probs")) if result.cached < result.done else 0.0
    usage = result.usage or {}
    decision = replace(decision, tokens_per_context=(draw_tokens + other) / c0, seconds_per_context=seconds / c0,
                       pilot_tokens=int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0),
                       pilot_seconds=float(result.timings.get("total", 0.0)))
    return capped(decision, inputs, budget_caps(target, decision))


def recorded_decision(result: RunResult, target: TargetWidth) -> Decision | None:
    """The decision an earlier invocation of this command made from this pilot, if any."""
    path = result.run_dir / DECISION_FILE
    if not path.exists():
        return None
    entry = json.loads(path.read_text(encoding="utf-8")).get(target.key())
    return Decision.from_json(entry) if entry else None


def record_decision(result: RunResult, target: TargetWidth, decision: Decision) -> None:
    """Keep the decision beside the pilot, so a rerun decides the same."""
    path = result.run_dir / DECISION_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data[target.key()] = decision.to_json()
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _fmt(widths: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" if math.isfinite(v) else f"{k} (no interval)" for k, v in widths.items())


def describe(decision: Decision, target: TargetWidth) -> list[str]:
    """What the pilot decided, in lines."""
    d = decision
    lines = [f"target width {target.width:g} (full 95% interval of the headline estimates); pilot "
             f"{d.pilot_contexts} contexts x {d.samples_per_context} samples per pool",
             f"pilot widths: {_fmt(d.pilot_widths)}",
             f"contexts per pool for the target: {d.needed_contexts}; main stage: {d.contexts} contexts "
             f"(contexts 0-{d.pilot_contexts - 1} are the pilot's, reused from the cache)"]
    if d.bound:
        budget = f"{target.max_tokens:,} tokens" if d.bound == "tokens" else f"{target.max_minutes:g} minutes"
        lines.append(f"budget bound: {budget} allow {d.contexts} contexts (measured {d.tokens_per_context:,.0f} tokens and "
                     f"{d.seconds_per_context:.2f} s per context); the target width is not reached")
    lines.append(f"expected widths at {d.contexts} contexts: {_fmt(d.expected_widths)}")
    if d.unreachable:
        lines.append(f"cannot reach {target.width:g} by drawing more (the reference alone is too noisy): {', '.join(d.unreachable)}")
    return lines


def outcome_lines(result: RunResult, decision: Decision, target: TargetWidth) -> list[str]:
    """How the main stage's headline widths compare with the target."""
    if result.estimates is None:
        return []
    widths = final_widths(result.estimates)
    wide = [k for k, v in widths.items() if not (math.isfinite(v) and v <= target.width)]
    lines = [f"final widths at {decision.contexts} contexts: {_fmt(widths)}"]
    if not wide:
        lines.append(f"every headline width is <= {target.width:g}")
    limited = [k for k in wide if k in decision.unreachable]
    if limited:
        lines.append(f"{len(limited)} headline width(s) above {target.width:g} (the reference limits them): {', '.join(limited)}")
    rest = [k for k in wide if k not in decision.unreachable]
    if rest:
        why = "the budget bound" if decision.bound else "the pilot's variance estimate was optimistic"
        lines.append(f"{len(rest)} headline width(s) above {target.width:g} ({why}): {', '.join(rest)}")
    return lines


async def run_to_width_async(config: RunConfig, registries: Registries, target: TargetWidth, mimic: Mimic,
                             say: Say) -> RunResult:
    """Pilot, decision, main stage (both ordinary runs: a rerun resumes them); the main run's result."""
    check_config(config)
    pilot_config = replace(config, contexts=target.pilot_contexts, max_tokens=target.max_tokens, summary_to="off")
    pilot = await run_async(pilot_config, registries, mimic)
    say(f"pilot {pilot.run_id}: {pilot.status}, {pilot.done}/{pilot.planned} draws, {pilot.model_calls} model calls")
    if pilot.status != "complete":
        return pilot
    decision = recorded_decision(pilot, target)
    if decision is None:
        decision = decide(pilot, target)
        record_decision(pilot, target, decision)
    for line in describe(decision, target):
        say(line)
    if decision.contexts == decision.pilot_contexts:
        say("the pilot is the whole run")
        return pilot
    remaining = None if target.max_tokens is None else target.max_tokens - decision.pilot_tokens
    main = await run_async(replace(config, contexts=decision.contexts, max_tokens=remaining), registries, mimic)
    for line in outcome_lines(main, decision, target):
        say(line)
    return main


def check_config(config: RunConfig) -> None:
    """A staged run sizes its stages itself."""
    if config.contexts is not None or config.samples is not None:
        raise UsageError("--target-width chooses the contexts itself", "drop --contexts and -n (use --pilot-contexts)")


def run_to_width(configs: Sequence[RunConfig], registries: Registries, target: TargetWidth, say: Say,
                 mimic: Mimic | None = None) -> list[RunResult]:
    """Staged runs in order, one mimic per model (``mimic``: use this one, not closed); stop after one that does not complete."""
    for config in configs:
        check_config(config)
    return run_many(configs, registries, lambda config, regs, use: run_to_width_async(config, regs, target, use, say), mimic)
