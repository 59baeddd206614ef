"""`mimic run`: sample models under a task's conditions and estimate; resumable, cached, budgeted."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.cli.common import MIN_N_BOOT, add_model_arguments, require_at_least, resolve_model
from harness.errors import EXIT_INTERRUPTED, BudgetExceeded, UsageError
from harness.modelspec import ModelSpec
from harness.protocols import Command
from harness.records import read_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic run`."""
    add_model_arguments(parser, multiple=True)
    parser.add_argument("--task", "-t", dest="tasks", action="append", default=[], metavar="TASK",
                        help="task name (tasks/NAME.yaml) or path to a task YAML; repeatable")
    parser.add_argument("--out", default="results", metavar="DIR", help="results root; runs go to DIR/runs/RUN_ID (default results)")
    parser.add_argument("--resume", metavar="RUN_ID", help="continue an existing run (same as repeating its command)")
    parser.add_argument("--suite", metavar="SUITE", help="run a suite (tasks/suites/NAME.yaml: models x tasks) and write its leaderboard")
    parser.add_argument("--leaderboard", metavar="DIR", help="write a leaderboard of this invocation's runs here (default with --suite: OUT/leaderboard)")
    plan = parser.add_argument_group("plan (part of the run id)")
    plan.add_argument("--seed", type=int, help="base seed (default: the task's plan.seed)")
    plan.add_argument("-n", "--samples", type=int, metavar="N", help="total draws per pool (overrides contexts x samples)")
    plan.add_argument("--contexts", type=int, metavar="C", help="contexts per pool")
    plan.add_argument("--samples-per-context", type=int, metavar="S", help="samples per context")
    plan.add_argument("--exemplars", type=int, metavar="K", help="exemplars per context")
    plan.add_argument("--context-sizes", type=int, nargs="*", metavar="N",
                      help="the synchronisation curve's context sizes (default: the task's); the flag alone runs no curve")
    calls = parser.add_argument_group("calls")
    calls.add_argument("--concurrency", type=int, default=16, help="most model calls in flight (default 16)")
    calls.add_argument("--request-timeout", type=float, default=120.0, metavar="SECONDS", help="per request (default 120); backends that compute in process (Capability.LOCAL_COMPUTE: gguf) are never timed out")
    calls.add_argument("--max-attempts", type=int, default=8, help="tries per request for transient errors (default 8)")
    calls.add_argument("--retry-wait", type=float, default=0.5, metavar="SECONDS",
                       help="first backoff after a transient error; doubles each retry (default 0.5)")
    calls.add_argument("--estimator", dest="estimators", action="append", metavar="NAME",
                       help="run only these estimators (repeatable; default: all installed)")
    calls.add_argument("--no-cache", action="store_true", help="neither read nor write the draw cache")
    calls.add_argument("--cache-dir", metavar="DIR", help="draw cache directory (default $MIMIC_CACHE_DIR or OUT/cache)")
    execution = parser.add_argument_group("execution")
    execution.add_argument("--executor", choices=["local", "ray"], default="local",
                           help="generate in this process (default), or sharded over a Ray cluster (pip install 'mimic-harness[ray]')")
    execution.add_argument("--ray-address", default="auto", metavar="ADDRESS",
                           help="the Ray cluster to join (default auto: $RAY_ADDRESS, a running local cluster, else a new local one)")
    budget = parser.add_argument_group("budget (per run; a run that reaches it stops and can be resumed)")
    budget.add_argument("--prices", metavar="FILE", help="YAML: MODEL_ID: {prompt: USD per 1M tokens, completion: USD per 1M}")
    budget.add_argument("--max-cost", type=float, metavar="USD", help="stop when a run's model calls cost this much (needs --prices)")
    budget.add_argument("--max-tokens", type=int, metavar="N", help="stop when a run's model calls used this many tokens")
    staged = parser.add_argument_group("target width (a pilot, then a main stage sized from it: harness/run/staged.py)")
    staged.add_argument("--target-width", type=float, metavar="W",
                        help="run until the headline 95%% intervals are W wide (full width), or the budget says stop")
    staged.add_argument("--pilot-contexts", type=int, default=4, metavar="C0", help="contexts per pool in the pilot (default 4)")
    staged.add_argument("--max-minutes", type=float, metavar="M",
                        help="with --target-width: size the main stage to fit M minutes in all (from the pilot's pace)")
    out = parser.add_argument_group("output")
    out.add_argument("--progress", choices=["auto", "rich", "plain", "off"], default="auto",
                     help="progress display (default: rich on a terminal, plain lines otherwise)")
    out.add_argument("--n-boot", type=int, default=1000, help=f"bootstrap resamples for intervals (default 1000, at least {MIN_N_BOOT})")
    out.add_argument("--json", action="store_true", help="print one JSON object per run at the end")


