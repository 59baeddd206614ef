"""`mimic plan RUN_DIR --budget-minutes M | --budget-tokens N | --width W`: contexts x samples per pool.

The headline rows are those ``mimic run --target-width`` sizes (:func:`harness.run.staged.headline`:
``control_success`` of the prompt pools, ``latent_shift`` under every mimic condition). Costs come from
:mod:`harness.run.costs`; the design from :mod:`harness.stats.planning_budget`. Each pool draws its
main context size and, for the ``none`` pool, the synchronisation curve's other sizes, which feed only
the curve: the report gives their share of the cost and the curve widths they buy (``--drop-curve``
plans without them).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import polars as pl

from harness.cli.common import require_number
from harness.errors import UsageError
from harness.run.costs import Costs, given_costs, manifest_costs, measure_costs
from harness.stats.planning_budget import (Arm, PoolDesign, UnitCosts, design_for_budget, design_for_width,
                                           headline_width, label, reference_floor, total_cost)

MS_PER_MINUTE = 60_000.0


def check_flags(args: argparse.Namespace) -> None:
    """One-line usage errors for the design flags."""
    if args.budget_minutes is not None and args.budget_tokens is not None:
        raise UsageError("give --budget-minutes or --budget-tokens, not both", "e.g. mimic plan RUN_DIR --budget-minutes 10")
    require_number(args.budget_minutes, "--budget-minutes", low=0.0, low_open=True, example=10)
    if args.budget_tokens is not None and args.budget_tokens < 1:
        raise UsageError(f"--budget-tokens must be at least 1, got {args.budget_tokens}", "pass e.g. --budget-tokens 200000")
    if (args.cost_prefill_ms is None) != (args.cost_token_ms is None):
        raise UsageError("give --cost-prefill-ms and --cost-token-ms together", "e.g. --cost-prefill-ms 2 --cost-token-ms 40")
    require_number(args.cost_prefill_ms, "--cost-prefill-ms", low=0.0, example=2)
    require_number(args.cost_token_ms, "--cost-token-ms", low=0.0, example=40)
    if args.cost_prefill_ms is not None and args.cost_prefill_ms + args.cost_token_ms <= 0:
        raise UsageError("--cost-prefill-ms and --cost-token-ms are both 0", "pass the measured costs (or --measure-cost)")
    if args.measure_cost and args.cost_prefill_ms is not None:
        raise UsageError("give --measure-cost or --cost-prefill-ms/--cost-token-ms, not both", "drop one of them")
    budget = args.budget_minutes is not None or args.budget_tokens is not None
    if not args.pilot and (budget or args.measure_cost or args.cost_prefill_ms is not None or args.drop_curve):
        raise UsageError("a design (--budget-*, --cost-*, --measure-cost, --drop-curve) needs a pilot RUN_DIR",
                         "run a small pilot first: mimic run -m MODEL -t TASK --contexts 4")


def main_exemplars(manifest: dict[str, Any], draws: pl.DataFrame) -> int | None:
    """The run's main context size (the headline rows' prompts): the manifest's plan, else the most common."""
    planned = (manifest.get("plan") or {}).get("n_exemplars")
    if planned is not None:
        return int(planned)
    if "n_exemplars" not in draws.columns or draws.height == 0:
        return None
    return int(draws.get_column("n_exemplars").mode().sort()[-1])


def pilot_arms(draws: pl.DataFrame, main: int | None, drop_curve: bool) -> list[Arm]:
    """Each (pool, context size) of the pilot: prompt tokens per context, completion tokens per draw."""
    keys = [c for c in ("pool", "n_exemplars") if c in draws.columns]
    frame = draws.with_columns(*(pl.lit(0).alias(c) for c in ("prompt_tokens", "completion_tokens", "n_exemplars", "context_id")
                                 if c not in draws.columns))
    contexts = frame.group_by([*keys, "context_id"]).agg(pl.col("prompt_tokens").first().fill_null(0))
    prompts = {tuple(r[:-1]): r[-1] for r in contexts.group_by(keys).agg(pl.col("prompt_tokens").mean()).iter_rows()}
    arms = []
    for row in frame.group_by(keys).agg(pl.col("completion_tokens").fill_null(0).mean()).iter_rows(named=True):
        size = int(row.get("n_exemplars") or 0)
        headline = main is None or size == main
        if headline or not drop_curve:
            arms.append(Arm(row["pool"], size, float(prompts[tuple(row[k] for k in keys)] or 0.0),
                            float(row["completion_tokens"] or 0.0), headline))
    return sorted(arms, key=lambda a: (a.pool, not a.headline, a.n_exemplars))


