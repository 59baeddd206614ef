"""Controls over hand-built draws tables (contract schema, no model): selections, weights, costs."""

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import entropy

from harness.builtin import controls as builtin_controls
from harness.controls import tilt_diagnostics
from harness.errors import DataError, PluginError, TaskError
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.protocols import BuildContext, Selection
from harness.seeding import derive_seed
from harness.selection import build_controls, required_pools, select_all
from harness.taskspec import ComponentRef, ControlSpec, FeatureRef, ProxySpec, RenderSpec, SamplingPlan, TaskSpec, WorldSpec

K = 4
BETAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


@pytest.fixture(scope="module")
def ctx():
    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, builtin_controls, "builtin-controls")
    return BuildContext(registries=build_registries(pm))


def make_task(*controls, world=True, betas=BETAS):
    specs = tuple(ControlSpec(c) if isinstance(c, str) else ControlSpec(*c) for c in controls)
    return TaskSpec(name="t", version=1, description="", reference=ComponentRef("csv"), render=RenderSpec(exemplar="{{ text }}"),
                    features=(FeatureRef("rating", "header_field"), FeatureRef("genre", "keyword")),
                    proxy=ProxySpec("rating", (5, 1)), latents=("genre",), controls=specs,
                    plan=SamplingPlan(contexts=4, samples_per_context=8, exemplars=3),
                    world=WorldSpec("bookworld-readers", k=K) if world else None, betas=betas)


def make_draws(seed=0, contexts=4, samples=8, pools=("none", "prompt:5", "prompt:1"), n_exemplars=3):
    """A draws table with planted per-row success rates (some rows succeed on every draw)."""
    rng = np.random.default_rng(seed)
    rows = []
    for pool in pools:
        for c in range(contexts):
            for s in range(samples):
                rho = rng.choice([0.0, 0.3, 0.7, 1.0])
                rating = float(rng.choice([1.0, 3.0, 5.0])) if rng.random() > 0.1 else None
                rows.append({
                    "run_id": "r", "task": "t", "task_version": 1, "pool": pool, "context_id": c, "sample_index": s,
                    "seed": derive_seed(seed, "t", pool, c, s), "model": "scripted:x", "n_exemplars": n_exemplars,
                    "exemplar_ids": [1, 2, 3], "prompt_hash": "h", "text": f"{pool}/{c}/{s}", "completion": "",
                    "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 5, "cached": False,
                    "feat_rating": rating, "feat_genre": str(rng.choice(["sf", "romance"])),
                    "world_draws": [bool(x) for x in rng.random(1 + K) < rho],
                })
    return pl.DataFrame(rows, schema_overrides={"feat_rating": pl.Float64, "world_draws": pl.List(pl.Boolean)})


def by_condition(controls_, draws, task):
    return {s.condition: s for s in select_all(controls_, draws, task)}


def keys(frame):
    return list(zip(frame["context_id"].to_list(), frame["sample_index"].to_list()))


def test_pools_and_conditions(ctx):
    task = make_task("tilt", ("reward", {"k": 1}), "filter", ("best-of-n", {"n": 4}), "prompt", "none")
    controls_ = build_controls(task, ctx.registries, ctx)
    assert list(controls_) == ["tilt", "reward(k=1)", "filter", "best-of-n(n=4)", "prompt", "none"]
    assert required_pools(task, controls_) == ["none", "prompt:5", "prompt:1"]
    conditions = list(by_condition(controls_, make_draws(), task))
    assert conditions == [*(f"tilt@{b:g}" for b in BETAS), "reward@1", "filter:5", "filter:1", "best-of-4",
                          "prompt:5", "prompt:1", "none"]
    assert required_pools(make_task("filter"), build_controls(make_task("filter"), ctx.registries, ctx)) == ["none"]


def test_none_prompt_filter(ctx):
    task = make_task("none", "prompt", "filter")
    draws = make_draws().sample(fraction=1.0, shuffle=True, seed=3)  # order of the log must not matter
    sel = by_condition(build_controls(task, ctx.registries, ctx), draws, task)
    none = draws.filter(pl.col("pool") == "none")
    assert sel["none"].raw_draws == 32 and len(sel["none"].kept) == 32
    assert keys(sel["none"].kept) == sorted(keys(none))
    assert np.allclose(sel["prompt:5"].kept["weight"].to_numpy(), 1 / 32) and sel["prompt:5"].target == 5
    for value in (5, 1):
        f = sel[f"filter:{value}"]
        expected = none.filter(pl.col("feat_rating") == float(value))
        assert f.pool == "none" and f.raw_draws == 32 and f.target == value
        assert sorted(keys(f.kept)) == sorted(keys(expected)) and 0 < len(f.kept) < 32
        assert math.isclose(f.kept["weight"].sum(), 1.0)
        assert set(f.kept.columns) == set(draws.columns) | {"weight"}


