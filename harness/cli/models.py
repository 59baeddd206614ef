"""`mimic models`: list mimic backends and how to name models for each."""

from __future__ import annotations

import argparse
import json

from harness.plugins import build_registries
from harness.protocols import Command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic models`."""
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """List backends."""
    registries = build_registries()
    rows = [
        {"backend": e.name, "plugin": e.plugin, "version": e.plugin_version, "description": e.description}
        for e in registries.mimics
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['backend']:<12} {row['plugin']} {row['version']}  {row['description']}")
    return 0


COMMAND = Command("models", "List mimic backends (use as BACKEND:MODEL).", add_arguments, run)
