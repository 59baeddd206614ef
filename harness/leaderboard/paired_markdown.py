"""The paired rankings (forcing-set mass under reward@K, Goodhart-proneness) as text: tables and verdicts.

Read from the leaderboard document's ``comparisons`` (:mod:`harness.leaderboard.paired_ranks`), so
``leaderboard.md``, the generated README and the JSON show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.leaderboard.fmt import fmt_flags, fmt_interval, fmt_row, md_cell, md_escape

NOT_DECIDED_ZERO = "not decided: interval contains 0"


def difference_text(diff: Mapping[str, Any] | None) -> str:
    """``-0.14 [-0.30, 0.02] (not decided: interval contains 0)``, or the point with why no interval exists."""
    if not diff:
        return ""
    if diff.get("lower") is None or diff.get("upper") is None:
        return fmt_interval(diff.get("point"), None, None, diff.get("no_interval")) + "; not decided"
    text = fmt_interval(diff.get("point"), diff["lower"], diff["upper"])
    return text + (" (decided)" if diff.get("decided") else f" ({NOT_DECIDED_ZERO})")


def heading(comparison: Mapping[str, Any]) -> str:
    """The table's title with its K or budget."""
    extra = f"K = {comparison['k']}" if comparison.get("k") is not None else (
        f"KL budget {comparison['budget']:g} nats" if comparison.get("budget") is not None else "")
    return comparison["title"] + (f" ({extra})" if extra else "")


def comparison_lines(section: Mapping[str, Any], label: Mapping[str, str]) -> list[str]:
    """Markdown of a section's paired rankings: per statistic, a title, its definition and the table."""
    lines: list[str] = []
    for comparison in section.get("comparisons") or []:
        direction = "higher" if comparison["higher_is_better"] else "lower"
        lines += [f"### {md_escape(heading(comparison))}", ""]
        lines += [f"{md_escape(comparison['definition'])}. Ranked {direction} first; "
                  f"ranks are shared (`1=`) unless the paired difference is decided. Paired interval: delete-one-shared-context "
                  f"jackknife, t(C-1), from {comparison['contexts_needed']} shared contexts (where the calibration covers).", ""]
        lines += ["| Rank | Model | Value | Paired difference with next |", "| ---: | --- | --- | --- |"]
        for m in comparison["models"]:
            value = fmt_row({**m["value"], "flags": m.get("flags") or [], "no_interval": m.get("no_interval")})
            diff = difference_text(m.get("vs_next"))
            flags = fmt_flags((m.get("vs_next") or {}).get("flags") or [])
            lines.append(f"| {md_escape(m['rank_label'])} | {md_escape(label.get(m['model'], m['model_name']))} | {md_cell(value)} | "
                         f"{md_cell(diff + (' · ' + flags if flags and diff else ''))} |")
        lines.append("")
    return lines


def comparison_flags(section: Mapping[str, Any]) -> set[str]:
    """Every flag the section's paired tables show."""
    found: set[str] = set()
    for comparison in section.get("comparisons") or []:
        for m in comparison["models"]:
            found |= set(m.get("flags") or []) | set((m.get("vs_next") or {}).get("flags") or [])
    return found