def test_reward_at_k_and_its_limits(ctx):
    draws = make_draws()
    none = draws.filter(pl.col("pool") == "none").sort(["context_id", "sample_index"])
    wd = np.array(none["world_draws"].to_list())
    for k in (1, 3, 1 + K):
        task = make_task(("reward", {"k": k}))
        [sel] = select_all(build_controls(task, ctx.registries, ctx), draws, task)
        assert keys(sel.kept) == [key for key, ok in zip(keys(none), wd[:, :k].all(axis=1)) if ok]
        assert sel.condition == f"reward@{k}" and sel.raw_draws == 32
        assert math.isclose(sel.info["acceptance"], wd[:, :k].all(axis=1).mean())
    with pytest.raises(TaskError, match=r"between 1 and 1 \+ K = 5"):
        build_controls(make_task(("reward", {"k": K + 2})), ctx.registries, ctx)
    with pytest.raises(TaskError, match="needs a world"):
        build_controls(make_task(("reward", {"k": 1}), world=False), ctx.registries, ctx)
    task = make_task(("reward", {"k": 2, "pool": "prompt:5"}))
    [sel] = select_all(build_controls(task, ctx.registries, ctx), draws, task)
    assert sel.condition == "reward@2/prompt:5" and set(sel.kept["pool"].to_list()) <= {"prompt:5"}
    with pytest.raises(TaskError, match="not a pool"):
        build_controls(make_task(("reward", {"k": 1, "pool": "prompt:4"})), ctx.registries, ctx)
    with pytest.raises(DataError, match="no world draws"):
        select_all(build_controls(make_task(("reward", {"k": 1})), ctx.registries, ctx),
                   draws.with_columns(pl.lit(None, dtype=pl.List(pl.Boolean)).alias("world_draws")), make_task())


def test_best_of_n_groups_ties_and_cost(ctx):
    draws = make_draws(contexts=3, samples=5)  # 15 rows in the none pool: 3 groups of 4, 3 left over
    task = make_task(("best-of-n", {"n": 4}))
    [sel] = select_all(build_controls(task, ctx.registries, ctx), draws.reverse(), task)
    none = draws.filter(pl.col("pool") == "none").sort(["context_id", "sample_index"])
    score = np.array(none["world_draws"].to_list()).mean(axis=1)
    seeds = none["seed"].to_numpy()
    want = [min(range(g * 4, g * 4 + 4), key=lambda i: (-score[i], seeds[i])) for g in range(3)]
    assert keys(sel.kept) == [keys(none)[i] for i in want]
    assert sel.raw_draws == 12 and sel.info["leftover"] == 3 and sel.condition == "best-of-4"
    assert math.isclose(sel.info["kl_bound"], math.log(4) - 3 / 4)
    # all scores tied: the smallest seed of each group wins
    tied = draws.with_columns(pl.lit([True] * (1 + K), dtype=pl.List(pl.Boolean)).alias("world_draws"))
    [sel] = select_all(build_controls(task, ctx.registries, ctx), tied, task)
    assert sel.kept["seed"].to_list() == [int(seeds[g * 4:g * 4 + 4].min()) for g in range(3)]
    # a numeric feature as the score, and no world needed then
    task = make_task(("best-of-n", {"n": 2, "score": "rating"}), world=False)
    [sel] = select_all(build_controls(task, ctx.registries, ctx), draws.drop("world_draws"), task)
    rating = none["feat_rating"].fill_null(-math.inf).to_numpy()
    assert sel.kept["feat_rating"].fill_null(-math.inf).to_list() == [max(rating[i], rating[i + 1]) for i in range(0, 14, 2)]
    with pytest.raises(TaskError, match="needs a world"):
        build_controls(make_task(("best-of-n", {"n": 2}), world=False), ctx.registries, ctx)


def tilt_sweep(ctx, draws):
    task = make_task("tilt")
    return select_all(build_controls(task, ctx.registries, ctx), draws, task)


