"""`mimic report RESULTS... [--out FILE]`: the leaderboard's findings in words, written from the runs.

The text (how the board was made, the synchronisation score and whether models are distinguishable,
control success, the forcing set, Goodhart-proneness, synchronisation curves, and a closing count
of what the data decided) comes from the runs' manifests and estimates, every number with its
interval or "no interval (reason)" and its flags; see :mod:`harness.leaderboard.prose`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UsageError
from harness.protocols import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic report`."""
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="run directories, or folders that contain runs (e.g. results/published/runs)")
    parser.add_argument("--out", metavar="FILE", help="write the Markdown here (e.g. results/published/README.md); default: print it")


def run(args: argparse.Namespace) -> int:
    """Load the runs, build the leaderboard document (the score's joint bootstrap reads saved draws), write the prose."""
    from harness.leaderboard.document import build_document
    from harness.leaderboard.prose import render_report
    from harness.leaderboard.runs import load_runs

    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise UsageError(f"--out {out} is a folder", "pass a file path, e.g. --out results/published/README.md")
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist", "create it first, or pick another path")
    data = load_runs(args.results, say=lambda message: print(message, file=sys.stderr))
    text = render_report(build_document(data), data.manifests)
    if out is None:
        sys.stdout.write(text)
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


COMMAND = Command("report", "Write a leaderboard's findings from its runs: mimic report results/runs --out README.md.", add_arguments, run)