def _resume_target(args: argparse.Namespace) -> tuple[list[ModelSpec], list[str], dict]:
    """Model, task and plan of an existing run (its manifest), so `--resume ID` needs nothing else."""
    manifest = read_manifest(Path(args.out) / "runs" / args.resume)
    model = manifest.model
    if args.models:  # secrets are never stored: the user may pass the spec (with its key) again
        specs = [resolve_model(text, args) for text in args.models]
    else:
        specs = [model.model_spec()]
    tasks = args.tasks or [manifest.task.get("source_path") or manifest.task_name]
    if len(specs) != 1 or len(tasks) != 1:
        raise UsageError("--resume continues one run: pass at most one --model and one --task", "drop the extra ones")
    return specs, tasks, {"seed": manifest.seed, **manifest.overrides}


def build_configs(args: argparse.Namespace) -> list:
    """One RunConfig per (model, task) pair given on the command line."""
    from harness.run import RunConfig, load_prices

    plan = {"seed": args.seed, "samples": args.samples, "contexts": args.contexts,
            "samples_per_context": args.samples_per_context, "n_exemplars": args.exemplars, "context_sizes": args.context_sizes}
    if args.resume:
        specs, tasks, stored = _resume_target(args)
        for key, value in stored.items():
            if plan.get(key) is None:
                plan[key] = value
    else:
        if not args.models:
            raise UsageError("no model given", "pass --model BACKEND:MODEL (see `mimic models`), or --resume RUN_ID")
        if not args.tasks:
            raise UsageError("no task given", "pass --task NAME or --task path/to/task.yaml")
        specs, tasks = [resolve_model(text, args) for text in args.models], args.tasks
    prices = load_prices(args.prices) if args.prices else {}
    # A suite's design for a task fills what the command line left unset.
    task_plans = getattr(args, "task_plans", {})
    by_task = {task: {key: plan[key] if plan[key] is not None else task_plans.get(task, {}).get(key) for key in plan}
               for task in tasks}
    return [
        RunConfig(model=spec, task=task, out_dir=Path(args.out), concurrency=args.concurrency, use_cache=not args.no_cache,
                  cache_dir=Path(args.cache_dir) if args.cache_dir else None, max_cost=args.max_cost, max_tokens=args.max_tokens,
                  prices=prices, request_timeout=args.request_timeout, max_attempts=args.max_attempts, retry_wait=args.retry_wait,
                  estimators=tuple(args.estimators) if args.estimators else None, progress=args.progress,
                  summary_to="stderr" if args.json else "stdout",
                  n_boot=args.n_boot, resume_id=args.resume, executor=args.executor, ray_address=args.ray_address, **by_task[task])
        for spec in specs for task in tasks
    ]


