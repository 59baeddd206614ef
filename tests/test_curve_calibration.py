"""Fast calibration of the curves (harness.testing.curve_calibration) at 4 and 8 contexts, and their few-context rules.

The full table (400 repetitions at C in 2, 4, 8, 16, 40 x S in 1, 8) is printed by
benchmarks/calibration.py; here a few dozen repetitions per design check that no row falls clearly
below 95% (a Bonferroni-corrected binomial band) and that no interval leaves its range.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from harness.stats.goodhart import GoodhartCurve
from harness.stats import flags as F
from harness.stats.sync import PER_CONTEXT_MIN_CONTEXTS, sync_estimates
from harness.testing.curve_calibration import (curve_calibration, exact_best_of, exact_reward, exact_tilt, goodhart_inputs,
                                               goodhart_truth, sync_inputs)

REPS = 30


@pytest.fixture(scope="module", params=[4, 8])
def table(request):
    """Calibration rows at C contexts x 8 samples."""
    return request.param, curve_calibration(contexts=request.param, samples=8, reps=REPS, n_boot=100, seed=3)


def test_every_reported_interval_covers_and_stays_in_range(table):
    contexts, rows = table
    reported = [r for r in rows if r["reps"] > 0]
    assert len(reported) >= 60 and {r["estimator"] for r in reported} >= {"goodhart_curve", "goodhart_score", "sync_marginal"}
    assert all(r["out_of_range"] == 0 for r in rows)
    # a row whose true coverage is 95% stays above this count with probability 1 - 0.001 / rows
    for r in reported:
        floor = binom.ppf(0.001 / len(reported), r["reps"], 0.95) / r["reps"]
        assert r["coverage"] >= floor, (contexts, r)
    covered = sum(r["coverage"] * r["reps"] for r in reported) / sum(r["reps"] for r in reported)
    assert covered >= 0.93, covered
    # the per-context sync rows are withheld below their calibrated minimum
    per_context = [r for r in rows if r["estimator"].startswith("sync_context")]
    assert per_context and all(r["withheld"] == 1.0 for r in per_context) == (contexts < PER_CONTEXT_MIN_CONTEXTS)
    assert {r["withheld"] for r in rows if r["estimator"] == "sync_marginal"} == {0.0}


def test_planted_truth_is_exact_in_the_limits():
    p, rho = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.6, 1.0])
    assert exact_tilt(p, rho, 5, None)["q"] == pytest.approx(p)
    reward = exact_reward(p, rho, 5, 5)  # reward@(1+K): only rows that succeed on every draw
    assert reward["q"] == pytest.approx(p * rho**5 / (p @ rho**5)) and reward["success"] == pytest.approx(1.0)
    one = exact_best_of(p, rho, 5, 1)  # best of one draw is the pool
    assert one["q"] == pytest.approx(p) and one["kl"] == pytest.approx(0.0, abs=1e-12)
    assert one["success"] == pytest.approx(p @ rho)
    truth = goodhart_truth()
    assert all(0 <= v <= 1 for (_, _, f), v in truth.items() if f not in ("_kl", "mean(n_pos)"))
    score = truth["goodhart_score", "tilt", "_all"]
    assert score == pytest.approx(np.mean([truth["goodhart_score", "tilt", h] for h in ("genre", "helping", "n_pos")]))


def test_one_context_gives_no_interval_and_no_zero_width():
    inputs = goodhart_inputs(np.random.default_rng(0), 1, 8, 50, 0)
    rows = GoodhartCurve({"n_boot": 20}).estimate(inputs)
    estimated = [r for r in rows if r.method != "exact"]
    assert estimated and all(math.isnan(r.lower) and math.isnan(r.upper) for r in estimated)
    assert all(F.TOO_FEW_CONTEXTS in r.note["flags"] or F.INSUFFICIENT_DATA in r.note["flags"] for r in estimated
               if math.isfinite(r.point))
    score = next(r for r in rows if r.estimator == "goodhart_score" and r.feature == "_all")
    assert F.INSUFFICIENT_DATA in score.note["flags"] and score.note["no_interval"]
    sync_in, _ = sync_inputs(np.random.default_rng(1), 1, 8, 50, 0)
    for r in sync_estimates(sync_in, 50):
        assert not (r.lower == r.upper), r  # NaN != NaN: no zero-width interval anywhere
        if r.estimator != "sync_rate" and math.isfinite(r.point):
            assert F.TOO_FEW_CONTEXTS in r.note["flags"] and r.note.get("in_floor") is None
