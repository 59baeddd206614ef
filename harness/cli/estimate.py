"""`mimic estimate RUN_DIR...`: recompute every estimate of finished runs from the tables they wrote.

    mimic estimate results/published/runs --out /tmp/re      # a copy of each run, estimates recomputed
    mimic estimate results/runs/RUN_ID --overwrite           # in place, replacing its estimates

No model is loaded: the task comes from the manifest, the reference (with its world draws) from
``reference.parquet`` (its hash must be the manifest's), the draws from ``draws.parquet``, the field
probabilities from ``field_probs.parquet``, and the seed, estimators and n_boot from the manifest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import MIN_N_BOOT, require_at_least
from harness.protocols import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic estimate`."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders that contain runs")
    parser.add_argument("--out", metavar="DIR", help="write a copy of each run (its tables and new estimates) to DIR/<run> "
                        "instead of into the run directory")
    parser.add_argument("--overwrite", action="store_true", help="replace estimates.parquet and estimates.json where they "
                        "exist (without it, existing estimates are never touched; summary.md is rewritten with them)")
    parser.add_argument("--n-boot", type=int, metavar="N", help="bootstrap resamples (default: what the run used; 1000 "
                        "for runs that did not record it)")
    parser.add_argument("--estimator", dest="estimators", action="append", metavar="NAME",
                        help="run only these estimators (repeatable; default: those the run used)")


def run(args: argparse.Namespace) -> int:
    """Check every run first, then re-estimate and write each, one line per run."""
    from harness.leaderboard.runs import find_run_dirs
    from harness.plugins import build_registries
    from harness.run import reestimate as re

    require_at_least(args.n_boot, MIN_N_BOOT, "--n-boot", 1000)
    out = Path(args.out) if args.out else None
    if out is not None:
        re.check_out_dir(out)
    registries = build_registries()
    runs = [re.read_shipped_run(d) for d in find_run_dirs(args.runs)]
    planned = []
    for shipped in runs:  # every check before the first write: bad input leaves every run as it was
        re.check_writable(shipped, out, args.overwrite)
        planned.append((shipped, *re.settings_for(shipped.manifest, registries, args.estimators, args.n_boot)))
    for shipped, settings, known in planned:
        result = re.Reestimated(shipped, re.reestimate(shipped, registries, settings), settings, known)
        target = re.write_reestimated(result, out)
        note = "" if known else f" (n_boot not recorded by the run: assumed {re.DEFAULT_N_BOOT}, the default of `mimic run`)"
        print(f"{shipped.manifest.run_id}: {result.estimates.height} estimates from {shipped.draws.height} draws, "
              f"{len(settings.estimators or ())} estimators, n_boot {settings.n_boot}, seed {shipped.manifest.seed} -> {target}{note}")
    return 0


COMMAND = Command("estimate", "Recompute a finished run's estimates from its tables, without a model: mimic estimate RUN_DIR.",
                  add_arguments, run)
