"""`mimic compare A B`: paired differences of two models on the same task, reference and seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from harness.cli import main
from harness.errors import DataError
from harness.leaderboard import jointboot as jb
from harness.leaderboard import latents as lt
from harness.leaderboard.compare import compare, render_text
from harness.leaderboard.document import build_document
from harness.leaderboard.runs import load_runs
from harness.protocols import LeaderboardData
from harness.records import Manifest
from tests.fixtures.runs.synth import write_run

N_BOOT = 300  # enough for stable 95% ends on these sizes, and fast


@pytest.fixture(autouse=True)
def only_the_writers_plugin(monkeypatch):
    """The CLI loads plugins for its command list; just the writers' one keeps that cheap."""
    monkeypatch.setenv("MIMIC_PLUGINS", "builtin-leaderboard")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cmp")
    write_run(root / "with", model="good", shift=0.05, name="Good")
    write_run(root / "with", model="bad", shift=0.6, name="Bad")
    write_run(root / "with", model="twin-a", shift=0.3)
    write_run(root / "with", model="twin-b", shift=0.3)
    write_run(root / "with", model="late", shift=0.3, seed=5)
    write_run(root / "without", model="good", shift=0.05, with_draws=False)
    write_run(root / "without", model="bad", shift=0.6, with_draws=False)
    write_run(root / "elsewhere", model="good", shift=0.05, reference_seed=9)
    return root


def _side(root: Path, group: str, model: str):
    return load_runs(list((root / group).glob(f"*-{model}-*")))


def test_a_planted_difference_is_found_by_the_paired_bootstrap(root):
    a, b = _side(root, "with", "good"), _side(root, "with", "bad")
    result = compare(a, b, n_boot=N_BOOT)
    (section,) = result["sections"]
    assert section["paired_contexts"] is True
    sync = section["score"]
    assert sync["method"] == "paired-cluster-bootstrap" and sync["distinguishable"] is True
    assert sync["difference"]["lower"] > 0
    # the point is the leaderboard's own score difference
    doc = build_document(load_runs([*(root / "with").glob("*-good-*"), *(root / "with").glob("*-bad-*")]))
    scores = {m["model"]: m["score"]["point"] for m in doc["sections"][0]["models"]}
    assert sync["difference"]["point"] == pytest.approx(scores["scripted:good"] - scores["scripted:bad"])
    for cell in section["cells"]:
        assert cell["difference"]["point"] == pytest.approx(cell["a"]["point"] - cell["b"]["point"])
        if cell["method"] == "conservative" and cell["not_decided"] is None:
            assert cell["difference"]["lower"] <= cell["difference"]["point"] <= cell["difference"]["upper"]
        elif cell["not_decided"]:  # a row that cannot decide shows no interval for its difference (e.g. an exact KL of 0 width)
            assert cell["difference"]["lower"] is None and not cell["distinguishable"]
    methods = {(c["estimator"], c["condition"]): c["method"] for c in section["cells"]}
    assert methods[("latent_shift", "prompt:5")] == "paired-cluster-bootstrap"
    assert methods[("control_success", "prompt:5")] == "conservative"
    length = next(c for c in section["cells"] if c["condition"] == "prompt:5" and c["feature"] == "length")
    assert length["distinguishable"] and length["difference"]["upper"] < 0
    text = render_text(result)
    assert "A ranks above B" in text and "A closer to the reference" in text


def test_pairing_is_narrower_and_scores_without_draws_decide_nothing(root):
    paired = compare(_side(root, "with", "twin-a"), _side(root, "with", "twin-b"), n_boot=N_BOOT)["sections"][0]["score"]
    unpaired = compare(_side(root, "with", "twin-a"), _side(root, "with", "late"), n_boot=N_BOOT)["sections"][0]["score"]
    width = lambda iv: iv["upper"] - iv["lower"]  # noqa: E731
    assert paired["method"] == "paired-cluster-bootstrap" and unpaired["method"] == "cluster-bootstrap"
    assert width(paired["difference"]) < width(unpaired["difference"])
    # issue 14: without draws the score cannot be resampled; the old "mean of the cells' ends" is gone
    result = compare(_side(root, "without", "good"), _side(root, "without", "bad"), n_boot=N_BOOT)
    plain = result["sections"][0]["score"]
    assert plain["a"]["lower"] is None and plain["flags_a"] == ["insufficient_data"] == plain["flags_b"]
    assert plain["difference"]["point"] == pytest.approx(plain["a"]["point"] - plain["b"]["point"])
    assert plain["difference"]["lower"] is None and not plain["distinguishable"]
    assert "not decided: A's score has no interval" in render_text(result)


