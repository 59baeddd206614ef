"""Fast calibration: the 95% intervals cover planted truth within binomial tolerance.

The full run (400+ reps, 1000 resamples) is benchmarks/calibration.py. Here fewer reps and
resamples on smaller planted data (C = 30 contexts x S = 4 samples, a strong context effect):
coverage must lie within 3 binomial SD of 95%, so an interval that ignored the clustering
(coverage ~85% at these design effects) or the distance bias (~88%) fails. Seeds are fixed.
"""

from __future__ import annotations

import pytest

from harness.stats.calibration import binomial_band, calibrate, null_check

SMALL = {"n_ref": 500, "contexts": 30, "samples": 4}
REPS = 150


def _check(table, reps):
    lo, hi = binomial_band(reps)
    bad = [(r["estimator"], r["condition"], r["feature"], r["coverage"]) for r in table if not lo <= r["coverage"] <= hi]
    assert not bad, f"coverage outside [{lo:.3f}, {hi:.3f}] over {reps} reps: {bad}"


def test_coverage_of_planted_values_clustered():
    table = calibrate(REPS, ["control_success", "latent_shift", "lift_shift", "correlation_shift", "forcing_mass"],
                      seed=1, n_boot=150, **SMALL)
    keys = {(r["estimator"], r["condition"], r["feature"]) for r in table}
    assert ("latent_shift", "prompt:a", "h") in keys and ("forcing_mass", "none", "K=16") in keys
    assert all(r["reps"] == REPS for r in table)
    _check(table, REPS)


def test_coverage_of_transfer_gap():
    reps = 100
    table = calibrate(reps, ["transfer_gap"], seed=2, n_boot=150, only={"none"}, **SMALL)
    assert [r["condition"] for r in table] == ["none"]
    _check(table, reps)


@pytest.mark.parametrize("design, method", [({}, "centred-cluster-bootstrap"), ({"contexts": 120, "samples": 1}, "permutation")])
def test_no_shift_test_rejects_about_five_percent(design, method):
    reps = 100
    table = null_check(reps, seed=3, n_boot=150, only={"prompt:a"}, **{**SMALL, **design})
    assert {r["null_method"] for r in table} == {method}
    lo, hi = binomial_band(reps, 0.05)
    for r in table:
        assert r["rejection"] <= hi, r  # a valid test rejects a true "no shift" at most ~5%
        assert r["debiased"] < r["plug_in"] and abs(r["debiased"]) < r["plug_in"] / 2, r  # the plug-in's bias is removed
