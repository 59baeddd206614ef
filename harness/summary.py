"""The per-run summary: a rich table on the terminal and ``summary.md`` in the run directory.

Every row shows its flags (``harness.stats.flags``) beside the number, and a withheld interval
reads ``no interval (reason)``, never a bare point.
"""

from __future__ import annotations

import math
import sys
from typing import IO, Any

import polars as pl

from harness.records import Manifest
from harness.stats.flags import describe, flags_of


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _interval_cell(row: dict[str, Any], note: dict[str, Any], flags: list[str]) -> str:
    # imported here: the leaderboard package loads scipy, which `import harness.run` should not pay for
    from harness.leaderboard.fmt import NO_INTERVAL, has_interval, withheld_reason

    if has_interval(row["lower"], row["upper"]):
        return f"[{_fmt(row['lower'])}, {_fmt(row['upper'])}]"
    reason = withheld_reason(note, flags)
    return NO_INTERVAL + (f" ({reason})" if reason else "")


def summary_rows(estimates: pl.DataFrame) -> list[list[str]]:
    """One row per estimate: condition, estimator, feature, point, 95% interval (or ``no interval
    (reason)``), flags, n."""
    from harness.records import note_dict

    rows = []
    ordered = estimates.sort(["estimator", "condition", "feature"]) if estimates.height else estimates
    for r in ordered.iter_rows(named=True):
        note = note_dict(r.get("note"))
        flags = flags_of(note, r.get("method"))
        rows.append([str(r["condition"]), str(r["estimator"]), str(r["feature"]), _fmt(r["point"]),
                     _interval_cell(r, note, flags), describe(flags), str(r["n"])])
    return rows


HEADERS = ["condition", "estimator", "feature", "point", "95% interval", "flags", "n"]


def summary_markdown(manifest: Manifest, estimates: pl.DataFrame) -> str:
    """``summary.md``: what ran, usage, timings, and the estimates table."""
    model, usage, counts = manifest.model, manifest.usage, manifest.counts
    lines = [
        f"# {manifest.task_name} v{manifest.task_version} x {model.display_name}",
        "",
        f"- run: `{manifest.run_id}` ({manifest.status})",
        f"- model id: `{model.model_id}`; reference hash `{manifest.reference_hash}`; seed {manifest.seed}",
        f"- draws: {counts.get('done', 0)} of {counts.get('planned', 0)} ({counts.get('cached', 0)} from the cache)",
        f"- tokens: {usage.get('prompt_tokens', 0):,} prompt, {usage.get('completion_tokens', 0):,} completion"
        + (f"; cost ${usage['cost']:.4f}" if usage.get("cost") else ""),
        "- timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in manifest.timings.items()),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in summary_rows(estimates)]
    return "\n".join(lines) + "\n"


def print_summary(manifest: Manifest, estimates: pl.DataFrame, stream: IO[str] | None = None) -> None:
    """Print the estimates of one run as a table (rich on a terminal, plain text otherwise)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    stream = stream or sys.stdout
    if not estimates.height:
        print(f"{manifest.task_name} x {manifest.model.display_name}: no estimates", file=stream)
        return
    title = f"{manifest.task_name} x {manifest.model.display_name} ({manifest.run_id})"
    table = Table(title=title, show_lines=False)
    for header in HEADERS:
        table.add_column(header, justify="right" if header in {"point", "n"} else "left")
    for row in summary_rows(estimates):
        table.add_row(*(escape(cell) for cell in row))  # "[0.1, 0.2]" and flag texts are data, not rich markup
    Console(file=stream, width=max(100, Console(file=stream).width)).print(table)
