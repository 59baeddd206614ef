"""Formatting shared by every writer: numbers with intervals, safe Markdown text, file-name slugs.

Every writer formats numbers through :func:`fmt_interval`, so the Markdown, the HTML and a test
reading the JSON agree digit for digit.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any


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


def fmt_interval(point: Any, lower: Any, upper: Any) -> str:
    """``0.12 [0.05, 0.20]``: a point estimate and its 95% interval, at the interval's precision."""
    d = decimals_for(lower, upper)
    if not _finite(lower) or not _finite(upper):
        return fmt_number(point, d)
    return f"{fmt_number(point, d)} [{fmt_number(lower, d)}, {fmt_number(upper, d)}]"


def fmt_triple(value: dict[str, Any] | None) -> str:
    """Format a ``{point, lower, upper}`` mapping (as stored in the leaderboard document)."""
    if not value:
        return "n/a"
    return fmt_interval(value.get("point"), value.get("lower"), value.get("upper"))


_MD_SPECIAL = re.compile(r"([\\`*\[\]|~])")


def md_escape(text: Any) -> str:
    """Text safe inside a GitHub Markdown table cell: no pipes, no HTML, no markup, one line."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def slug(text: Any, prefix: str = "") -> str:
    """A file-name-safe, collision-resistant slug (model ids contain ``:``, ``/`` and ``#``)."""
    raw = str(text)
    base = re.sub(r"[^a-z0-9]+", "-", raw.lower()).strip("-")[:40] or "x"
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:6]
    return f"{prefix}{base}-{digest}"
