"""`mimic compare A B`: paired differences of two models on the same task, reference and seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import DataError
from harness.leaderboard import latents as lt
from harness.leaderboard.compare import PairedBootstrap, compare, render_text
from harness.leaderboard.document import build_document
from harness.leaderboard.runs import load_runs
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
        if cell["method"] == "conservative":
            assert cell["difference"]["lower"] <= cell["difference"]["point"] <= cell["difference"]["upper"]
    methods = {(c["estimator"], c["condition"]): c["method"] for c in section["cells"]}
    assert methods[("latent_shift", "prompt:5")] == "paired-cluster-bootstrap"
    assert methods[("control_success", "prompt:5")] == "conservative"
    length = next(c for c in section["cells"] if c["condition"] == "prompt:5" and c["feature"] == "length")
    assert length["distinguishable"] and length["difference"]["upper"] < 0
    text = render_text(result)
    assert "A ranks above B" in text and "A closer to the reference" in text


def test_pairing_is_narrower_than_the_conservative_combination(root):
    paired = compare(_side(root, "with", "good"), _side(root, "with", "bad"), n_boot=N_BOOT)["sections"][0]["score"]
    plain = compare(_side(root, "without", "good"), _side(root, "without", "bad"), n_boot=N_BOOT)["sections"][0]["score"]
    assert plain["method"] == "conservative"
    width = lambda iv: iv["upper"] - iv["lower"]  # noqa: E731
    assert width(paired["difference"]) < width(plain["difference"])
    a, b = plain["a"], plain["b"]
    assert plain["difference"]["lower"] == pytest.approx(a["lower"] - b["upper"])
    assert plain["difference"]["upper"] == pytest.approx(a["upper"] - b["lower"])


def test_a_run_against_itself_differs_by_exactly_zero(root):
    side = _side(root, "with", "good")
    section = compare(side, side, n_boot=N_BOOT)["sections"][0]
    assert section["score"]["difference"] == {"point": 0.0, "lower": 0.0, "upper": 0.0}
    assert not section["score"]["distinguishable"]
    assert "not distinguishable" in render_text(compare(side, side, n_boot=N_BOOT))


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


def test_paired_weights_resample_a_shared_context_once_for_both(root):
    a, b = _side(root, "with", "good"), _side(root, "with", "bad")
    info = lt.task_info(a.manifests[0])
    da = next(iter(a.draws.values())).with_columns(_seed=0)
    db = next(iter(b.draws.values())).with_columns(_seed=0)
    boot = PairedBootstrap(info, next(iter(a.references.values())), da, db, n_boot=50, seed=1)
    assert boot.paired
    key = lambda f: (f["pool"] + "/" + f["context_id"].cast(str)).to_list()  # noqa: E731
    first_a, first_b = key(da).index("none/3"), key(db).index("none/3")
    assert np.array_equal(boot.w_a[:, first_a], boot.w_b[:, first_b])
    rep_a, rep_b, pa, pb = boot.distances("prompt:5", "genre")
    ref = next(iter(a.references.values()))
    rows = lt.condition_rows(da, info, "prompt:5")
    assert pa == pytest.approx(lt.distance("categorical", lt.values_of(lt.reference_rows(ref, info, "prompt:5"), "genre", "categorical"),
                                           lt.values_of(rows, "genre", "categorical")))
    assert rep_a.shape == rep_b.shape == (50,)


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