def design_costs(args: argparse.Namespace, run_dir: Path, manifest: dict[str, Any], draws: pl.DataFrame) -> Costs | None:
    """Costs given, measured, or read from the pilot's manifest (None where none of these can say)."""
    if args.cost_prefill_ms is not None:
        return given_costs(args.cost_prefill_ms, args.cost_token_ms)
    if args.measure_cost:
        return measure_costs(run_dir, manifest, draws)
    try:
        return manifest_costs(manifest, draws)
    except UsageError:
        if args.budget_minutes is not None:
            raise
        return None


def pool_contexts(draws: pl.DataFrame) -> dict[str, int]:
    """Contexts per pool in the pilot (a context is one (n_exemplars, context_id) prompt)."""
    keys = [c for c in ("n_exemplars", "context_id") if c in draws.columns]
    if "pool" not in draws.columns or "context_id" not in keys:
        return {}
    return {p: n for p, n in draws.group_by("pool").agg(pl.struct(keys).n_unique().alias("n")).iter_rows()}


def headline_plan_inputs(estimates: pl.DataFrame, draws: pl.DataFrame, main: int | None) -> list:
    """The planner's inputs for the headline rows (yields counted on the main context size's draws)."""
    from harness.run.staged import headline
    from harness.stats import planning

    if main is not None and "n_exemplars" in draws.columns:
        draws = draws.filter(pl.col("n_exemplars") == main)
    sizes = dict(draws.group_by("pool").len().iter_rows()) if "pool" in draws.columns else {}
    return planning.inputs_from_estimates(headline(estimates), sizes, pool_contexts(draws))


def curve_rows(estimates: pl.DataFrame, designs: list[PoolDesign], pilot_contexts: int) -> dict[str, tuple[float, float]]:
    """Per synchronisation estimator, its widest pilot half-width and that scaled by contexts alone (sqrt(C0 / C))."""
    contexts = next((d.contexts for d in designs if d.pool == "none"), 0)
    out: dict[str, tuple[float, float]] = {}
    for r in estimates.filter(pl.col("estimator").str.starts_with("sync_")).iter_rows(named=True):
        lo, hi = r["lower"], r["upper"]
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or not contexts:
            continue
        half = (hi - lo) / 2
        if half > out.get(r["estimator"], (-1.0, 0.0))[0]:
            out[r["estimator"]] = (half, half * math.sqrt(pilot_contexts / contexts))
    return out


def budget_and_unit(args: argparse.Namespace, costs: Costs | None) -> tuple[float | None, UnitCosts | None]:
    """The budget in the unit the costs are in (ms, or tokens) and the unit costs (None: no costs known)."""
    if args.budget_tokens is not None:
        return float(args.budget_tokens), UnitCosts(1.0, 1.0)
    if costs is None:
        return None, None
    unit = UnitCosts(costs.prefill_ms, costs.decode_ms, costs.call_ms)
    return (args.budget_minutes * MS_PER_MINUTE if args.budget_minutes is not None else None), unit


