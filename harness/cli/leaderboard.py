"""`mimic leaderboard RESULTS... --out DIR`: merge runs and write Markdown, JSON, a static site and
``README.md`` (the findings in words, as `mimic report` writes them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.protocols import Command

DEFAULT_FORMATS = "markdown,json,html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic leaderboard`."""
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="run directories, or folders that contain runs (e.g. results/runs)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--format", default=DEFAULT_FORMATS, metavar="LIST",
                        help=f"comma-separated writers (default {DEFAULT_FORMATS}; see `mimic plugins --components`)")
    parser.add_argument("--no-draws", action="store_true", help="read only manifests and estimates (faster; no distributions or examples)")
    parser.add_argument("--no-findings", action="store_true",
                        help="do not write README.md (the findings in words; a README.md not written by mimic is never overwritten)")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Load the runs, report how they group, and call each writer."""
    from harness.leaderboard.publish import publish
    from harness.plugins import build_registries

    out = Path(args.out)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    written = publish(args.results, out, build_registries(), formats=formats, with_draws=not args.no_draws,
                      findings=not args.no_findings, say=_say)
    index = out / "index.html"
    for path in written:
        if path.suffix in (".md", ".json") or path == index:
            print(f"wrote {path}")
    if index in written:
        print(f"open {index.resolve().as_uri()}")
    return 0


COMMAND = Command("leaderboard", "Merge runs into a leaderboard: mimic leaderboard results/runs --out results/leaderboard.", add_arguments, run)