def test_a_run_against_itself_is_no_interval_not_exactly_equal(root):
    side = _side(root, "with", "good")
    result = compare(side, side, n_boot=N_BOOT)
    section = result["sections"][0]
    # issue 14: a difference whose replicates show no variance has no interval, not a zero-width one
    assert section["score"]["difference"] == {"point": 0.0, "lower": None, "upper": None}
    assert not section["score"]["distinguishable"] and section["score"]["not_decided"] == "no interval (no variance)"
    assert all(not c["distinguishable"] for c in section["cells"])
    assert "not decided: no interval (no variance)" in render_text(result)


def test_equally_good_models_are_not_distinguishable(root):
    result = compare(_side(root, "with", "twin-a"), _side(root, "with", "twin-b"), n_boot=N_BOOT)
    sync = result["sections"][0]["score"]
    assert sync["method"] == "paired-cluster-bootstrap"
    assert sync["difference"]["lower"] <= 0 <= sync["difference"]["upper"] and not sync["distinguishable"]
    assert "A and B are not distinguishable" in render_text(result)


def test_runs_without_a_shared_seed_are_compared_unpaired(root):
    result = compare(_side(root, "with", "twin-a"), _side(root, "with", "late"), n_boot=N_BOOT)
    section = result["sections"][0]
    assert section["paired_contexts"] is False and section["score"]["method"] == "cluster-bootstrap"
    assert any("share no seed" in n for n in result["notes"])


def test_joint_weights_give_a_shared_context_one_weight_for_both(root):
    a, b = _side(root, "with", "good"), _side(root, "with", "bad")
    info = lt.task_info(a.manifests[0].task)
    sides = {name: jb.side_draws(d.manifests, d.draws) for name, d in (("A", a), ("B", b))}
    reference = next(iter(a.references.values()))
    boot = jb.JointBootstrap(info, reference, sides, n_boot=50, seed=1)
    assert boot.paired("A", "B")
    ctx = lambda f: f.filter((pl.col("pool") == "none") & (pl.col("context_id") == 3))["_ctx"].unique().to_list()  # noqa: E731
    assert ctx(boot.sides["A"]) == ctx(boot.sides["B"])  # the same prompt: one context, one weight column
    assert len(boot.keys) == 24  # 3 pools x 8 contexts, each with its own exemplars in this fixture
    cell_a, cell_b = boot.cell("A", "prompt:5", "genre"), boot.cell("B", "prompt:5", "genre")
    rows = lt.condition_rows(sides["A"], info, "prompt:5")
    ref = lt.values_of(lt.reference_rows(reference, info, "prompt:5"), "genre", "categorical")
    assert cell_a.point == pytest.approx(lt.distance("categorical", ref, lt.values_of(rows, "genre", "categorical")))
    assert cell_a.replicates.shape == cell_b.replicates.shape == (50,) and cell_a.contexts == cell_b.contexts
    assert boot.cell("A", "prompt:5", "no-such-latent") is None


