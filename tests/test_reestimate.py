"""`mimic estimate`: a finished run's estimates recomputed from its tables, without a model.

Fast: a scripted run's estimates, deleted and recomputed, equal the originals exactly; bad input is
one line with its exit code and leaves the run's files as they were. Slow: the published runs,
re-estimated from their shipped draws, rebuild results/published/leaderboard.json byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from harness.cli import main
from harness.records import read_manifest
from tests.helpers import books_reference_jsonl, books_task_yaml

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "results" / "published"
# A planted model: three items rated 5, 1 and 3 (the config is written as JSON, which YAML reads).
PLANTED = [(" 5\nReview: warm and good", 0.4), (" 1\nReview: dull and slow", 0.3), (" 3\nReview: a good warm book", 0.3)]
MODELS = {"models": {"golden": {"backend": "scripted", "model": "planted",
                                "distribution": [{"text": text, "p": p} for text, p in PLANTED]}}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished scripted run of the books task (3 contexts x 4 samples per pool, 200 resamples)."""
    work = tmp_path_factory.mktemp("reestimate")
    (work / "task.yaml").write_text(books_task_yaml("re-books", 3, 4))
    (work / "ref.jsonl").write_text(books_reference_jsonl())
    (work / "models.yaml").write_text(json.dumps(MODELS))
    argv = ["run", "-m", "golden", "--model-config", str(work / "models.yaml"), "-t", str(work / "task.yaml"),
            "--out", str(work / "results"), "--no-cache", "--progress", "off", "--n-boot", "200"]
    assert main(argv) == 0
    (run_dir,) = (work / "results" / "runs").iterdir()
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("lock", "draws.jsonl"))
    return copy


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_manifest_records_the_estimation_settings(finished):
    record = read_manifest(finished).estimation
    assert record["n_boot"] == 200 and "control_success" in record["estimators"]


def test_deleted_estimates_are_recomputed_exactly(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    original = pl.read_parquet(run_dir / "estimates.parquet")
    original_json = (run_dir / "estimates.json").read_text()
    for name in ("estimates.parquet", "estimates.json"):
        (run_dir / name).unlink()
    assert main(["estimate", str(run_dir)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(run_dir.name) and "n_boot 200" in line and "\n" not in line
    assert pl.read_parquet(run_dir / "estimates.parquet").equals(original)
    assert (run_dir / "estimates.json").read_text() == original_json


def test_a_copy_under_out_is_a_run_directory_and_the_run_is_untouched(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    before = hashes(run_dir)
    assert main(["estimate", str(run_dir), "--out", str(tmp_path / "again"), "--n-boot", "100"]) == 0
    assert hashes(run_dir) == before
    copy = tmp_path / "again" / run_dir.name
    assert {"manifest.json", "draws.parquet", "reference.parquet", "estimates.parquet", "estimates.json", "summary.md"} <= \
        {p.name for p in copy.iterdir()}
    assert read_manifest(copy).estimation["n_boot"] == 100  # the record says how the estimates beside it were made
    assert main(["leaderboard", str(tmp_path / "again"), "--out", str(tmp_path / "board"), "--no-findings"]) == 0


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "(fix: " in err, err
    return err


def test_existing_estimates_are_kept_unless_overwrite(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    before = hashes(run_dir)
    assert main(["estimate", str(run_dir)]) == 2
    assert "--overwrite" in error_line(capsys)
    assert hashes(run_dir) == before
    assert main(["estimate", str(run_dir), "--overwrite"]) == 0
    assert pl.read_parquet(run_dir / "estimates.parquet").equals(pl.read_parquet(finished / "estimates.parquet"))


@pytest.mark.parametrize("damage, expected", [
    ("not_a_run", "no run directories"),
    ("reference", "hashes to"),
    ("draws", "no draws.parquet"),
    ("estimator", "unknown estimator"),
    ("n_boot", "--n-boot must be at least"),
])
def test_bad_input_is_one_line_and_writes_nothing(finished, tmp_path, capsys, damage, expected):
    run_dir = copy_run(finished, tmp_path)
    for name in ("estimates.parquet", "estimates.json"):
        (run_dir / name).unlink()
    argv = ["estimate", str(run_dir)]
    if damage == "not_a_run":
        argv = ["estimate", str(tmp_path / "empty")]
        (tmp_path / "empty").mkdir()
    elif damage == "reference":
        ref = pl.read_parquet(run_dir / "reference.parquet")
        ref.with_columns(pl.col("review").str.to_uppercase()).write_parquet(run_dir / "reference.parquet")
    elif damage == "draws":
        (run_dir / "draws.parquet").unlink()
    elif damage == "estimator":
        argv += ["--estimator", "nosuch"]
    else:
        argv += ["--n-boot", "5"]
    before = hashes(run_dir)
    assert main(argv) == 2
    assert expected in error_line(capsys)
    assert hashes(run_dir) == before


def test_a_folder_without_a_manifest_task_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"schema_version": 1, "run_id": "x"}))
    assert main(["estimate", str(run_dir)]) == 2
    assert "records no task" in error_line(capsys)


@pytest.mark.slow
def test_published_runs_reestimated_rebuild_the_published_board_exactly(tmp_path, capsys):
    """The board anyone can recompute: drop every shipped estimate, recompute them from the shipped
    draws, rebuild the board as scripts/publish.sh does, and compare bytes (about 15 s on 2 cores)."""
    runs = tmp_path / "runs"
    shutil.copytree(PUBLISHED / "runs", runs)
    for path in runs.glob("*/estimates.*"):
        path.unlink()
    assert main(["estimate", str(runs)]) == 0
    assert main(["leaderboard", str(runs), "--out", str(tmp_path / "board"), "--no-findings"]) == 0
    for name in ("leaderboard.json", "leaderboard.md"):
        assert (tmp_path / "board" / name).read_bytes() == (PUBLISHED / name).read_bytes(), \
            f"{name} differs: republish with `bash scripts/publish.sh results/published/runs/*/` after changing estimators or the board"
    for shipped in sorted((PUBLISHED / "runs").iterdir()):
        assert (runs / shipped.name / "estimates.json").read_bytes() == (shipped / "estimates.json").read_bytes()
