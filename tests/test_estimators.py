"""Unit tests of the estimators and the statistics under them (harness.stats, harness.estimation)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pluggy
import polars as pl
import pytest
from scipy.stats import iqr, wasserstein_distance

import harness.builtin.estimators as builtin_estimators
from harness import hookspecs
from harness.errors import PluginError
from harness.estimation import build_estimators, run_estimators
from harness.records import ESTIMATE_SCHEMA
from harness.plugins import build_registries, register_plugin
from harness.protocols import BuildContext, Estimate, EstimationInputs, Selection
from harness.stats.bootstrap import Clusters, linear_deff, ratio_deff, resample_counts
from harness.stats.catalog import ESTIMATORS
from harness.stats.common import clusters_of, feature_kind
from harness.stats.distances import Side, code_values, compare, distance
from harness.stats.est_forcing import ForcingMass
from harness.stats.est_rates import ControlSuccess
from harness.stats.est_shift import CorrelationShift, LatentShift, LiftShift
from harness.stats.est_text import Detection, TransferGap
from harness.stats.intervals import cluster_stretch, wilson
from harness.testing.synthetic import MIMIC_TOKENS, REF_TOKENS, _texts, detection_auc, draws_frame, planted, planted_task

NAMES = {"control_success", "latent_shift", "correlation_shift", "lift_shift", "forcing_mass", "transfer_gap", "detection",
         "format_adherence"}


@pytest.fixture(scope="module")
def small():
    """One planted data set with few resamples (shared: the estimators never mutate inputs)."""
    return planted(np.random.default_rng(11), n_boot=100, n_ref=500, contexts=25, samples=4)


def registries():
    pm = pluggy.PluginManager("mimic_harness")
    pm.add_hookspecs(hookspecs)
    register_plugin(pm, builtin_estimators, "builtin-estimators", "test")
    return build_registries(pm)


def test_wilson_matches_textbook_values():
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(0.0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)


def test_cluster_stretch_is_one_for_many_clusters_and_grows_for_few():
    assert cluster_stretch(100_000) == pytest.approx(1.0, abs=1e-3)
    assert cluster_stretch(4) > 1.5 > cluster_stretch(40) > 1.0


def test_resample_counts_draw_every_cluster_total():
    counts = resample_counts(np.random.default_rng(0), 7, 50)
    assert counts.shape == (50, 7) and np.all(counts.sum(axis=1) == 7)


@pytest.mark.parametrize("width", [2, 10])  # the gather path (few columns) and the counts path
def test_boot_sums_are_weighted_sums_of_resampled_clusters(width):
    rng = np.random.default_rng(3)
    labels, weights, values = np.array([0, 0, 1, 2, 2, 2]), rng.random(6), rng.random((6, width))
    cl = Clusters.build(labels, weights, 6)
    got = cl.boot_sums(np.random.default_rng(5), values, 4)
    counts = resample_counts(np.random.default_rng(5), 3, 4)  # the same draws
    expected = np.array([[sum(c[labels[i]] * weights[i] * values[i] for i in range(6))] for c in counts])[:, 0]
    assert got.shape == (4, width) and np.allclose(got, expected)


def test_design_effect_is_one_for_single_rows_and_near_s_for_identical_rows():
    y = np.random.default_rng(0).integers(0, 2, 400).astype(float)
    assert ratio_deff(y, np.ones(400), Clusters.build(None, None, 400))[1] == pytest.approx(1.0)
    ctx = np.repeat(np.arange(50), 8)
    same = np.repeat(np.random.default_rng(1).integers(0, 2, 50), 8).astype(float)
    assert ratio_deff(same, np.ones(400), Clusters.build(ctx, None, 400))[1] == pytest.approx(8 * 50 / 49 * 399 / 400, rel=1e-6)
    assert linear_deff(same - same.mean(), Clusters.build(ctx, None, 400)) > 7


def test_w1_over_iqr_and_tv_match_direct_formulas():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 300), rng.normal(0.4, 1.3, 200)
    grid, (ca, cb) = code_values("numeric", a, b)
    pa, pb = np.bincount(ca, minlength=grid.size) / a.size, np.bincount(cb, minlength=grid.size) / b.size
    q1, q3 = np.quantile(a, [0.25, 0.75], method="inverted_cdf")
    assert distance("numeric", grid, pa - pb, pa)[0] == pytest.approx(wasserstein_distance(a, b) / (q3 - q1))
    assert abs((q3 - q1) - iqr(a)) < 0.05  # same IQR up to the quantile convention
    grid, (ca, cb) = code_values("categorical", np.array(["x", "y", "y", "z"]), np.array(["x", "x"]))
    pa, pb = np.bincount(ca, minlength=3) / 4, np.bincount(cb, minlength=3) / 2
    assert distance("categorical", grid, pa - pb, pa)[0] == pytest.approx(0.75)


def test_feature_kinds_are_read_from_dtypes_and_values():
    assert feature_kind(pl.Series(["a", "b"])) == "categorical"
    assert feature_kind(pl.Series([0.0, 1.0, None]), pl.Series([1.0])) == "binary"
    assert feature_kind(pl.Series([0.0, 1.0]), pl.Series([0.5])) == "numeric"


def test_permutation_and_bootstrap_nulls_separate_shift_from_no_shift():
    rng = np.random.default_rng(4)
    same_a, same_b = rng.integers(0, 3, 400), rng.integers(0, 3, 300)
    shifted = np.minimum(rng.integers(0, 3, 300) + (rng.random(300) < 0.4), 2)
    for labels in (None, np.repeat(np.arange(60), 5)):
        for mim, expect_small in ((same_b, False), (shifted, True)):
            grid, (ra, mb) = code_values("categorical", same_a.astype(str), mim.astype(str))
            res = compare("categorical", grid, Side(ra, Clusters.build(None, None, 400), 3),
                          Side(mb, Clusters.build(labels, None, 300), 3), np.random.default_rng(0), 300)
            assert res.null_method == ("permutation" if labels is None else "centred-cluster-bootstrap")
            assert (res.p_value < 0.01) == expect_small
            assert res.lower <= res.point <= res.upper and res.noise_floor > 0


def test_registered_through_the_hook_and_built_by_name():
    reg = registries()
    assert NAMES <= set(reg.estimators.names())
    built = build_estimators(reg, BuildContext(registries=reg))
    assert set(built) == NAMES
    with pytest.raises(PluginError):
        build_estimators(reg, BuildContext(registries=reg), ["no_such_estimator"])


def test_run_estimators_schema_and_determinism(small):
    reg = registries()
    ests = build_estimators(reg, BuildContext(registries=reg), sorted(NAMES - {"transfer_gap", "detection"}))
    first, again = run_estimators(ests, small.inputs), run_estimators(ests, small.inputs)
    assert dict(first.schema) == ESTIMATE_SCHEMA and first.height > 20
    assert first.equals(again)
    assert all(isinstance(json.loads(n), dict) for n in first["note"])
    other = run_estimators(ests, dataclasses.replace(small.inputs, seed=99))
    assert not other["lower"].equals(first["lower"])  # the seed reaches the resampling
    assert other["point"].equals(first["point"])  # but never the point estimates
    ok = first.filter(pl.col("lower").is_not_nan())
    assert (ok["lower"] <= ok["point"] + 1e-12).all() and (ok["point"] <= ok["upper"] + 1e-12).all()


def test_failing_estimator_is_named_or_skipped(small):
    class Broken:
        def estimate(self, inputs):
            raise ZeroDivisionError("boom")

    with pytest.raises(PluginError, match="estimator broken failed"):
        run_estimators({"broken": Broken()}, small.inputs)
    with pytest.warns(RuntimeWarning):
        frame = run_estimators({"broken": Broken(), "control_success": ControlSuccess()}, small.inputs, on_error="warn")
    assert set(frame["estimator"]) == {"control_success"}


def _inputs(kept: pl.DataFrame, condition="prompt:a", target="a", ref=None) -> EstimationInputs:
    ref = ref if ref is not None else kept.select([c for c in kept.columns if c.startswith("feat_") or c in ("text", "world_draws")])
    sel = Selection(condition, condition.split(":")[0].split("@")[0], "prompt:a", target, kept, kept.height)
    return EstimationInputs(planted_task(), ref, kept, [sel], seed=1, n_boot=200)


def _frame(z, h=None, context=None, weight=None, world=None, text=None) -> pl.DataFrame:
    n = len(z)
    feats = {"feat_z": np.asarray(z), "feat_h": np.asarray(h if h is not None else ["h0"] * n)}
    frame = draws_frame("prompt:a", np.arange(n) if context is None else context, np.zeros(n), text if text is not None else ["w"] * n,
                        feats, world if world is not None else [[True, True]] * n)
    return frame.with_columns(pl.Series("weight", np.full(n, 1 / n) if weight is None else weight))


def test_control_success_respects_weights_and_reports_design_effect():
    z = np.array(["a"] * 30 + ["b"] * 70)
    w = np.where(z == "a", 3.0, 1.0)
    (row,) = ControlSuccess().estimate(_inputs(_frame(z, weight=w / w.sum())))
    assert row.point == pytest.approx(90 / 160) and row.method == "korn-graubard"
    assert row.note["ess"] < 100
    (plain,) = ControlSuccess().estimate(_inputs(_frame(z)))
    assert plain.method == "clopper-pearson" and plain.point == pytest.approx(0.3) and plain.note["deff"] == 1.0
    ctx = np.repeat(np.arange(10), 10)
    (clustered,) = ControlSuccess().estimate(_inputs(_frame(z, context=ctx)))  # contexts all-a or all-b
    assert clustered.note["deff"] > 5 and clustered.upper - clustered.lower > 2 * (plain.upper - plain.lower)


def test_forcing_mass_bound_row_flags_a_measured_distance_above_the_bound():
    # reward@4 is a subset of reward@1 on the same draws (as the control makes it), and m is read from
    # draw 4, which the selection did not use. h1 items pass draws 1..3, h0 items fail them: reward@4 keeps
    # only h1 (TV 0.5 from reward@1). Draw 4 lenient to all (draws not exchangeable): m = 1, bound 0,
    # exceeded. Draw 4 like draws 1..3 (exchangeable): m_1 = 0.5, so m_3 >= 0.5^3 (Jensen), bound 1.75.
    n = 80
    h = np.array(["h0", "h1"] * (n // 2))
    task = planted_task(world_k=4)
    for lenient, exceeded in ((True, True), (False, False)):
        later = [True] * n if lenient else list(h == "h1")
        world = [[True, x, x, x, y] for x, y in zip(h == "h1", later)]
        frame = _frame(["a"] * n, h=h, world=world)
        kept = frame.filter(pl.col("world_draws").list.head(4).list.all())
        sels = [Selection("reward@1", "reward", "none", None, frame, n),
                Selection("reward@4", "reward", "none", None, kept.with_columns(weight=pl.lit(1 / kept.height)), n)]
        ref = frame.select("feat_z", "feat_h", "world_draws")
        rows = ForcingMass().estimate(EstimationInputs(task, ref, frame, sels, n_boot=50))
        bound = next(r for r in rows if r.feature == "bound")
        assert bound.note["measured_distance"]["h"] == pytest.approx(0.5) and bound.note["heldout_draws"] == [4, 4]
        assert bound.point == pytest.approx(0.0 if lenient else 1.75) and bound.note["bound_exceeded"] is exceeded
        assert ("bound_exceeded" in bound.note.get("flags", [])) is exceeded
    assert {r.feature for r in rows if r.condition == "reference"} == {"K=1", "K=2", "K=4"}  # capped by 1 + K = 5 draws
    assert all(r.note.get("selection_uses_world_draws") for r in rows if r.condition.startswith("reward@") and r.feature != "bound")


def test_lift_and_correlation_on_exact_data():
    z = np.array(["a", "b"] * 50)
    x = np.where(z == "a", 2.0, 0.0)
    frame = _frame(z).with_columns(pl.Series("feat_x", x))
    ref = frame.with_columns(pl.Series("feat_x", x / 2))
    inputs = _inputs(frame, ref=ref.select("feat_z", "feat_h", "feat_x", "world_draws"))
    lift = {r.feature: r for r in LiftShift().estimate(inputs)}
    # every mimic x is 2.0: the sample shows no variance, so no (zero-width) interval is reported
    assert lift["x"].point == pytest.approx(1.0) and np.isnan(lift["x"].lower) and np.isnan(lift["x"].upper)
    assert lift["x"].note["flags"] == ["no_variance"] and "no variance" in lift["x"].note["no_interval"]
    none = Selection("none", "none", "none", None, frame, frame.height)
    corr = CorrelationShift().estimate(dataclasses.replace(inputs, selections=[none]))
    assert [r.feature for r in corr] == ["x vs z=a"] and corr[0].point == pytest.approx(0.0, abs=1e-12)


def test_latent_shift_compares_conditional_reference_and_matched_rows(small):
    rows = {(r.condition, r.feature): r for r in LatentShift().estimate(small.inputs)}
    assert rows[("prompt:a", "h")].note["reference"] == "F(H | Z=a)"
    assert rows[("reward@1", "h")].note["reference"] == "F(H | R=1)"
    assert rows[("none", "x")].note["distance"] == "w1/iqr" and rows[("none", "t")].note["kind"] == "binary"
    assert rows[("prompt:a", "h")].n < small.inputs.selections[1].kept.height  # only rows with Z' = a


def test_transfer_gap_skips_rare_classes_and_detection_separates_texts():
    rng = np.random.default_rng(8)
    n = 120
    label = rng.integers(0, 2, n).astype(float)
    text = np.where(label == 1, "good fine", "bad poor")
    frame = _frame(["a"] * n, context=np.repeat(np.arange(30), 4), text=text).with_columns(pl.Series("feat_t", label))
    ref = frame.select("text", "feat_z", "feat_h", "feat_t")
    (gap,) = TransferGap().estimate(_inputs(frame, ref=ref))
    assert gap.point == pytest.approx(0.0) and gap.note["trts"] == pytest.approx(1.0)
    rare = frame.with_columns(pl.Series("feat_t", np.r_[np.ones(5), np.zeros(n - 5)]))
    assert TransferGap().estimate(_inputs(rare, ref=rare.select("text", "feat_z", "feat_h", "feat_t"))) == []
    other = frame.with_columns(pl.Series("text", np.where(label == 1, "great", "awful")))
    (far,) = Detection().estimate(_inputs(other, ref=ref))
    assert far.point > 0.95 and far.note["similarity"] < 0.1
    (near,) = Detection().estimate(_inputs(frame, ref=ref.with_columns(pl.Series("text", rng.permutation(text)))))
    assert near.lower < 0.5 < near.upper


def test_planted_token_shares_and_their_detection_auc():
    rng = np.random.default_rng(0)
    n = 200_000
    t = (rng.random(n) < 0.5).astype(float)
    alpha = 0.5 + rng.uniform(-0.2, 0.2, n)
    for texts, shares in ((_texts(rng, t, None), REF_TOKENS), (_texts(rng, t, alpha), MIMIC_TOKENS),
                          (_texts(rng, t, alpha, shift=False), REF_TOKENS)):
        assert {tok: np.mean(texts == tok) for tok in shares} == pytest.approx(shares, abs=0.005)
    assert detection_auc(REF_TOKENS, MIMIC_TOKENS) == pytest.approx(0.64125)
    swapped = {"alpha alpha": 1.0, "beta beta": 0.0, "gamma gamma": 2.0}  # a classifier ranking alpha above beta
    assert detection_auc(REF_TOKENS, MIMIC_TOKENS, swapped) == pytest.approx(0.53375)
    assert detection_auc(REF_TOKENS, REF_TOKENS, swapped) == pytest.approx(0.5)


def test_detection_tests_on_whole_contexts_the_classifier_never_saw(small):
    sel = next(s for s in small.inputs.selections if s.condition == "none")
    fit = Detection().holdout(small.inputs, sel)
    contexts = clusters_of(sel.kept).n_clusters
    assert fit.mim_clusters.n_clusters == round(contexts / 2) and fit.mim_clusters.n == 4 * fit.mim_clusters.n_clusters
    assert fit.is_mimic.sum() == fit.mim_clusters.n and fit.ref_clusters.n == round(small.inputs.reference.height / 2)
    (row,) = Detection({"n_boot": 50}).estimate(dataclasses.replace(small.inputs, selections=[sel]))
    assert row.note["test_contexts"] == fit.mim_clusters.n_clusters and row.lower < row.point < row.upper


def test_estimates_are_estimate_objects_with_json_notes(small):
    for est in (ControlSuccess(), ForcingMass()):
        for r in est.estimate(small.inputs):
            assert isinstance(r, Estimate)
            json.dumps(r.note)


def test_all_estimators_survive_empty_and_tilted_selections(small):
    none = next(s for s in small.inputs.selections if s.condition == "none")
    rng = np.random.default_rng(0)
    w = np.exp(rng.normal(size=none.kept.height))
    tilted = Selection("tilt@0.5", "tilt", "none", None, none.kept.with_columns(pl.Series("weight", w / w.sum())), none.kept.height)
    empty = Selection("reward@16", "reward", "none", None, none.kept.clear(), none.kept.height)
    inputs = dataclasses.replace(small.inputs, selections=[none, tilted, empty])
    ests = {name: cls({"n_boot": 50}) for name, (cls, _) in ESTIMATORS.items()}
    frame = run_estimators(ests, inputs)
    assert "reward@16" not in set(frame["condition"])
    tilt = frame.filter(pl.col("condition") == "tilt@0.5")
    assert {"latent_shift", "forcing_mass", "transfer_gap", "detection"} <= set(tilt["estimator"])
    shift = tilt.filter((pl.col("estimator") == "latent_shift") & (pl.col("feature") == "h")).row(0, named=True)
    note = json.loads(shift["note"])
    assert note["null_method"] == "centred-cluster-bootstrap" and note["ess"] < shift["n"]  # weights are used
