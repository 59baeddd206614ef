"""Comparing feature values with proxy targets, whatever the feature's kind."""

from __future__ import annotations

from typing import Any

import polars as pl


def target_label(value: Any) -> str:
    """The canonical text of a proxy target, as used in pool and condition names (``prompt:5``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def matches(series: pl.Series, value: Any) -> pl.Series:
    """Boolean series: which feature values equal the target (nulls never match).

    Numeric/binary features (Float64) compare numerically; categorical ones (Utf8) compare on
    :func:`target_label` text, so ``5``, ``"5"`` and ``5.0`` all mean the same target.
    """
    if series.dtype.is_numeric():
        try:
            number = float(value)
        except (TypeError, ValueError):
            return pl.Series(series.name, [False] * len(series), dtype=pl.Boolean)
        return (series == number).fill_null(False)
    return (series.cast(pl.Utf8) == target_label(value)).fill_null(False)