def test_few_cluster_interval_follows_cr1_and_t():
    from scipy.stats import t as t_dist

    reps = np.random.default_rng(0).normal(0.5, 0.05, 400)
    spread = jb.few_cluster_interval(0.5, reps, 4, 0.0, 1.0)
    half = t_dist.ppf(0.975, 3) * np.sqrt(4 / 3) * reps.std(ddof=1)
    assert (spread.lower, spread.upper) == pytest.approx((0.5 - half, 0.5 + half)) and spread.flags == ()
    assert jb.few_cluster_interval(0.98, reps, 4, 0.0, 1.0).upper == 1.0  # cut to the score's range
    one = jb.few_cluster_interval(0.5, reps, 1, 0.0, 1.0)
    assert one.lower is None and one.flags == ("too_few_contexts",) and "1 context" in one.reason
    flat = jb.few_cluster_interval(0.0, np.zeros(400), 8, -1.0, 1.0)
    assert flat.lower is None and flat.flags == ("no_variance",)


def _rows_side(label: str, rows: list[tuple[str, float, float, float, dict]]) -> LeaderboardData:
    """A side with hand-written estimate rows and no draws."""
    run_id = f"r-{label}"
    estimates = pl.DataFrame([{
        "run_id": run_id, "model": f"m:{label}", "model_name": label, "task": "t", "task_version": 1, "reference_hash": "h",
        "condition": "none", "estimator": est, "feature": "f", "point": p, "lower": lo, "upper": hi, "n": 8, "method": "x",
        "note": json.dumps(note)} for est, p, lo, hi, note in rows])
    return LeaderboardData(estimates, [Manifest.from_dict({"run_id": run_id, "seed": 0, "model": {"model_id": f"m:{label}"}})], {}, {})


def test_rows_decide_only_where_both_sides_carry_a_calibrated_interval():
    nan = float("nan")
    a = _rows_side("a", [("zero_width", 0.81, 0.0, 1.0, {}), ("withheld", 0.32, 0.06, 0.57, {}),
                         ("flagged", 0.9, 0.8, 1.0, {"flags": ["low_ess"]}), ("fine", 0.8, 0.7, 0.9, {}), ("overlap", 0.5, 0.3, 0.7, {})])
    b = _rows_side("b", [("zero_width", 0.0, 0.0, 0.0, {}), ("withheld", 0.201, nan, nan, {"no_interval": "1 context", "flags": ["too_few_contexts"]}),
                         ("flagged", 0.2, 0.1, 0.3, {}), ("fine", 0.2, 0.1, 0.3, {}), ("overlap", 0.4, 0.2, 0.6, {})])
    result = compare(a, b, n_boot=N_BOOT)
    rows = {c["estimator"]: c for c in result["sections"][0]["cells"]}
    assert rows["zero_width"]["not_decided"] == "B's interval has zero width"
    assert rows["withheld"]["not_decided"] == "B has no interval (1 context)"
    assert rows["flagged"]["not_decided"] == "A is flagged low ESS"
    assert not any(rows[k]["distinguishable"] for k in ("zero_width", "withheld", "flagged", "overlap"))
    assert rows["fine"]["distinguishable"] and rows["fine"]["not_decided"] is None and rows["fine"]["method"] == "conservative"
    text = render_text(result)
    assert "not decided: B's interval has zero width" in text and "A higher" in text


def test_different_reference_data_is_never_compared(root):
    with pytest.raises(DataError, match="share no task"):
        compare(_side(root, "with", "good"), _side(root, "elsewhere", "good"), n_boot=N_BOOT)


def test_cli_compares_model_ids_found_under_results(root, capsys):
    results = str(root / "with")
    assert main(["compare", "Good", "scripted:bad", "--results", results, "--n-boot", str(N_BOOT)]) == 0
    out = capsys.readouterr().out
    assert "A ranks above B" in out and "paired-cluster-bootstrap" in out
    run_a, run_b = next((root / "with").glob("*-good-*")), next((root / "with").glob("*-bad-*"))
    assert main(["compare", str(run_a), str(run_b), "--json", "--n-boot", str(N_BOOT)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sections"][0]["score"]["distinguishable"] is True
    assert main(["compare", "nobody", "Good", "--results", results]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no run of model 'nobody'") and "scripted:good" in err and "\n" not in err
    assert main(["compare", results, "Good", "--results", results]) == 2  # a folder of runs is not one side
    assert "not a run directory" in capsys.readouterr().err
