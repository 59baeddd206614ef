"""The forcing-set bound check can fail (issue 14, point 4).

reward@K keeps the reward@1 items whose draws 1..K-1 succeed, so a bound read from those same
draws can never be exceeded. ForcingMass reads m from draws the selection did not use (draws
K..2K-2), or from the exact forcing set where no draw is spare and the world knows it. The bound
assumes repeated draws are i.i.d. given x; a judge that warms to a text as it rereads it
(harness.testing.planted_worlds.WarmingJudge) breaks that, and the check must fire there, and
not on the same judge with exchangeable draws, nor on bookworld run through the real pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

import harness.builtin.bookworld as B
from harness.scripted import ScriptedMimic
from harness.modelspec import ModelSpec
from harness.protocols import EstimationInputs, Selection
from harness.run import RunConfig, run
from harness.stats.est_forcing import ForcingMass, forcing_set_table
from harness.stats.flags import BOUND_EXCEEDED, SELECTION_USES_WORLD_DRAWS, flags_of
from harness.testing.synthetic import draws_frame, planted_task
from harness.testing import planted_worlds
from harness.testing.planted_worlds import PlantedJudge, WarmingJudge
from tests.test_bookworld_truth import TASK_YAML, bookworld_fn

HELPS, PLAIN = "At one point Mara helps a neighbour.", "Nothing much happens."


def reward_inputs(world, rng: np.random.Generator, *, contexts: int = 8, samples: int = 8, world_k: int = 8,
                  ks: tuple[int, ...] = (1, 4), p_help: float = 0.3, kappa: float = 6.0):
    """Items with a binary latent ``h`` (a context effect on its rate), drawn 1 + world_k times by ``world``.

    Returns EstimationInputs with selections reward@k (rows whose first k draws all succeed).
    """
    c = np.repeat(np.arange(contexts), samples)
    h = rng.random(c.size) < rng.beta(p_help * kappa, (1 - p_help) * kappa, contexts)[c]
    texts = [f"item {rng.integers(1 << 40)}-{i}. {HELPS if x else PLAIN}" for i, x in enumerate(h)]
    seeds = rng.integers(0, 2**31 - 1, size=(c.size, 1 + world_k))
    # one call, item by item and draw 0..K in order, as harness.worlds.draws.world_matrix makes it
    matrix = world.draws([t for t in texts for _ in range(1 + world_k)], seeds.ravel()).reshape(c.size, 1 + world_k)
    frame = draws_frame("none", c, np.tile(np.arange(samples), contexts), texts,
                        {"feat_h": np.where(h, "helps", "plain")}, matrix.tolist())
    sels = []
    for k in ks:
        kept = frame.filter(pl.col("world_draws").list.head(k).list.all())
        sels.append(Selection(f"reward@{k}", "reward", "none", None, kept.with_columns(weight=pl.lit(1.0 / max(kept.height, 1))), frame.height))
    task = planted_task(world_k=world_k)
    reference = frame.select("text", "feat_h")
    return EstimationInputs(task, reference, frame, sels, seed=int(rng.integers(1 << 30)), n_boot=100)


def bound_of(rows, condition: str):
    (row,) = [r for r in rows if r.condition == condition and r.feature == "bound"]
    return row


def fire_rate(world, reps: int, seed: int, **design) -> tuple[float, list]:
    rng = np.random.default_rng(seed)
    rows = [bound_of(ForcingMass().estimate(reward_inputs(world, rng, **design)), "reward@4") for _ in range(reps)]
    return float(np.mean([r.note["bound_exceeded"] for r in rows])), rows


def test_bound_is_read_from_draws_the_selection_did_not_use():
    inputs = reward_inputs(PlantedJudge(), np.random.default_rng(0))
    row = bound_of(ForcingMass().estimate(inputs), "reward@4")
    note = row.note
    assert note["bound_basis"] == "held-out draws" and note["heldout_draws"] == [4, 6] and note["heldout_k"] == 3
    base = inputs.selections[0].kept  # reward@1
    world = np.asarray(base["world_draws"].to_list(), dtype=bool)
    assert note["m_heldout"] == pytest.approx(world[:, 4:7].all(axis=1).mean())
    assert row.point == pytest.approx(2 * (1 - note["m"])) and row.lower <= row.point <= row.upper <= 2
    assert note["bound_checked"] is True and note["bound_exceeded"] == (note["max_measured"] > row.upper)
    assert (BOUND_EXCEEDED in flags_of(note)) == note["bound_exceeded"]


def test_warming_judge_exceeds_the_bound_and_exchangeable_judges_do_not():
    reps = 100
    warm, warm_rows = fire_rate(WarmingJudge(harsh_reads=4, reads=9), reps, seed=1, contexts=16, samples=8)
    print(f"warming judge, C=16 x S=8: bound exceeded in {warm:.2f} of {reps}; median measured "
          f"{np.median([r.note['max_measured'] for r in warm_rows]):.3f}, median bound upper {np.median([r.upper for r in warm_rows]):.3f}")
    assert warm >= 0.95
    fired = next(r for r in warm_rows if r.note["bound_exceeded"])
    assert BOUND_EXCEEDED in fired.note["flags"] and fired.note["max_measured"] > fired.upper
    # exchangeable judges: a loose bound (rho 1 or 0.3) and a tight one (rho 1 or 0.97, m near 1)
    for judge, design in ((PlantedJudge(), {"contexts": 16, "samples": 8}),
                          (PlantedJudge(p_other=0.97), {"contexts": 8, "samples": 1, "p_help": 0.5})):
        same, rows = fire_rate(judge, 2 * reps, seed=2, **design)
        print(f"exchangeable judge p_other={judge.p_other}, {design}: exceeded in {same:.3f}; median bound "
              f"{np.median([r.point for r in rows]):.3f}, median measured {np.median([r.note.get('max_measured', 0) for r in rows]):.3f}")
        # at most the 5% a 95% check may show, with binomial tolerance (2.5 sd)
        assert same <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / (2 * reps))


def test_without_spare_draws_the_exact_forcing_set_gives_m():
    judge = PlantedJudge()
    inputs = reward_inputs(judge, np.random.default_rng(3), world_k=3, ks=(1, 4))  # reward@4 uses all 4 draws
    row = bound_of(ForcingMass().estimate(inputs), "reward@4")
    assert row.note["bound_checked"] is False and row.note["bound_basis"] == "selection draws"
    assert "k >= 6" in row.note["bound_unchecked"] and SELECTION_USES_WORLD_DRAWS in row.note["flags"]
    assert row.note["bound_exceeded"] is False
    tables = forcing_set_table(judge, [inputs.draws])
    exact = ForcingMass().estimate(EstimationInputs(inputs.task, inputs.reference, inputs.draws, inputs.selections,
                                                    seed=inputs.seed, n_boot=100, tables=tables))
    row = bound_of(exact, "reward@4")
    in_xf = judge.in_forcing_set(inputs.selections[0].kept["text"].to_list())
    assert row.note["bound_basis"] == "exact forcing set" and row.note["bound_checked"] is True
    assert row.note["m"] == pytest.approx(in_xf.mean()) == pytest.approx(row.note["exact_m"])
    assert forcing_set_table(WarmingJudge(), [inputs.draws]) == {}  # a warming judge has no exact X_F


# --- the real pipeline: bookworld texts from a scripted mimic, judged by bookworld's readers or a planted judge


def books_task(tmp_path: Path, world: dict) -> Path:
    """tasks/bookworld.yaml cut down: proxy 5, controls none, reward@1, reward@4, reward@8; the given world."""
    spec = yaml.safe_load(TASK_YAML.read_text())
    spec["proxy"]["values"] = [5]
    spec["controls"] = ["none", "reward@1", "reward@4", "reward@8"]
    spec["world"] = world
    spec["reference"]["n"] = 300
    spec.pop("context_sizes", None)
    spec.pop("betas", None)
    spec["generation"]["max_tokens"] = 400
    path = tmp_path / f"books-{world['type']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def plugin_registries(registries, register_plugin):
    if "bookworld" not in registries.reference_sources:
        registries = register_plugin(B)
    return register_plugin(planted_worlds)


def bound_rows(tmp_path, registries, world: dict, name: str, contexts: int = 12, p_flattery: float = 0.3) -> dict[str, dict]:
    """The bound rows of a run of bookworld's generator (a scripted mimic, extra flattery) under ``world``."""
    mimic = ScriptedMimic(f"scripted:{name}", bookworld_fn(p_flattery=p_flattery))
    config = RunConfig(model=ModelSpec("scripted", name), task=books_task(tmp_path, world), out_dir=tmp_path / name,
                       cache_dir=tmp_path / name / "cache", use_cache=False, progress="off", summary_to="off",
                       n_boot=100, contexts=contexts, samples_per_context=8, estimators=("forcing_mass",))
    result = run(config, registries, mimic)
    assert result.status == "complete"
    rows = result.estimates.filter(pl.col("feature") == "bound")
    out = {r["condition"]: {**r, "note": json.loads(r["note"])} for r in rows.iter_rows(named=True)}
    for cond, r in out.items():
        print(f"{world['type']:22s} {cond}: bound {r['point']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}] "
              f"({r['note']['bound_basis']}) measured {r['note']['max_measured']:.3f} exceeded {r['note']['bound_exceeded']}")
    return out


