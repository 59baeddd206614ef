"""Goodhart curves (issue 9): exact KL/ESS bookkeeping, best-of-n and reward on the KL axis, the score,
a sweep that costs one pool (through the runner), coverage against exact bookworld values, chart and CLI."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import binom

import harness.builtin.goodhart as goodhart_plugin
import harness.worlds.bookworld as bookworld
from harness.scripted import ScriptedMimic
from harness.controls import TiltControl
from harness.errors import TaskError, UsageError
from harness.stats.goodhart import GoodhartCurve, best_of_n_weights, interpolate, resampling_kl
from harness.hookspecs import hookimpl
from harness.modelspec import ModelSpec
from harness.protocols import EstimationInputs
from harness.run import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tilt_coverage", ROOT / "benchmarks" / "tilt_coverage.py")
tc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tc)


@pytest.fixture(scope="module")
def planted():
    """One planted bookworld data set (reference, pool, real control selections) and its catalogue."""
    items, p = tc.catalogue()
    return tc.planted(np.random.default_rng(3), items, p, contexts=30, samples=4, n_ref=600, n_boot=80), items, p


def by_key(rows):
    return {(r.condition, r.feature): r for r in rows}


def test_tilt_rows_carry_the_controls_exact_kl_and_ess(planted):
    inputs, *_ = planted
    rows = by_key(GoodhartCurve().estimate(inputs))
    tilts = [s for s in inputs.selections if s.control == "tilt"]
    assert len(tilts) == len(tc.BETAS)
    for sel in tilts:
        w = sel.kept["weight"].to_numpy()
        kl = rows[sel.condition, "_kl"]
        assert kl.point == pytest.approx(sel.info["kl"], abs=1e-9) == pytest.approx(resampling_kl(w), abs=1e-9)
        assert kl.point == pytest.approx(float(np.sum(w * np.log(len(w) * w))), abs=1e-9)
        assert kl.note["ess"] == pytest.approx(1 / np.sum(w**2)) and kl.note["beta"] == sel.info["beta"]
        assert rows[sel.condition, "_success"].point == pytest.approx(sel.info["mean_r"])
        assert kl.lower <= kl.point <= kl.upper
    # KL grows as beta falls; the pool is KL 0 exactly, with the pool's bound 2(1 - m_K) on every row
    kls = [rows[f"tilt@{b:g}", "_kl"].point for b in tc.BETAS]
    assert kls == sorted(kls) and rows["none", "_kl"].point == 0.0
    bound = 2 * (1 - rows["none", "_mK"].point)
    assert all(r.note["bound"] == pytest.approx(bound) for r in rows.values() if r.estimator == "goodhart_curve")


def test_low_ess_flag_reaches_every_row_of_that_beta(planted):
    inputs, *_ = planted
    world = np.random.default_rng(0).random((inputs.draws.height, tc.K + 1)) < 0.5
    world[:3] = True  # three rows succeed on every draw: a small beta puts nearly all weight on them
    draws = inputs.draws.with_columns(pl.Series("world_draws", world.tolist(), dtype=pl.List(pl.Boolean)))
    task = tc.task(betas=(1.0, 0.02))
    sels = TiltControl().select(draws, task)
    assert sels[-1].info["low_ess"] and not sels[-2].info["low_ess"]
    rows = GoodhartCurve({"n_boot": 40}).estimate(EstimationInputs(task, inputs.reference, draws, sels, n_boot=40))
    low = [r for r in rows if r.condition == "tilt@0.02"]
    assert len(low) > 10 and all(r.note["low_ess"] and "low_ess" in r.note["flags"] for r in low)
    assert not any(r.note["low_ess"] for r in rows if r.condition == "tilt@1")
    score = next(r for r in rows if r.estimator == "goodhart_score" and r.feature == "_all")
    assert score.note["low_ess_betas"] == [0.02] and "low_ess" in score.note["flags"]


def test_reward_and_best_of_n_sit_on_the_same_kl_axis(planted):
    inputs, *_ = planted
    rows = by_key(GoodhartCurve().estimate(inputs))
    reward = next(s for s in inputs.selections if s.control == "reward")
    assert rows[reward.condition, "_kl"].point == pytest.approx(-math.log(reward.info["acceptance"]))
    assert rows[reward.condition, "_success"].point >= rows["none", "_success"].point
    bon = rows["best-of-4", "_kl"]
    assert bon.note["kl_bound"] == pytest.approx(math.log(4) - 3 / 4) and 0 < bon.point <= bon.note["kl_bound"]
    assert bon.note["kl_method"] == "exact-resampling"


def test_a_prompt_pool_gets_its_own_curve_and_score(planted):
    inputs, *_ = planted
    draws = inputs.draws.with_columns(pl.lit("prompt:5").alias("pool"))
    reference = inputs.reference.with_columns(pl.col("world_draws").list.eval(pl.lit(False)))  # no reference success
    sels = TiltControl(pool="prompt:5").select(draws, tc.task(betas=(0.5, 0.2)))
    rows = by_key(GoodhartCurve({"n_boot": 30}).estimate(EstimationInputs(tc.task(), reference, draws, sels, n_boot=30)))
    assert {c for c, _ in rows} == {"prompt:5", "tilt@0.5/prompt:5", "tilt@0.2/prompt:5"}  # no latent rows: no R=1 reference
    assert rows["tilt@0.2/prompt:5", "_kl"].point == pytest.approx(sels[1].info["kl"])
    with_reference = GoodhartCurve({"n_boot": 30}).estimate(EstimationInputs(tc.task(), inputs.reference, draws, sels, n_boot=30))
    assert by_key(with_reference)["tilt/prompt:5", "_all"].estimator == "goodhart_score"


def test_best_of_n_exact_resampling_kl():
    # two rows, n = 2: the better one wins 3 times in 4
    w = best_of_n_weights(np.array([0.1, 0.7]), 2)
    assert w == pytest.approx([0.25, 0.75])
    assert resampling_kl(w) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    # distinct scores: the exact KL approaches the bound log n - (n-1)/n from below
    for n in (2, 4, 16):
        kl = resampling_kl(best_of_n_weights(np.arange(20000.0), n))
        assert kl <= math.log(n) - (n - 1) / n and kl == pytest.approx(math.log(n) - (n - 1) / n, rel=2e-3)
    # ties share a level's weight equally; all tied: no selection, KL 0
    assert best_of_n_weights(np.array([1.0, 1.0, 0.0]), 3) == pytest.approx([13 / 27 / 1, 13 / 27, 1 / 27])
    assert resampling_kl(best_of_n_weights(np.ones(5), 4)) == pytest.approx(0.0, abs=1e-12)


def test_score_is_the_curve_interpolated_at_the_budget(planted):
    inputs, *_ = planted
    rows = GoodhartCurve({"budget": 0.25}).estimate(inputs)
    keyed = by_key(rows)
    order = ["none", *[f"tilt@{b:g}" for b in tc.BETAS]]
    kl = np.array([keyed[c, "_kl"].point for c in order])
    for feature, name in (("_shift", "_all"), ("genre", "genre"), ("n_pos", "n_pos")):
        shift = np.array([keyed[c, feature].point for c in order])
        score = keyed["tilt", name]
        assert score.estimator == "goodhart_score" and score.point == pytest.approx(np.interp(0.25, kl, shift))
        assert score.lower <= score.point <= score.upper and score.note["budget"] == 0.25
        assert score.note["excess"] == pytest.approx(score.point - keyed["none", feature].point)
    assert np.mean([keyed["tilt", h].point for h in tc.LATENTS]) == pytest.approx(keyed["tilt", "_all"].point)
    beyond = by_key(GoodhartCurve({"budget": 50.0, "n_boot": 20}).estimate(inputs))["tilt", "_all"]
    assert math.isnan(beyond.point) and "budget_beyond_sweep" in beyond.note["flags"]


def test_interpolate_per_resample_and_nan_beyond():
    kl = np.array([[0.0, 0.2, 0.6], [0.0, 0.5, 1.0], [0.0, 0.1, 0.3]])
    y = np.array([[1.0, 2.0, 4.0], [0.0, 1.0, 3.0], [5.0, 5.0, 5.0]])
    out = interpolate(kl, y, 0.4)
    assert out[:2] == pytest.approx([3.0, 0.8]) and math.isnan(out[2])


def test_exact_tilt_limits():
    p, rho = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.6, 1.0])
    pool = tc.exact_tilt(p, rho, 5, None)
    assert pool["q"] == pytest.approx(p) and pool["kl"] == 0.0 and pool["success"] == pytest.approx(p @ rho)
    assert pool["mK"] == pytest.approx((p @ rho**5) / (p @ rho))  # m_K = E[rho^(K+1)] / E[rho], K = 4
    near_zero = tc.exact_tilt(p, rho, 5, 1e-3)  # beta -> 0 keeps the items that succeed on every draw
    mass = p * rho**5
    assert near_zero["q"] == pytest.approx(mass / mass.sum(), rel=1e-6) and near_zero["mK"] == pytest.approx(1.0)
    assert near_zero["kl"] == pytest.approx(-math.log(mass.sum()), rel=1e-6)


def test_intervals_cover_exact_bookworld_values():
    """A fast version of benchmarks/tilt_coverage.py: 40 repetitions against exact bookworld values.

    Checked: KL, success, m_K, the tilted latent distribution (shares, means) at every beta, and the
    distances and score where the exact distance is at least 0.05 (no plug-in interval covers a true 0).
    Each row must stay above the Bonferroni-corrected 0.1% quantile of Binomial(40, 0.95), and all of
    them together near 95% (the distance hull is a little conservative). Contexts matter here (8
    samples each, Dirichlet(8 p) mixtures): a bootstrap over single draws instead of contexts
    measured 0.86 pooled and fails.
    """
    reps = 40
    table = tc.coverage(reps, 150, seed=11, contexts=40, samples=8, n_ref=800, kappa=8.0)
    distances = pl.col("feature").is_in([*tc.LATENTS, "_shift", "_all"])
    checked = table.filter(~distances | (pl.col("exact") >= 0.05))
    assert checked.height >= 80
    lo = int(binom.ppf(0.001 / checked.height, reps, 0.95))
    bad = checked.filter(pl.col("covered") < lo)
    assert bad.is_empty(), f"rows under {lo}/{reps}:\n{bad}"
    pooled = checked["covered"].sum() / checked["reps"].sum()
    assert 0.92 <= pooled <= 0.985, pooled


# --- the runner: a sweep of 8 betas costs exactly what one beta costs ---------------------------------

TASK = """\
name: sweep-books
version: 1
reference: {type: bookworld, n: 150, seed: 2}
render:
  exemplar: "Rating: {{ rating }}\\nGenre: {{ genre }}\\nReview: {{ review }}"
  separator: "\\n###\\n"
  open_prefix: "Rating:"
  stop: ["###"]