def design_report(args: argparse.Namespace, run_dir: Path, estimates: pl.DataFrame, draws: pl.DataFrame) -> dict[str, Any]:
    """Everything the design section prints (JSON-ready)."""
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")) if (run_dir / "manifest.json").exists() else {}
    main = main_exemplars(manifest, draws)
    arms = pilot_arms(draws, main, args.drop_curve)
    inputs = headline_plan_inputs(estimates, draws, main)
    costs = design_costs(args, run_dir, manifest, draws)
    budget, unit = budget_and_unit(args, costs)
    report: dict[str, Any] = {"costs": None if costs is None else vars(costs), "unit": "tokens" if args.budget_tokens else "ms",
                              "budget": budget, "arms": [vars(a) for a in arms], "model": model_argument(manifest.get("model") or {}),
                              "task": manifest.get("task_name"), "pilot_contexts": (manifest.get("plan") or {}).get("contexts"),
                              # the pilot ran without its task's curve (--context-sizes alone): its one-run command does too
                              "drop_curve": bool(args.drop_curve) or (manifest.get("overrides") or {}).get("context_sizes") == []}
    shown = unit or UnitCosts(0.0, 0.0)  # no costs: the design still follows from the width, its time is unknown
    if budget is not None:
        found = design_for_budget(inputs, arms, budget, shown)
        if found is None:
            smallest = total_cost(design_for_width(inputs, arms, 1e6, shown))
            priced = f"; {costs.describe()}" if costs is not None and args.budget_tokens is None else ""
            raise UsageError(f"the budget is below the smallest design with intervals ({describe_cost(smallest, report)}{priced})",
                             "raise --budget-minutes / --budget-tokens")
        designs, mimic_width = found
        uniform = design_for_budget(inputs, arms, budget, shown, uniform=True)
        report["mimic_side_width"] = mimic_width
    else:
        designs = design_for_width(inputs, arms, args.width, shown)
        uniform = (design_for_width(inputs, arms, args.width, shown, uniform=True), None)
        report["unreachable"] = [label(p) for p in inputs if reference_floor(p) >= args.width]
    report["designs"] = [pool_json(d) for d in designs]
    report["uniform"] = None if uniform is None else [pool_json(d) for d in uniform[0]]
    report["known_costs"] = unit is not None
    report["pilot_half_widths"] = {label(p): p.half_width for p in inputs}
    report["curve"] = curve_rows(estimates, designs, int(report["pilot_contexts"] or 0)) if report["pilot_contexts"] else {}
    return report


def model_argument(model: dict[str, Any]) -> str | None:
    """What ``mimic run -m`` takes for the pilot's model: its config label, else ``backend:model``."""
    if not model.get("backend"):
        return None
    return model.get("label") or f"{model['backend']}:{model['model']}"


def pool_json(d: PoolDesign) -> dict[str, Any]:
    """A pool design as JSON (NaN as None)."""
    widths = {k: (v if math.isfinite(v) else None) for k, v in d.half_widths.items()}
    return {"pool": d.pool, "contexts": d.contexts, "samples": d.samples, "cost": d.cost, "curve_cost": d.curve_cost,
            "draws": d.draws, "half_widths": widths}


def describe_cost(cost: float, report: dict[str, Any]) -> str:
    """A cost in the report's unit: minutes, or tokens."""
    if report["unit"] == "tokens":
        return f"{cost:,.0f} tokens"
    return f"{cost / MS_PER_MINUTE:.3g} minutes" if report.get("known_costs", True) else "time unknown"


def _value(v: float | None, fmt: str = "±{:.3g}") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _widest(widths: dict[str, float | None]) -> tuple[str, float | None]:
    finite = {k: v for k, v in widths.items() if v is not None and math.isfinite(v)}
    return max(finite.items(), key=lambda kv: kv[1]) if finite else ("-", None)


def render_report(report: dict[str, Any], width: float) -> str:
    """The design as a table (one row per pool; every row's widths are in --json) and lines on the one-run design and the curve."""
    designs = report["designs"]
    spend = "tokens" if report["unit"] == "tokens" else "minutes"
    if report["budget"] is not None:
        head = (f"Design for a budget of {describe_cost(report['budget'], report)}: the narrowest widest headline half-width "
                f"(its mimic side ±{report['mimic_side_width']:.3g}; the reference part of each row is fixed).")
    else:
        head = f"Cheapest design in which every headline half-width is at most ±{width:g}."
    shown = report.get("known_costs") or spend == "tokens"
    lines = [head, describe_costs(report["costs"], report), "",
             f"| pool | C | S | headline rows | widest half-width now | widest expected half-width | draws | {spend} |",
             "|---|---|---|---|---|---|---|---|"]
    for d in designs:
        name, expected = _widest(d["half_widths"])
        _, now = _widest({k: report["pilot_half_widths"].get(k) for k in d["half_widths"]})
        cost = describe_cost(d["cost"], report).split(" ")[0] if shown else "-"
        lines.append(f"| {d['pool']} | {d['contexts']} | {d['samples']} | {len(d['half_widths'])} | {_value(now)} | "
                     f"{_value(expected)} ({name}) | {d['draws']:,} | {cost} |")
    total = describe_cost(sum(d["cost"] for d in designs), report).split(" ")[0] if shown else "-"
    lines.append(f"| total | | | | | {_value(headline_width(rebuild(designs)))} | {sum(d['draws'] for d in designs):,} | {total} |")
    lines += [""] + one_run_lines(report) + curve_lines(report) + caveat_lines(report)
    return "\n".join(lines)


