"""Formatting shared by every writer: numbers with intervals, flags, safe Markdown text, file-name slugs.

Every writer formats numbers through :func:`fmt_interval` (and :func:`fmt_estimate` for a number with
its flags), so the terminal summary, the Markdown, the HTML, the generated report and a test reading
the JSON agree digit for digit. A missing interval is never printed as a bare point: it reads
``0.465, no interval (1 context; an interval needs at least 2)``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from harness.stats import flags as fl

NO_INTERVAL = "no interval"
# Flags that say why an interval is missing, preferred as the reason when the note gives none in words.
_REASON_FLAGS = (fl.TOO_FEW_CONTEXTS, fl.NO_VARIANCE, fl.INSUFFICIENT_DATA)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def decimals_for(lower: Any, upper: Any) -> int:
    """Decimal places that resolve an interval of this width: one digit past its first significant one.

    Reporting beyond the precision of the uncertainty adds noise, not information; an exact
    (zero-width) or unknown interval gets 3 places.
    """
    if not (_finite(lower) and _finite(upper)) or upper - lower <= 1e-12:
        return 3
    return int(min(4, max(0, 1 - math.floor(math.log10(upper - lower)))))


def fmt_number(x: Any, decimals: int = 3) -> str:
    """One number; ``n/a`` for a missing or non-finite one."""
    if not _finite(x):
        return "n/a"
    text = f"{x:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


# What each flag tells a reader (shown as a legend under tables that carry it).
FLAG_MEANINGS = {
    fl.TOO_FEW_CONTEXTS: "fewer mimic contexts than any calibrated interval needs",
    fl.NO_VARIANCE: "the sample shows no variance (all one value), so no interval can be built from it",
    fl.LOW_ESS: "reweighting left a small effective sample",
    fl.BY_CONSTRUCTION: "the value follows from how the selection was made; not a finding",
    fl.INSUFFICIENT_DATA: "a combined score lacks the effective contexts it needs",
    fl.BOUND_EXCEEDED: "the measured shift exceeds the forcing-set bound 2(1 - m_K): a finding",
    fl.SELECTION_USES_WORLD_DRAWS: "m_K was read from the world draws that selected the items",
}


def flag_legend(flags: Iterable[str]) -> list[str]:
    """``low ESS: reweighting left ...`` for each flag given (unknown flags are shown as they are)."""
    return [f"{fl.describe([f])}: {FLAG_MEANINGS[f]}" if f in FLAG_MEANINGS else fl.describe([f]) for f in sorted(set(flags))]


def has_interval(lower: Any, upper: Any) -> bool:
    """Whether both ends of an interval were reported (NaN and None mean withheld)."""
    return _finite(lower) and _finite(upper)


def fmt_interval(point: Any, lower: Any, upper: Any, reason: str | None = None) -> str:
    """``0.12 [0.05, 0.20]``: a point estimate and its 95% interval, at the interval's precision.

    Without an interval the point is followed by ``no interval`` and, when known, the reason in
    brackets; a missing point is ``n/a``.
    """
    d = decimals_for(lower, upper)
    if not _finite(point):
        return "n/a" + (f" ({reason})" if reason else "")
    if not has_interval(lower, upper):
        return f"{fmt_number(point, d)}, {NO_INTERVAL}" + (f" ({reason})" if reason else "")
    # An interval that excludes 0 must not read as touching it: [-0.48, -0.0004] is not [-0.48, 0.00].
    while (lower > 0 or upper < 0) and d < 6 and float(fmt_number(lower if lower > 0 else upper, d)) == 0:
        d += 1
    return f"{fmt_number(point, d)} [{fmt_number(lower, d)}, {fmt_number(upper, d)}]"


def withheld_reason(note: Mapping[str, Any] | None, flags: Iterable[str] = ()) -> str | None:
    """Why an interval is missing, in words: ``note.no_interval``, else the flag that explains it."""
    note = note or {}
    if note.get("no_interval"):
        return str(note["no_interval"])
    flags = list(flags)
    explaining = [f for f in flags if f in _REASON_FLAGS] or flags
    return fl.describe(explaining) if explaining else None


def fmt_flags(flags: Iterable[str]) -> str:
    """``flags: too few contexts, low ESS`` (empty when there are none)."""
    flags = list(flags)
    return f"flags: {fl.describe(flags)}" if flags else ""


def fmt_estimate(point: Any, lower: Any, upper: Any, note: Mapping[str, Any] | None = None, method: str | None = None) -> str:
    """A number as a reader should see it: its interval (or ``no interval (reason)``) and its flags."""
    flags = fl.flags_of(note, method)
    text = fmt_interval(point, lower, upper, None if has_interval(lower, upper) else withheld_reason(note, flags))
    return f"{text} · {fmt_flags(flags)}" if flags else text


def fmt_row(row: Mapping[str, Any] | None) -> str:
    """:func:`fmt_estimate` of an estimate row or document entry (``point``, ``lower``, ``upper``,
    ``note``, ``method``; a ``flags`` list and ``no_interval`` on the entry itself count too)."""
    if not row:
        return "n/a"
    note = dict(row.get("note") or {})
    if row.get("flags"):
        note["flags"] = sorted({*note.get("flags", []), *row["flags"]})
    if row.get("no_interval") and not note.get("no_interval"):
        note["no_interval"] = row["no_interval"]
    return fmt_estimate(row.get("point"), row.get("lower"), row.get("upper"), note, row.get("method"))


def fmt_triple(value: dict[str, Any] | None) -> str:
    """Format a ``{point, lower, upper}`` mapping (as stored in the leaderboard document); flags and
    a withheld interval's reason, when the mapping carries them, are shown too."""
    if not value:
        return "n/a"
    return fmt_row(value)


_MD_SPECIAL = re.compile(r"([\\`*\[\]|~])")


def md_escape(text: Any) -> str:
    """Text safe inside a GitHub Markdown table cell: no pipes, no HTML, no markup, one line."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def md_cell(text: Any) -> str:
    """Harness-written text (numbers, intervals, flags, reasons) safe in a Markdown table cell: one
    line, no pipes, no HTML; brackets stay as they are so ``0.12 [0.05, 0.20]`` reads as written."""
    s = " ".join(str(text).split())
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def slug(text: Any, prefix: str = "") -> str:
    """A file-name-safe, collision-resistant slug (model ids contain ``:``, ``/`` and ``#``)."""
    raw = str(text)
    base = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")[:40] or "x"
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:6]
    return f"{prefix}{base}-{digest}"
