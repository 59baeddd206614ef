"""`mimic compare A B`: paired differences between two models on the same tasks and seeds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.errors import UsageError
from harness.protocols import Command

DEFAULT_RESULTS = "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic compare`."""
    parser.add_argument("a", metavar="A", help="a run directory, or a model id / display name found under --results")
    parser.add_argument("b", metavar="B", help="the same for the second model")
    parser.add_argument("--results", action="append", metavar="DIR",
                        help=f"where to look up model ids (repeatable; default {DEFAULT_RESULTS})")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for paired intervals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def resolve(spec: str, results: list[str]) -> list[Path]:
    """Run directories for one side: the directory itself, or every run of that model under ``results``."""
    from harness.leaderboard.runs import find_run_dirs, run_manifest

    path = Path(spec)
    if (path / "manifest.json").is_file():
        return [path]
    if path.is_dir():  # a folder of runs would mix models on one side
        raise UsageError(f"{spec} is a folder without a manifest.json, not a run directory",
                         "pass one run directory per side, or model ids with --results FOLDER")
    roots = [r for r in results if Path(r).is_dir()]
    if not roots:
        raise UsageError(f"{spec!r} is not a run directory and no results folder exists to look it up in ({', '.join(results)})",
                         "pass run directories, or --results DIR holding runs")
    matches, known = [], set()
    for run_dir in find_run_dirs(roots):
        model = run_manifest(run_dir).model
        known.add(str(model.model_id))
        if spec in (model.model_id, model.display_name):
            matches.append(run_dir)
    if not matches:
        shown = ", ".join(sorted(known)[:10]) + (" ..." if len(known) > 10 else "")
        raise UsageError(f"no run of model {spec!r} under {', '.join(roots)} (models found: {shown or 'none'})",
                         "pass a run directory, or a model id exactly as the leaderboard shows it")
    return matches


def run(args: argparse.Namespace) -> int:
    """Resolve both sides, compare them and print the report."""
    from harness.leaderboard.compare import compare, render_text
    from harness.leaderboard.runs import load_runs

    if args.n_boot < 100:
        raise UsageError(f"--n-boot must be at least 100, got {args.n_boot}", "pass --n-boot 1000 (percentile intervals need many replicates)")
    if args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}", "pass e.g. --seed 0")
    results = args.results or [DEFAULT_RESULTS]
    dirs_a, dirs_b = resolve(args.a, results), resolve(args.b, results)
    say = lambda message: print(message, file=sys.stderr)  # noqa: E731
    result = compare(load_runs(dirs_a, say=say), load_runs(dirs_b, say=say), label_a=args.a, label_b=args.b, n_boot=args.n_boot, seed=args.seed)
    print(json.dumps(result, indent=1, ensure_ascii=False) if args.json else render_text(result), end="\n" if args.json else "")
    return 0


COMMAND = Command("compare", "Paired differences of two models: mimic compare RUN_A RUN_B (or two model ids).", add_arguments, run)
