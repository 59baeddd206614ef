"""`mimic curves RUN_DIR... --task T --out FILE.png|svg`: draw Goodhart curves from runs' estimates."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import UsageError
from harness.protocols import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic curves`."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders holding runs (one curve per model)")
    parser.add_argument("--task", metavar="T", help="the task to draw (needed when the runs hold several)")
    parser.add_argument("--out", required=True, metavar="FILE", help="where to write the chart: FILE.svg or FILE.png")
    parser.add_argument("--pool", default="none", help="the pool whose tilt sweep to draw (default none; e.g. prompt:5)")
    parser.add_argument("--title", help="chart title (default: the task's name)")


def run(args: argparse.Namespace) -> int:
    """Load the runs, pick the task, draw the chart and say where it went."""
    from harness.leaderboard.goodhart_plot import goodhart_chart
    from harness.leaderboard.runs import load_runs

    out = Path(args.out)
    if out.suffix.lower() not in (".svg", ".png"):
        raise UsageError(f"--out {args.out} is neither .svg nor .png", "pass --out curves.svg or --out curves.png")
    missing = [p for p in args.runs if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such run directory: {', '.join(missing)}",
                         "pass run directories (results/runs/<run_id>) or a results folder")
    data = load_runs(args.runs, with_draws=False)
    estimates = data.estimates
    tasks = sorted(set(estimates["task"].drop_nulls().to_list())) if "task" in estimates.columns else []
    task = args.task
    if task is None:
        if len(tasks) > 1:
            raise UsageError(f"the runs hold several tasks ({', '.join(tasks)})", "pick one with --task")
        task = tasks[0] if tasks else None
    elif task not in tasks:
        raise UsageError(f"no run of task {task!r} among these runs (tasks: {', '.join(tasks) or 'none'})", "check --task")
    out.parent.mkdir(parents=True, exist_ok=True)
    goodhart_chart(estimates, out, task=task, pool=args.pool, title=args.title)
    models = estimates.filter(estimates["estimator"] == "goodhart_curve")
    print(f"wrote {out} ({len(set(models['model'].to_list())) if 'model' in models.columns else 0} model(s), task {task})")
    return 0


COMMAND = Command("curves", "Draw Goodhart curves (latent shift and success against KL): mimic curves RUN_DIR... --out FILE.svg",
                  add_arguments, run)
