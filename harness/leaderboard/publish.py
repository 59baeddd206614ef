"""Write a leaderboard from run directories through the registered writers (CLI and suites share it),
and ``README.md`` beside it: the findings in words (:mod:`harness.leaderboard.prose`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from harness.errors import UsageError
from harness.factories import create_component
from harness.protocols import BuildContext
from harness.registry import Registries

DEFAULT_FORMATS = ("markdown", "json", "html")
README = "README.md"


def write_findings(path: Path, text: str, say: Callable[[str], None] = print) -> Path | None:
    """Write the generated findings to ``path`` unless a file there was not written by the harness
    (its first line is not the report's marker): a hand-written README is never overwritten."""
    from harness.leaderboard.prose import MARKER

    if path.exists():
        try:
            first = path.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        except (OSError, UnicodeDecodeError):
            first = ""
        if first != MARKER:
            say(f"kept {path}: it was not written by mimic; `mimic report RESULTS --out {path}` replaces it with the findings")
            return None
    path.write_text(text, encoding="utf-8")
    return path


def publish(results: Iterable[str | Path], out: Path, registries: Registries, *, formats: Iterable[str] = DEFAULT_FORMATS,
            with_draws: bool = True, findings: bool = True, say: Callable[[str], None] = print) -> list[Path]:
    """Merge the runs under ``results`` and write every format into ``out`` (and, with ``findings``,
    ``README.md``: the findings in words); return the written paths."""
    from harness.leaderboard.document import with_document
    from harness.leaderboard.prose import render_report
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
    data = with_document(load_runs(results, with_draws=with_draws, say=say))  # built once, rendered by every writer
    doc = data.document
    for message in doc["messages"]:
        say(f"note: {message}")
    say(f"merged {len(doc['runs'])} run(s) of {len(doc['models'])} model(s) into {len(doc['sections'])} section(s)")
    ctx = BuildContext(registries=registries)
    written: list[Path] = []
    for fmt in formats:
        writer = create_component(registries.leaderboard_writers, fmt, {}, ctx, where="--format")
        written.extend(Path(p) for p in writer.write(data, out))
    if findings:
        readme = write_findings(out / README, render_report(doc, data.manifests), say)
        written.extend([readme] if readme else [])
    return written