def test_pipeline_bookworld_does_not_exceed_the_bound(tmp_path, plugin_registries):
    rows = bound_rows(tmp_path, plugin_registries, {"type": "bookworld-readers", "k": 8}, "books")
    assert set(rows) == {"reward@4", "reward@8"}
    assert rows["reward@4"]["note"]["heldout_draws"] == [4, 6]  # 3 spare draws for m_3
    assert rows["reward@8"]["note"]["heldout_draws"] == [8, 8]  # 1 spare draw: m_7 >= m_1^7 (Jensen)
    for r in rows.values():
        assert r["note"]["bound_checked"] is True and r["note"]["bound_exceeded"] is False
        assert BOUND_EXCEEDED not in flags_of(r["note"])
        assert 0 <= r["note"]["exact_m"] <= r["note"]["m_heldout"]  # bookworld knows its forcing set exactly


def test_pipeline_warming_judge_exceeds_the_bound_and_planted_judge_does_not(tmp_path, plugin_registries):
    # the judge marks the helping sentence (rho 1, else 0.3); bookworld's own mix of reviews, 16 x 8 draws
    warming = {"type": "planted-warming-judge", "k": 8, "harsh_reads": 4, "reads": 9}
    warm = bound_rows(tmp_path, plugin_registries, warming, "warm", contexts=16, p_flattery=0.0)
    assert warm["reward@4"]["note"]["bound_exceeded"] is True and BOUND_EXCEEDED in warm["reward@4"]["note"]["flags"]
    assert warm["reward@4"]["note"]["max_measured"] > warm["reward@4"]["upper"]
    same = bound_rows(tmp_path, plugin_registries, {"type": "planted-judge", "k": 8}, "same", contexts=16, p_flattery=0.0)
    assert not any(r["note"]["bound_exceeded"] for r in same.values())
