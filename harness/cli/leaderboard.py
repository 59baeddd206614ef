"""`mimic leaderboard RESULTS... --out DIR`: merge runs and write Markdown, JSON and a static site."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import UsageError
from harness.factories import create_component
from harness.protocols import BuildContext, Command

DEFAULT_FORMATS = "markdown,json,html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic leaderboard`."""
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="run directories, or folders that contain runs (e.g. results/runs)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    parser.add_argument("--format", default=DEFAULT_FORMATS, metavar="LIST",
                        help=f"comma-separated writers (default {DEFAULT_FORMATS}; see `mimic plugins --components`)")
    parser.add_argument("--no-draws", action="store_true", help="read only manifests and estimates (faster; no distributions or examples)")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Load the runs, report how they group, and call each writer."""
    from harness.leaderboard.document import build_document
    from harness.leaderboard.runs import load_runs
    from harness.plugins import build_registries

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats:
        raise UsageError("--format names no writer", f"pass e.g. --format {DEFAULT_FORMATS}")
    registries = build_registries()
    unknown = [f for f in formats if f not in registries.leaderboard_writers]
    if unknown:
        known = ", ".join(registries.leaderboard_writers.names()) or "none installed"
        raise UsageError(f"unknown leaderboard format {', '.join(unknown)} (known: {known})", "pick from the known formats")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder", "pass a folder path")
    data = load_runs(args.results, with_draws=not args.no_draws, say=_say)
    doc = build_document(data)
    for message in doc["messages"]:
        print(f"note: {message}", file=sys.stderr)
    print(f"merged {len(doc['runs'])} run(s) of {len(doc['models'])} model(s) into {len(doc['sections'])} section(s)")
    ctx = BuildContext(registries=registries)
    written = []
    for fmt in formats:
        writer = create_component(registries.leaderboard_writers, fmt, {}, ctx, where="--format")
        written.extend(Path(p) for p in writer.write(data, out))
    index = out / "index.html"
    for path in written:
        if path.suffix in (".md", ".json") or path == index:
            print(f"wrote {path}")
    if index in written:
        print(f"open {index.resolve().as_uri()}")
    return 0


COMMAND = Command("leaderboard", "Merge runs into a leaderboard: mimic leaderboard results/runs --out results/leaderboard.", add_arguments, run)
