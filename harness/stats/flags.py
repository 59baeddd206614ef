"""The flags that qualify an estimate, and the rule for a withheld interval.

Every estimate's ``note`` may carry ``flags``: a sorted list of the names below. A writer shows
each flag beside the number (terminal summary, leaderboard markdown, site); a comparison
decides only between rows whose interval is present and whose flags do not say the interval
is untrustworthy (:data:`UNDECIDABLE`).

An interval is a promise: it is reported only at designs where the calibration benchmark
(``benchmarks/calibration.py``) measured it calibrated. Otherwise ``lower`` and ``upper`` are
NaN (null in the tables), ``note.no_interval`` says why in words, and ``flags`` names the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

TOO_FEW_CONTEXTS = "too_few_contexts"  # fewer mimic contexts than any calibrated method needs
NO_VARIANCE = "no_variance"  # the sample shows no variance the interval could be built from
LOW_ESS = "low_ess"  # reweighting left a small effective sample
BY_CONSTRUCTION = "by_construction"  # the value follows from how the selection was made, not a finding
INSUFFICIENT_DATA = "insufficient_data"  # a combined score lacks the effective contexts it needs
BOUND_EXCEEDED = "bound_exceeded"  # the forcing-set bound check failed: a finding, shown
SELECTION_USES_WORLD_DRAWS = "selection_uses_world_draws"  # m_K read from the draws that selected the items
BUDGET_BEYOND_SWEEP = "budget_beyond_sweep"  # the Goodhart budget lies past the smallest beta's KL

KNOWN = (TOO_FEW_CONTEXTS, NO_VARIANCE, LOW_ESS, BY_CONSTRUCTION, INSUFFICIENT_DATA, BOUND_EXCEEDED,
         SELECTION_USES_WORLD_DRAWS, BUDGET_BEYOND_SWEEP)
# Flags under which an interval, if any, must not decide a comparison.
UNDECIDABLE = frozenset({TOO_FEW_CONTEXTS, NO_VARIANCE, LOW_ESS, BY_CONSTRUCTION, INSUFFICIENT_DATA})

# Legacy boolean note keys that mean the same as a flag (notes written before ``flags`` existed).
_BOOLEAN_KEYS = {LOW_ESS: LOW_ESS, BOUND_EXCEEDED: BOUND_EXCEEDED, SELECTION_USES_WORLD_DRAWS: SELECTION_USES_WORLD_DRAWS}


def flags_of(note: Mapping[str, Any] | None, method: str | None = None) -> list[str]:
    """Every flag of an estimate: ``note.flags`` plus legacy boolean keys and a by-construction method."""
    note = note or {}
    found = {str(f) for f in note.get("flags") or []}
    found |= {flag for key, flag in _BOOLEAN_KEYS.items() if note.get(key) is True}
    if method and "by-construction" in str(method):
        found.add(BY_CONSTRUCTION)
    return sorted(found)


def with_flags(note: Mapping[str, Any], *flags: str | None) -> dict[str, Any]:
    """``note`` with ``flags`` extended by the given names (None entries ignored), kept sorted and unique."""
    out = dict(note)
    out["flags"] = sorted({*out.get("flags", []), *(f for f in flags if f)})
    if not out["flags"]:
        del out["flags"]
    return out


def no_interval_reason(flag: str, contexts: int | None = None, needed: int | None = None) -> str:
    """The words a reader sees instead of an interval."""
    if flag == TOO_FEW_CONTEXTS:
        have = f"{contexts} context{'s' if contexts != 1 else ''}" if contexts is not None else "too few contexts"
        return f"{have}; an interval needs at least {needed}" if needed else have
    if flag == NO_VARIANCE:
        return "the sample shows no variance to build an interval from"
    if flag == INSUFFICIENT_DATA:
        return "too few effective contexts behind the score"
    return flag.replace("_", " ")


def withheld(note: Mapping[str, Any], flag: str, contexts: int | None = None, needed: int | None = None) -> dict[str, Any]:
    """A note for a row whose interval is not reported: the flag, the reason in words, what it takes."""
    out = with_flags(note, flag)
    out["no_interval"] = no_interval_reason(flag, contexts, needed)
    if needed is not None:
        out["contexts_needed"] = int(needed)
    return out


def describe(flags: Iterable[str]) -> str:
    """Flags as a reader reads them: ``too few contexts, low ESS``."""
    words = {LOW_ESS: "low ESS"}
    return ", ".join(words.get(f, f.replace("_", " ")) for f in flags)
