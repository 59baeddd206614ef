"""The paired difference of two models' statistics measured on the same contexts.

Two runs of one suite show their models the same prompts: the same context ids with the same
exemplars (:func:`harness.leaderboard.jointboot.context_keys` names a context by them). A context's
prompt moves both models' outputs, so the two statistics are correlated through the contexts they
share, and the difference's uncertainty must come from deleting those contexts *jointly*.

Interval: the delete-one-context cluster jackknife of the difference. With C shared contexts and
d_(c) = theta_A(-c) - theta_B(-c) (both statistics recomputed from the draws without context c),

    se^2 = (C - 1) / C * sum_c (d_(c) - mean d)^2,      d +- t_{C-1, 0.975} se,

the CV3 / jackknife variance with t(C - 1) critical values that MacKinnon, Nielsen & Webb (2023,
"Cluster-robust inference: a guide to empirical practice", J. Econometrics 232:272, sections 3.3 and
4) recommend over CV1 when clusters are few. Withheld (no interval, flag and reason) when:

- the sides do not share their contexts exactly (``not_paired``: a difference across different
  prompts is not a paired one; harness flag :data:`~harness.stats.flags.INSUFFICIENT_DATA`);
- fewer shared contexts than :data:`MIN_PAIRED_CONTEXTS`, the smallest design at which
  ``benchmarks/paired_calibration.py`` measured the interval calibrated (``too_few_contexts``);
- a replicate is undefined (leaving a context out empties a side) or all replicates agree
  (``no_variance``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import t as student_t

from harness.stats.curve_intervals import jackknife_variance
from harness.stats.flags import INSUFFICIENT_DATA, NO_VARIANCE, TOO_FEW_CONTEXTS, no_interval_reason

# The calibration benchmark (benchmarks/results/paired_calibration-2026-12-06.txt: 400 reps, 8 samples per
# context) measured the coverage of both statistics' paired intervals inside the binomial band at 4, 8, 16
# and 40 contexts, under a planted difference and under the null; fewer contexts were not measured, so an
# interval is reported from 4 shared contexts on.
MIN_PAIRED_CONTEXTS = 4
NOT_PAIRED = "the two models were not shown the same contexts (context ids and exemplars differ), so no paired interval exists"
_TINY = 1e-12


@dataclass(frozen=True)
class SideReplicates:
    """One model's statistic on all its contexts and without each of them (keyed by context key)."""

    point: float
    without: Mapping[str, float] = field(default_factory=dict)  # context key -> the statistic without it


@dataclass(frozen=True)
class PairedDifference:
    """a - b with its paired interval, or none and the flag and the words saying why."""

    point: float | None
    lower: float | None
    upper: float | None
    contexts: int
    flags: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def decided(self) -> bool:
        """Whether the interval exists and excludes 0."""
        return self.lower is not None and self.upper is not None and (self.lower > 0 or self.upper < 0)

    @property
    def sign(self) -> int:
        """+1 when a is decided above b, -1 when below, 0 when not decided."""
        return 0 if not self.decided else (1 if self.lower > 0 else -1)

    def as_dict(self) -> dict[str, Any]:
        """JSON form: point, lower, upper, contexts, decided, flags, no_interval."""
        return {"point": self.point, "lower": self.lower, "upper": self.upper, "contexts": self.contexts,
                "decided": self.decided, "flags": list(self.flags), "no_interval": self.reason}


def _withheld(point: float | None, contexts: int, flag: str, reason: str) -> PairedDifference:
    return PairedDifference(point, None, None, contexts, (flag,), reason)


def paired_difference(a: SideReplicates, b: SideReplicates, min_contexts: int = MIN_PAIRED_CONTEXTS,
                      low: float = -math.inf, high: float = math.inf) -> PairedDifference:
    """a - b with the delete-one-shared-context jackknife interval (module docstring) cut to the difference's
    range [low, high] (two statistics in [0, 1]: [-1, 1]), or a withheld one."""
    point = a.point - b.point if math.isfinite(a.point) and math.isfinite(b.point) else None
    shared = sorted(set(a.without) & set(b.without))
    contexts = len(shared)
    if point is None:
        return _withheld(None, contexts, INSUFFICIENT_DATA, "a side has no value")
    if set(a.without) != set(b.without):
        return _withheld(point, contexts, INSUFFICIENT_DATA, NOT_PAIRED)
    if contexts < min_contexts:
        return _withheld(point, contexts, TOO_FEW_CONTEXTS, no_interval_reason(TOO_FEW_CONTEXTS, contexts, min_contexts))
    diffs = np.array([a.without[k] - b.without[k] for k in shared], dtype=np.float64)
    variance = jackknife_variance(diffs)
    if not math.isfinite(variance):
        return _withheld(point, contexts, TOO_FEW_CONTEXTS, "leaving a context out leaves a side without a value")
    if np.ptp(diffs) <= _TINY:
        return _withheld(point, contexts, NO_VARIANCE, no_interval_reason(NO_VARIANCE))
    half = float(student_t.ppf(0.975, contexts - 1)) * math.sqrt(variance)
    return PairedDifference(point, max(low, point - half), min(high, point + half), contexts)
