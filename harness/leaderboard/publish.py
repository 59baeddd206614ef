"""Write a leaderboard from run directories through the registered writers (CLI and suites share it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from harness.errors import UsageError
from harness.factories import create_component
from harness.protocols import BuildContext
from harness.registry import Registries

DEFAULT_FORMATS = ("markdown", "json", "html")


def publish(results: Iterable[str | Path], out: Path, registries: Registries, *, formats: Iterable[str] = DEFAULT_FORMATS,
            with_draws: bool = True, say: Callable[[str], None] = print) -> list[Path]:
    """Merge the runs under ``results`` and write every format into ``out``; return the written paths."""
    from harness.leaderboard.document import build_document
    from harness.leaderboard.runs import load_runs

    formats = [f for f in formats if f]
    if not formats:
        raise UsageError("--format names no writer", f"pass e.g. --format {','.join(DEFAULT_FORMATS)}")
    unknown = [f for f in formats if f not in registries.leaderboard_writers]
    if unknown:
        known = ", ".join(registries.leaderboard_writers.names()) or "none installed"
        raise UsageError(f"unknown leaderboard format {', '.join(unknown)} (known: {known})", "pick from the known formats")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder", "pass a folder path")
    data = load_runs(results, with_draws=with_draws, say=say)
    doc = build_document(data)
    for message in doc["messages"]:
        say(f"note: {message}")
    say(f"merged {len(doc['runs'])} run(s) of {len(doc['models'])} model(s) into {len(doc['sections'])} section(s)")
    ctx = BuildContext(registries=registries)
    written: list[Path] = []
    for fmt in formats:
        writer = create_component(registries.leaderboard_writers, fmt, {}, ctx, where="--format")
        written.extend(Path(p) for p in writer.write(data, out))
    return written