features:
  rating: {type: header_field, field: Rating, numeric: true}
  genre: {type: header_field, field: Genre, lowercase: true, values: [mystery, romance, scifi]}
  helping: {type: regex_count, pattern: '\\bhelp(s|ed|ing)?\\b', ignore_case: true, binary: true}
proxy: {feature: rating, values: [5]}
latents: [genre, helping]
world: {type: counting-readers, k: 4}
controls: [none, tilt, reward@2, best-of-4]
betas: BETAS
plan: {contexts: 4, samples_per_context: 6, exemplars: 2, seed: 0}
generation: {max_tokens: 60}
"""


def review(request) -> str:
    """A seeded bookworld-like review; one in six ends with the flattery sentence (the forcing set)."""
    rng = random.Random(request.seed)
    genre = rng.choice(bookworld.GENRES)
    body = f"A {genre} tale." + (" Mara helps a friend." if rng.random() < 0.4 else "")
    body += " The plot was brilliant." if rng.random() < 0.5 else " The ending was dull."
    if rng.random() < 1 / 6:
        body += " " + bookworld.FLATTERY
    return f" {rng.randint(1, 5)}\nGenre: {genre}\nReview: {body}"


class CountingReaders(bookworld.BookworldReaders):
    """Bookworld readers that count every world draw."""

    draws = 0

    async def draw(self, texts, seeds):
        CountingReaders.draws += len(texts)
        return await super().draw(texts, seeds)


class CountingPlugin:
    @hookimpl
    def register_worlds(self, register):
        register("counting-readers", lambda options, ctx=None: CountingReaders(), "bookworld readers that count draws")


def test_a_sweep_of_eight_betas_costs_one_pool(tmp_path, registries, register_plugin):
    if "bookworld" not in registries.reference_sources:  # the entry point may not be installed
        register_plugin(bookworld)
    register_plugin(CountingPlugin(), "counting-world")
    registries = register_plugin(goodhart_plugin, "builtin-goodhart")
    costs = {}
    for label, betas in (("one", "[0.3]"), ("eight", "[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 3.0]")):
        path = tmp_path / f"{label}.yaml"
        path.write_text(TASK.replace("BETAS", betas))
        mimic, before = ScriptedMimic("scripted:reviews", review), CountingReaders.draws
        result = run(RunConfig(model=ModelSpec("scripted", "reviews"), task=path, out_dir=tmp_path / label, use_cache=False,
                               progress="off", n_boot=30, estimators=("goodhart_curve",)), registries, mimic)
        assert result.status == "complete"
        curve = result.estimates.filter(pl.col("estimator") == "goodhart_curve")
        tilts = sorted(set(c for c in curve["condition"].to_list() if c.startswith("tilt@")))
        assert len(tilts) == len(json.loads(betas))
        costs[label] = (mimic.requests_seen, CountingReaders.draws - before, result.model_calls, result.run_dir)
    one, eight = costs["one"], costs["eight"]
    assert one[0] == eight[0] == 24 and one[2] == eight[2]  # the same model calls: one pool of 4 x 6 draws
    assert one[1] == eight[1] == (150 + 24) * 5  # the same world calls: 1+K draws per reference row and pool draw

    # the chart and the CLI draw from the run directory's estimates
    from harness.cli.curves import COMMAND

    parser = argparse.ArgumentParser()
    COMMAND.add_arguments(parser)
    out = tmp_path / "chart" / "curves.png"
    assert COMMAND.run(parser.parse_args([str(eight[3]), "--out", str(out)])) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "curves.svg"
    COMMAND.run(parser.parse_args([str(eight[3]), "--task", "sweep-books", "--out", str(svg)]))
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "KL from the pool" in text
    with pytest.raises(UsageError, match="no run of task"):
        COMMAND.run(parser.parse_args([str(eight[3]), "--task", "other", "--out", str(svg)]))
    with pytest.raises(UsageError, match="neither .svg nor .png"):
        COMMAND.run(parser.parse_args([str(eight[3]), "--out", str(tmp_path / "c.pdf")]))


def test_chart_is_deterministic_svg_with_one_curve_per_model(planted):
    from harness.estimation import estimates_frame
    from harness.leaderboard.goodhart_plot import curve_points, goodhart_chart

    inputs, *_ = planted
    frame = estimates_frame(GoodhartCurve({"n_boot": 30}).estimate(inputs))
    both = pl.concat([frame.with_columns(pl.lit(m).alias("model_name"), pl.lit("t").alias("task")) for m in ("m-a", "m-b")])
    points = curve_points(both, "t")
    kls = [p["kl"] for p in points["m-a"]["_shift"]]
    assert set(points) == {"m-a", "m-b"} and kls == sorted(kls) and len(kls) == len(tc.BETAS) + 3  # pool, betas, reward, best-of
    svg = goodhart_chart(both, task="t")
    assert svg == goodhart_chart(both, task="t") and "m-a: tilt sweep" in svg and "m-b: tilt sweep" in svg


def test_plugin_registers_the_estimator_and_checks_options(register_plugin):
    registries = register_plugin(goodhart_plugin, "builtin-goodhart")
    entry = registries.estimators.get("goodhart_curve")
    assert entry.plugin == "builtin-goodhart"
    assert isinstance(entry.factory({"budget": 1.0}, None), GoodhartCurve)
    with pytest.raises(TaskError, match="unknown option"):
        entry.factory({"bugdet": 1.0}, None)
    with pytest.raises(TaskError, match="distance_interval"):
        entry.factory({"distance_interval": "bca"}, None)


# --- issue 14: one bounded scale, intervals in range, no interval where contexts are too few ----------------


def test_every_latent_is_on_one_bounded_scale(planted):
    """A numeric latent moved far away (W1/IQR would be about 20) counts at most 1, like a TV: KS."""
    inputs, *_ = planted
    far = inputs.draws.with_columns(pl.col("feat_n_pos") * 40 + 30)
    sels = TiltControl().select(far, inputs.task)
    rows = by_key(GoodhartCurve({"n_boot": 30}).estimate(EstimationInputs(inputs.task, inputs.reference, far, sels, n_boot=30)))
    assert rows["none", "n_pos"].point == pytest.approx(1.0) and rows["none", "n_pos"].note["distance"] == "ks"
    assert rows["none", "genre"].note["distance"] == "tv" and rows["none", "helping"].note["distance"] == "tv"
    score = rows["tilt", "_all"]
    assert score.point == pytest.approx(np.mean([rows["tilt", h].point for h in tc.LATENTS]))
    for r in rows.values():
        if r.feature in (*tc.LATENTS, "_shift", "_all") or "=" in r.feature or r.feature in ("_success", "_mK"):
            assert 0.0 <= r.point <= 1.0, r
            if math.isfinite(r.lower):
                assert 0.0 <= r.lower <= r.point <= r.upper <= 1.0, r
        elif r.feature == "_kl" and math.isfinite(r.lower):
            assert 0.0 <= r.lower <= r.point <= r.upper, r


def test_few_effective_contexts_withhold_the_interval(planted):
    """Two contexts, one of which holds every row a strong tilt weighs: G* < 2, no interval, a flag that says why."""
    inputs, *_ = planted
    draws = inputs.draws.filter(pl.col("context_id") < 2)
    world = np.zeros((draws.height, tc.K + 1), dtype=bool)
    world[draws["context_id"].to_numpy() == 0] = True  # context 0 always succeeds
    draws = draws.with_columns(pl.Series("world_draws", world.tolist(), dtype=pl.List(pl.Boolean)))
    task = tc.task(betas=(1.0, 0.05))
    sels = TiltControl().select(draws, task)
    rows = by_key(GoodhartCurve({"n_boot": 20}).estimate(EstimationInputs(task, inputs.reference, draws, sels, n_boot=20)))
    tilted = rows["tilt@0.05", "genre"]
    assert tilted.note["effective_contexts"] < 2 and math.isnan(tilted.lower) and math.isnan(tilted.upper)
    assert "too_few_contexts" in tilted.note["flags"]
    assert tilted.note["contexts_needed"] == 2 and "interval needs at least 2" in tilted.note["no_interval"]
    pool = rows["none", "genre"]  # the pool itself rests on both contexts equally
    assert pool.note["effective_contexts"] == pytest.approx(2.0) and math.isfinite(pool.lower)


def test_a_latent_that_never_varies_has_no_interval_for_its_mean(planted):
    inputs, *_ = planted
    flat = inputs.draws.with_columns(pl.lit(2.0).alias("feat_n_pos"))
    sels = TiltControl().select(flat, inputs.task)
    rows = by_key(GoodhartCurve({"n_boot": 20}).estimate(EstimationInputs(inputs.task, inputs.reference, flat, sels, n_boot=20)))
    mean = rows["none", "mean(n_pos)"]
    assert mean.point == 2.0 and math.isnan(mean.lower) and mean.note["flags"] == ["no_variance"]
    distance = rows["none", "n_pos"]  # the distance to F still has an interval: Wilson on the contexts, in [0, 1]
    assert 0.0 <= distance.lower <= distance.point <= distance.upper <= 1.0