def apply_suite(args: argparse.Namespace) -> None:
    """Fill models, tasks, plan overrides and the leaderboard folder from ``--suite`` (command-line values win)."""
    from harness.suites import load_suite

    if args.resume:
        raise UsageError("--suite and --resume do not go together", "repeat the --suite command to resume all its runs")
    suite = load_suite(args.suite)
    args.models = args.models or list(suite.models)
    args.tasks = args.tasks or list(suite.tasks)
    # Each task's design: the suite-wide plan, then the task's own plan in the suite (build_configs lets
    # the command line win over both).
    args.task_plans = {task: {**suite.plan, **suite.task_plans.get(task, {})} for task in args.tasks}
    if args.leaderboard is None:
        args.leaderboard = str(Path(args.out) / "leaderboard")


def run(args: argparse.Namespace) -> int:
    """Run every (model, task) pair; exit 0 when all completed."""
    import time

    from harness.plugins import build_registries
    from harness.run import run_many

    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}", "pass --concurrency 1 or more")
    require_at_least(args.n_boot, MIN_N_BOOT, "--n-boot", 1000)
    if args.target_width is None and args.max_minutes is not None:
        raise UsageError("--max-minutes sizes a --target-width run", "add --target-width W, or drop --max-minutes")
    if args.suite:
        apply_suite(args)
    configs = build_configs(args)
    registries = build_registries()
    started = time.perf_counter()
    results = _run_staged(args, configs, registries) if args.target_width is not None else run_many(configs, registries)
    for result in results:
        line = (f"{result.run_id}: {result.status}, {result.done}/{result.planned} draws ({result.cached} from the cache), "
                f"{result.model_calls} model calls -> {result.run_dir}")
        if args.json:
            print(json.dumps({"run_id": result.run_id, "run_dir": str(result.run_dir), "status": result.status,
                              "task": result.task, "model": result.model_id, "planned": result.planned, "done": result.done,
                              "cached": result.cached, "model_calls": result.model_calls, "usage": result.usage}))
        else:
            print(line, file=sys.stderr)
    last = results[-1] if results else None
    if args.leaderboard and results and all(r.status == "complete" for r in results):
        _write_leaderboard(args, [r.run_dir for r in results], registries, time.perf_counter() - started)
    if last is None or last.status == "complete":
        return 0
    if last.status == "budget":
        raise BudgetExceeded(f"{last.message}; run {last.run_id} stopped with {last.done}/{last.planned} draws",
                             f"raise the budget, then {last.resume_hint()}")
    print(f"interrupted: run {last.run_id} saved {last.done}/{last.planned} draws; to resume, {last.resume_hint()}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _run_staged(args: argparse.Namespace, configs: list, registries) -> list:
    """Each (model, task) as a pilot then a main stage sized for ``--target-width``."""
    from harness.run.staged import TargetWidth, run_to_width

    if args.resume:
        raise UsageError("--target-width and --resume do not go together", "repeat the --target-width command to resume both stages")
    target = TargetWidth(args.target_width, args.pilot_contexts, args.max_minutes, args.max_tokens)
    return run_to_width(configs, registries, target, say=lambda line: print(line, file=sys.stderr))


def _write_leaderboard(args: argparse.Namespace, run_dirs: list[Path], registries, run_seconds: float) -> None:
    """Publish this invocation's runs and say where the leaderboard is."""
    import time

    from harness.leaderboard.publish import publish

    started = time.perf_counter()
    out = Path(args.leaderboard)
    written = publish(run_dirs, out, registries, say=lambda line: print(line, file=sys.stderr))
    seconds = time.perf_counter() - started
    print(f"timings: runs {run_seconds:.1f} s, leaderboard {seconds:.1f} s", file=sys.stderr)
    index = out / "index.html"
    for path in written:
        if path.suffix == ".md":
            print(f"leaderboard: {path}")
    if index in written:
        print(f"leaderboard site: {index.resolve().as_uri()}")


COMMAND = Command("run", "Sample models under a task's conditions and estimate (resumable): mimic run -m MODEL -t TASK.",
                  add_arguments, run)
