"""`mimic plan`: how many draws (C contexts x S samples per pool) reach a target interval width.

    mimic plan results/runs/RUN_ID --width 0.05     # from a pilot run
    mimic plan --task bookworld --width 0.05        # no pilot: the reference stands in for the mimic

From a pilot it reads the run's ``estimates.parquet`` (or, for a pilot that stopped before
estimating, recomputes the estimates from ``draws.parquet``/``draws.jsonl``, ``reference.parquet``
and the task in ``manifest.json``), takes each estimate's half-width, rows used, design effect
and reference/mimic variance split, and scales them (harness/stats/planning.py). Token costs
come from the pilot's prompt and completion token counts; without a pilot they are guessed
from the reference texts (about 4 characters a token) and the intra-context correlation is
``--icc``.

With a pilot, it also prints a *design*: contexts x samples per pool (harness/stats/planning_budget.py)
at the costs of a prompt and a generated token on the pilot's backend (harness/run/costs.py):

    mimic plan RUN_DIR --budget-minutes 10 --measure-cost   # the narrowest headline intervals in 10 minutes
    mimic plan RUN_DIR --width 0.05 --cost-prefill-ms 2 --cost-token-ms 40   # the cheapest design reaching ±0.05
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from harness.cli.common import MIN_N_BOOT, require_at_least, require_number
from harness.errors import DataError, UsageError
from harness.protocols import BuildContext, Command, EstimationInputs
from harness.taskspec import TaskSpec

if TYPE_CHECKING:  # scipy.stats costs a second: `mimic --help` must not pay for it
    from harness.stats import planning


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic plan`."""
    parser.add_argument("pilot", nargs="?", metavar="RUN_DIR", help="a pilot run directory (results/runs/RUN_ID)")
    parser.add_argument("--task", "-t", metavar="TASK", help="plan from a task's reference data alone (no pilot)")
    parser.add_argument("--width", type=float, default=0.05, help="target half-width of the 95%% intervals (default 0.05)")
    parser.add_argument("--icc", type=float, default=0.1, help="intra-context correlation to assume without a pilot (default 0.1)")
    parser.add_argument("--estimator", dest="estimators", action="append", metavar="NAME", help="plan only these estimators (repeatable)")
    parser.add_argument("--n-boot", type=int, default=300, help="resamples when a pilot's estimates must be recomputed (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed for recomputed estimates (default 0)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    budget = parser.add_argument_group("design for a budget (needs a pilot RUN_DIR)")
    budget.add_argument("--budget-minutes", type=float, metavar="M", help="choose C x S per pool for the narrowest headline intervals in M minutes of model time")
    budget.add_argument("--budget-tokens", type=int, metavar="N", help="... in N tokens the model processes (a context's prompt once, every generated token)")
    budget.add_argument("--cost-prefill-ms", type=float, metavar="X", help="milliseconds per prompt token (with --cost-token-ms)")
    budget.add_argument("--cost-token-ms", type=float, metavar="Y", help="milliseconds per generated token (with --cost-prefill-ms)")
    budget.add_argument("--measure-cost", action="store_true", help="open the pilot's model and time a few calls (seconds)")
    budget.add_argument("--drop-curve", action="store_true", help="plan without the synchronisation curve's extra context sizes")


def read_draws(run_dir: Path) -> pl.DataFrame:
    """The pilot's draws: ``draws.parquet``, else the durable log ``draws.jsonl`` (torn or corrupt lines skipped)."""
    from harness.store import load_draws

    if not (run_dir / "draws.parquet").exists() and not (run_dir / "draws.jsonl").exists():
        raise DataError(f"{run_dir}: no draws.parquet or draws.jsonl", "point at a run directory (results/runs/RUN_ID)")
    frame = load_draws(run_dir)
    if frame.height == 0:
        raise DataError(f"{run_dir}: no complete draws yet", "let the pilot run longer")
    return frame


def pilot_estimates(run_dir: Path, args: argparse.Namespace) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A pilot's estimates (read, or recomputed) and its draws."""
    draws = read_draws(run_dir)
    if (run_dir / "estimates.parquet").exists():
        return pl.read_parquet(run_dir / "estimates.parquet"), draws
    from harness.estimation import build_estimators, run_estimators
    from harness.plugins import build_registries
    from harness.selection import build_controls, select_all

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists() or not (run_dir / "reference.parquet").exists():
        raise DataError(f"{run_dir}: no estimates.parquet, and no manifest.json + reference.parquet to recompute them",
                        "point at a run directory written by `mimic run`")
    task = TaskSpec.from_dict(json.loads(manifest_path.read_text(encoding="utf-8"))["task"])
    registries = build_registries()
    ctx = BuildContext(registries=registries)
    selections = select_all(build_controls(task, registries, ctx), draws, task)
    inputs = EstimationInputs(task, pl.read_parquet(run_dir / "reference.parquet"), draws, selections,
                              seed=args.seed, n_boot=args.n_boot)
    return run_estimators(build_estimators(registries, ctx, args.estimators), inputs, on_error="warn"), draws


def token_costs(draws: pl.DataFrame) -> tuple[float, float]:
    """Mean prompt tokens per context and completion tokens per draw (1, 1 where not recorded)."""
    keys = [c for c in ("pool", "n_exemplars", "context_id") if c in draws.columns]
    prompt = 1.0
    if "prompt_tokens" in draws.columns and keys:
        prompt = float(draws.group_by(keys).agg(pl.col("prompt_tokens").first()).get_column("prompt_tokens").mean() or 1.0)
    completion = float(draws.get_column("completion_tokens").mean() or 1.0) if "completion_tokens" in draws.columns else 1.0
    return max(prompt, 1.0), max(completion, 1.0)


def from_task(args: argparse.Namespace) -> tuple[list[planning.PlanInput], float, float]:
    """Plan inputs and token guesses from a task's reference data (no pilot)."""
    from harness.stats import planning

    from harness.plugins import build_registries
    from harness.reference import load_reference
    from harness.tasks import load_task

    registries = build_registries()
    task = load_task(args.task, registries)
    ref = load_reference(task, registries, BuildContext(registries=registries)).frame
    inputs = planning.inputs_from_reference(ref, task.proxy.feature, task.proxy.values, task.latents, args.icc)
    chars = float(ref.get_column("text").str.len_chars().mean() or 4.0) if "text" in ref.columns else 4.0
    return inputs, (len(task.render.preamble) + task.plan.exemplars * chars) / 4 + 1, chars / 4 + 1


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "never"
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def render(rows: list[planning.PlanRow], width: float, costs: tuple[float, float]) -> str:
    """The plan as a table plus one line per pool."""
    from harness.stats import planning

    cols = ["estimator", "condition", "feature", "half-width now", "n now", "deff", "icc", "status", "rows needed",
            "draws/pool", "C x S", "tokens"]
    lines = [f"Target: 95% interval half-width {width:g}; a context costs ~{costs[0]:,.0f} prompt tokens once "
             f"+ ~{costs[1]:,.0f} per sample.", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        split = f"{r.contexts} x {r.samples_per_context}" if r.status in ("ok", "too few contexts") else "-"
        values = [r.estimator, r.condition, r.feature, r.half_width, r.n or "-", r.deff, r.icc, r.status,
                  r.rows_needed, r.draws_needed, split, r.tokens]
        lines.append("| " + " | ".join(_fmt(v) for v in values) + " |")
    lines.append("")
    pools, needs = planning.pool_summary(rows), planning.interval_contexts(rows)
    for pool, r in sorted(pools.items()):
        line = (f"pool {pool}: {r.contexts} contexts x {r.samples_per_context} samples = {r.draws_needed:,.0f} draws "
                f"(set by {r.estimator} {r.condition} {r.feature})")
        need = needs.get(pool)
        if need is not None and need.contexts > r.contexts:
            line += f"; at least {need.contexts} contexts for an interval on {need.estimator} {need.condition} {need.feature}"
        lines.append(line)
    lines += _context_lines(rows)
    limited = [r for r in rows if r.status == "reference-limited"]
    if limited:
        lines.append(f"{len(limited)} estimate(s) cannot reach ±{width:g}: the reference data alone is too noisy (more reference rows, or a wider target)")
    return "\n".join(lines)


def _context_lines(rows: list[planning.PlanRow]) -> list[str]:
    """Per pool, what its estimates without an interval take; and where the plan raised C so that intervals are reported."""
    from harness.stats import planning

    lines = []
    for pool, r in sorted(planning.interval_contexts(rows).items()):
        count = sum(1 for x in rows if x.pool == pool and x.status == "too few contexts")
        most = f"; the most, {r.estimator} {r.condition} {r.feature}" if count > 1 else f" ({r.estimator} {r.condition} {r.feature})"
        lines.append(f"pool {pool}: {count} estimate(s) have no interval in the pilot{most}: {r.reason}. That takes about "
                     f"{r.contexts} contexts x {r.samples_per_context} samples (at least {r.min_contexts} contexts that keep a row): "
                     f"rerun the pilot with --contexts {r.contexts}, then plan again")
    raised = [r for r in rows if r.status == "ok" and r.contexts_raised]
    if raised:
        lines.append(f"{len(raised)} estimate(s) need more contexts for an interval than for the width: C raised so that "
                     f"at least {min(r.min_contexts for r in raised)} contexts keep a row (no interval from fewer)")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the plan (and, from a pilot, the design: C x S per pool with its expected time)."""
    from harness.cli import plan_design
    from harness.stats import planning

    require_number(args.width, "--width", low=0.0, low_open=True, example=0.05)
    require_number(args.icc, "--icc", low=0.0, high=1.0, example=0.1)
    require_at_least(args.n_boot, MIN_N_BOOT, "--n-boot", 300)
    if bool(args.pilot) == bool(args.task):
        raise UsageError("give either a pilot RUN_DIR or --task NAME", "e.g. mimic plan results/runs/RUN_ID --width 0.05")
    plan_design.check_flags(args)
    report = None
    if args.pilot:
        run_dir = Path(args.pilot)
        if not run_dir.is_dir():
            raise UsageError(f"{run_dir} is not a directory", "point at results/runs/RUN_ID")
        estimates, draws = pilot_estimates(run_dir, args)
        if args.estimators:
            estimates = estimates.filter(pl.col("estimator").is_in(args.estimators))
        sizes = {p: n for p, n in draws.group_by("pool").len().iter_rows()} if "pool" in draws.columns else {}
        inputs, costs = planning.inputs_from_estimates(estimates, sizes, plan_design.pool_contexts(draws)), token_costs(draws)
        report = plan_design.design_report(args, run_dir, estimates, draws)
    else:
        inputs, *costs = from_task(args)
        if args.estimators:
            inputs = [p for p in inputs if p.estimator in args.estimators]
    budget = args.budget_minutes is not None or args.budget_tokens is not None
    if args.json:
        out = {"design": report} if budget else {"width": args.width, "prompt_tokens": costs[0], "completion_tokens": costs[1],
                                                 "rows": planning.as_dicts(planning.plan(inputs, args.width, *costs)), "design": report}
        print(json.dumps(out, indent=2, default=_json_default))
    elif budget:
        print(plan_design.render_report(report, args.width))
    else:
        print(render(planning.plan(inputs, args.width, *costs), args.width, tuple(costs)))
        if report is not None:
            print("\n" + plan_design.render_report(report, args.width))
    return 0


def _json_default(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


COMMAND = Command("plan", "Plan samples per condition (C x S) for a target interval width, from a pilot run or a task.",
                  add_arguments, run)