def test_a_sweep_of_betas_reweights_the_same_rows(ctx):
    draws = make_draws()
    sweep = tilt_sweep(ctx, draws)
    assert [s.condition for s in sweep] == [f"tilt@{b:g}" for b in BETAS]
    pool = draws.filter(pl.col("pool") == "none").sort(["context_id", "sample_index"])
    for sel in sweep:  # same rows, same world draws: no new draws were needed
        assert sel.raw_draws == 32 and sel.kept.drop("weight").equals(pool)
        assert math.isclose(sel.kept["weight"].sum(), 1.0)
    kls = [s.info["kl"] for s in sweep]
    assert kls == sorted(kls, reverse=True)  # smaller beta, further from the pool


def test_tilt_limits_kl_and_ess(ctx):
    draws = make_draws()
    pool = draws.filter(pl.col("pool") == "none").sort(["context_id", "sample_index"])
    wd = np.array(pool["world_draws"].to_list())
    r = wd.mean(axis=1)
    task = make_task(("tilt", {"beta": 1e6}), ("tilt", {"beta": 1e-4}), ("reward", {"k": 1 + K}), betas=())
    sel = by_condition(build_controls(task, ctx.registries, ctx), draws, task)
    flat = sel["tilt@1e+06"]
    assert np.allclose(flat.kept["weight"].to_numpy(), 1 / 32) and flat.info["kl"] < 1e-9
    assert math.isclose(flat.info["ess"], 32) and not flat.info["low_ess"]
    sharp, reward = sel["tilt@0.0001"], sel["reward@5"]
    forced = keys(reward.kept)
    assert len(forced) > 0
    w = dict(zip(keys(sharp.kept), sharp.kept["weight"].to_list()))
    assert all(math.isclose(w[key], 1 / len(forced)) for key in forced)
    assert sum(w[key] for key in forced) > 1 - 1e-12
    # KL against scipy's direct computation KL(w || uniform), and ESS against its definition
    for beta in BETAS:
        weights = np.exp(r / beta) / np.exp(r / beta).sum()
        info = tilt_diagnostics(weights)
        assert math.isclose(info["kl"], entropy(weights, np.full(32, 1 / 32)), abs_tol=1e-9)
        assert math.isclose(info["ess"], weights.sum() ** 2 / (weights**2).sum())
    assert math.isclose(sharp.info["ess"], len(forced))
    assert sharp.info["low_ess"] == (len(forced) < 10) and ("low_ess" in sharp.info["flags"]) == sharp.info["low_ess"]


def test_low_ess_flag_threshold():
    assert tilt_diagnostics(np.full(100, 0.01))["low_ess"] is False  # ESS 100
    w = np.zeros(200)
    w[:15] = 1 / 15  # ESS 15: over 10, but under 10% of 200
    info = tilt_diagnostics(w)
    assert info["low_ess"] is True and info["flags"] == ["low_ess"] and math.isclose(info["ess"], 15)
    assert math.isclose(info["kl"], math.log(200 / 15))
    assert tilt_diagnostics(np.full(12, 1 / 12))["low_ess"] is False  # 12 >= max(10, 1.2)


def test_select_all_keeps_equal_duplicates_once_and_rejects_others(ctx):
    task = make_task("tilt", ("tilt", {"beta": 0.1}))
    sweep = select_all(build_controls(task, ctx.registries, ctx), make_draws(), task)
    assert [s.condition for s in sweep].count("tilt@0.1") == 1 and len(sweep) == len(BETAS)

    class Bad:
        def pools(self, task):
            return ["none"]

        def select(self, draws, task):
            kept = draws.head(2).with_columns(pl.lit(0.3).alias("weight"))
            return [Selection("x", "bad", "none", None, kept, 2)]

    with pytest.raises(PluginError, match="sum to 0.6"):
        select_all({"bad": Bad()}, make_draws(), task)


def test_main_context_size_and_missing_pools(ctx):
    draws = pl.concat([make_draws(n_exemplars=3), make_draws(seed=1, n_exemplars=0).with_columns(pl.col("context_id") + 100)])
    task = make_task("none")
    [sel] = select_all(build_controls(task, ctx.registries, ctx), draws, task)
    assert len(sel.kept) == 32 and set(sel.kept["n_exemplars"].to_list()) == {3}
    with pytest.raises(DataError, match="no rows for pool 'prompt:5'"):
        task = make_task("prompt")
        select_all(build_controls(task, ctx.registries, ctx), make_draws(pools=("none",)), task)
    with pytest.raises(TaskError, match="unknown option"):
        build_controls(make_task(("tilt", {"temperature": 1})), ctx.registries, ctx)