def rebuild(designs: list[dict[str, Any]]) -> list[PoolDesign]:
    """Pool designs back from their JSON form."""
    nan = float("nan")
    return [PoolDesign(d["pool"], d["contexts"], d["samples"], d["cost"], d["curve_cost"],
                       {k: (nan if v is None else v) for k, v in d["half_widths"].items()}, d["draws"]) for d in designs]


def describe_costs(costs: dict[str, Any] | None, report: dict[str, Any]) -> str:
    """Where the costs come from, in one line."""
    if report["unit"] == "tokens":
        return ("Costs: tokens the model processes (a context's prompt once for its S samples, every generated token); "
                "`mimic run --max-tokens` counts each draw's prompt, as an API bills.")
    if costs is None:
        return "Costs: unknown (the pilot's draws came from the cache): pass --measure-cost or --cost-prefill-ms X --cost-token-ms Y."
    return "C" + Costs(**costs).describe()[1:] + "."


def one_run_lines(report: dict[str, Any]) -> list[str]:
    """One `mimic run` takes one C x S for every pool: the best such design, and its command."""
    uniform = report["uniform"]
    if not uniform:
        return ["One `mimic run` takes one C x S for every pool; none fits the budget (raise it)."]
    c, s = uniform[0]["contexts"], uniform[0]["samples"]
    cost = sum(d["cost"] for d in uniform)
    model, task = report.get("model") or "MODEL", report.get("task") or "TASK"
    if report.get("model") and ":" not in model:
        model += " --model-config FILE"  # a name from the pilot's model config file
    return [f"One `mimic run` takes one C x S for every pool; the best such design: {c} contexts x {s} samples, widest "
            f"half-width {_value(headline_width(rebuild(uniform)))}, {describe_cost(cost, report)}:",
            f"    mimic run -m {model} -t {task} --contexts {c} --samples-per-context {s}"
            + (" --context-sizes" if report.get("drop_curve") else "")]


def curve_lines(report: dict[str, Any]) -> list[str]:
    """What the synchronisation curve's extra context sizes cost and buy."""
    curve_cost = sum(d["curve_cost"] for d in report["designs"])
    sizes = sorted({a["n_exemplars"] for a in report["arms"] if not a["headline"]})
    if not sizes:
        return ["The synchronisation curve's extra context sizes are not in this plan (--drop-curve, or the task has none)."]
    total = sum(d["cost"] for d in report["designs"])
    share = curve_cost / total if total else 0.0
    bought = ", ".join(f"{k} {_value(now)} -> {_value(then)}" for k, (now, then) in sorted(report["curve"].items()))
    return [f"The synchronisation curve's extra context sizes ({', '.join(map(str, sizes))} exemplars, pool none) are "
            f"{share:.0%} of this plan ({describe_cost(curve_cost, report)}) and feed only the curve, not the headline rows"
            + (f"; the widest half-width of each curve estimator, pilot -> plan (scaled by contexts alone): {bought}" if bought else "")
            + ". --drop-curve plans without them (then run with `mimic run --context-sizes`, the flag alone: no curve)."]


def caveat_lines(report: dict[str, Any]) -> list[str]:
    """What the expected time leaves out, and the rows the reference limits."""
    lines = ["Not counted: loading the model, estimation, and the pilot's draws the cache returns to a run with the "
             "pilot's seed (contexts 0..C0-1 at the same S cost nothing again)."]
    if report.get("unreachable"):
        lines.append(f"Cannot reach the width by drawing more (the reference alone is too noisy): {', '.join(report['unreachable'])}")
    return lines
