"""Fast calibration: the 95% intervals cover planted truth within binomial tolerance.

The full run (400+ reps, 1000 resamples) is benchmarks/calibration.py. Here fewer reps and
resamples on smaller planted data (C = 30 contexts x S = 4 samples, a strong context effect):
every row's coverage, and the mean over a test's rows, must lie within 3 binomial SD of 95%,
so an interval that ignored the clustering (coverage ~85% at these design effects), the
distance bias (~88%) or the dependence that cross-fitting puts between detection scores (85%
at AUC 0.5) fails. At 100-200 reps this catches intervals that are too narrow; telling 95%
from 98% takes the benchmark's 400. Seeds are fixed.
"""

from __future__ import annotations

import pytest

from harness.testing.calibration import binomial_band, calibrate, null_check

SMALL = {"n_ref": 500, "contexts": 30, "samples": 4}
REPS = 150


def _check(table, reps):
    lo, hi = binomial_band(reps)
    bad = [(r["estimator"], r["condition"], r["feature"], r["coverage"]) for r in table if not lo <= r["coverage"] <= hi]
    assert not bad, f"coverage outside [{lo:.3f}, {hi:.3f}] over {reps} reps: {bad}"
    mean = sum(r["coverage"] for r in table) / len(table)  # rows share data, so no tighter band than one row's
    assert lo <= mean <= hi, f"mean coverage {mean:.3f} over {len(table)} rows outside [{lo:.3f}, {hi:.3f}]"


def test_coverage_of_planted_values_clustered():
    table = calibrate(REPS, ["control_success", "latent_shift", "lift_shift", "correlation_shift", "forcing_mass"],
                      seed=1, n_boot=150, **SMALL)
    keys = {(r["estimator"], r["condition"], r["feature"]) for r in table}
    assert ("latent_shift", "prompt:a", "h") in keys and ("forcing_mass", "none", "K=16") in keys
    assert all(r["reps"] == REPS for r in table)
    _check(table, REPS)


def test_coverage_of_transfer_gap_and_detection():
    reps = 150
    table = calibrate(reps, ["transfer_gap", "detection"], seed=2, n_boot=150, only={"none"}, **SMALL)
    assert [(r["estimator"], r["condition"]) for r in table] == [("detection", "none"), ("transfer_gap", "none")]
    auc = table[0]
    assert 0.6 < auc["planted"] < 0.65 and abs(auc["bias"]) < 0.01  # the trained classifier's AUC, read without bias
    _check(table, reps)


def test_detection_covers_auc_one_half_when_the_mimic_text_matches():
    reps = 200
    (row,) = calibrate(reps, ["detection"], seed=4, n_boot=150, only={"none"}, text_shift=False, **SMALL)
    assert row["planted"] == 0.5 and abs(row["bias"]) < 0.01
    _check([row], reps)


@pytest.mark.parametrize("design, method", [({}, "centred-cluster-bootstrap"), ({"contexts": 120, "samples": 1}, "permutation")])
def test_no_shift_test_rejects_about_five_percent(design, method):
    reps = 100
    table = null_check(reps, seed=3, n_boot=150, only={"prompt:a"}, **{**SMALL, **design})
    # the binary latent r is tested by inverting its exact MOVER interval; the others by resampling
    assert {r["null_method"] for r in table if r["feature"] != "r"} == {method}
    assert {r["null_method"] for r in table if r["feature"] == "r"} == {"mover-exact-inversion"}
    lo, hi = binomial_band(reps, 0.05)
    for r in table:
        assert r["rejection"] <= hi, r  # a valid test rejects a true "no shift" at most ~5%
        assert r["debiased"] < r["plug_in"] and abs(r["debiased"]) < r["plug_in"] / 2, r  # the plug-in's bias is removed


# The designs people run: few contexts, a context effect as strong as the published runs show
# (kappa 2: intra-context correlation 1/3, design effect ~3.3 at S = 8), rates near 0 and 1.
FEW = {"n_ref": 400, "samples": 8, "kappa": 2.0}
RATES = ["control_success", "latent_shift", "lift_shift", "forcing_mass"]


@pytest.mark.parametrize("contexts", [4, 8])
@pytest.mark.parametrize("scenario", [
    {"tv": 0.1, "w1": 0.25},
    {"p_success": 0.03, "r_ref": 0.06, "r_mimic": 0.02, "mimic_forcing": 0.0},
    {"p_success": 0.97, "r_ref": 0.94, "r_mimic": 0.98, "mimic_forcing": 0.97},
], ids=["interior", "near-0", "near-1"])
def test_few_contexts_cover_or_withhold(contexts, scenario):
    reps = 80
    table = calibrate(reps, RATES, seed=5, n_boot=150, contexts=contexts, **FEW, **scenario)
    lo, _ = binomial_band(reps)
    reported = [r for r in table if r["reps"] >= 20]  # rows with too few reported intervals say nothing yet
    assert reported, table
    # exact intervals are conservative by design (est_rates), so only the lower side is a failure here
    bad = [(r["estimator"], r["condition"], r["feature"], r["coverage"]) for r in reported if r["coverage"] < lo]
    assert not bad, f"coverage below {lo:.3f} at C = {contexts}: {bad}"
    assert all(r["out_of_range"] == 0 for r in table)
    for r in table:  # every interval stays inside its quantity's range
        if r["estimator"] in ("control_success", "forcing_mass") and r["reps"]:
            assert 0.0 <= r["mean"] <= 1.0 and r["width"] <= 1.0


def test_one_context_reports_no_interval_and_says_why():
    from harness.testing.synthetic import planted

    import numpy as np

    from harness.testing.calibration import run_one

    p = planted(np.random.default_rng(0), contexts=1, samples=8, n_boot=50)
    rows = run_one(p, ["control_success", "latent_shift", "lift_shift", "correlation_shift", "forcing_mass"])
    mimic_rows = {k: r for k, r in rows.items() if k[1] != "reference"}
    assert mimic_rows
    for key, r in mimic_rows.items():
        # never a (zero-width) interval from one context
        assert all(v is None or np.isnan(v) for v in (r["lower"], r["upper"])), key
        assert "too_few_contexts" in r["note"]["flags"] and r["note"]["contexts_needed"] == 2, key
        assert "no_interval" in r["note"], key
