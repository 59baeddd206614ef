"""`mimic report`: the leaderboard's findings in words, written from the runs (issue 14: the published
README's statements must come from the harness). Its numbers are the estimates' numbers, with their
intervals or "no interval (reason)" and their flags; its closing sentence depends on the data."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.leaderboard.document import build_document
from harness.leaderboard.fmt import fmt_estimate, fmt_interval, md_cell
from harness.leaderboard.markdown import score_text
from harness.leaderboard.prose import MARKER, render_report
from harness.leaderboard.runs import load_runs
from tests.fixtures.runs.flagged import flag_run
from tests.fixtures.runs.synth import write_run

PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "published" / "runs"


@pytest.fixture(autouse=True)
def only_the_writers_plugin(monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", "builtin-leaderboard")


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> tuple[Path, str]:
    """Two models on one task, one carrying every flag; the report written by the CLI."""
    root = tmp_path_factory.mktemp("report-runs")
    flag_run(write_run(root, model="flagged", shift=0.1, name="Flagged"))
    write_run(root, model="plain", shift=0.3, name="Plain")
    out = root / "README.md"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIMIC_PLUGINS", "builtin-leaderboard")
        code, stdout, _ = _cli("report", str(root), "--out", str(out))
    assert code == 0 and stdout.strip() == f"wrote {out}"
    return root, out.read_text(encoding="utf-8")


def _estimates(root: Path) -> list[dict]:
    """Every estimate row the runs wrote, as the runs wrote them (estimates.json)."""
    return [row for path in sorted(root.glob("*/estimates.json")) for row in json.loads(path.read_text())]


def _shown(row: dict) -> str:
    note = json.loads(row["note"]) if isinstance(row["note"], str) else row["note"]
    return md_cell(fmt_estimate(row["point"], row["lower"], row["upper"], note, row["method"]))


def _line_of(text: str, model: str, heading: str) -> str:
    part = text[text.index(f"## {heading}"):]
    part = part[: part.index("\n## ", 3)] if "\n## " in part[3:] else part
    return next(line for line in part.splitlines() if line.startswith(f"- {model}"))


def test_report_numbers_are_the_estimates_numbers_with_their_flags(board):
    root, text = board
    assert text.startswith(MARKER)
    rows = _estimates(root)
    model_name = {"scripted:flagged": "Flagged", "scripted:plain": "Plain"}
    checked = 0
    for row in rows:
        key = (row["estimator"], row["condition"], row["feature"])
        name = model_name[row["model"]]
        if row["estimator"] == "control_success":
            assert f"`{row['condition']}` {_shown(row)}" in _line_of(text, name, "Control success")
        elif key == ("goodhart_score", "tilt", "_all"):
            assert f"`tilt` at 0.5 nats {_shown(row)}" in _line_of(text, name, "Goodhart-proneness")
        elif row["estimator"] == "forcing_mass" and row["condition"] == "none" and row["feature"] == "K=8":
            assert f"unconditioned outputs m_8 {_shown(row)}" in _line_of(text, name, "Forcing set")
        elif row["estimator"] == "forcing_mass" and row["condition"] == "reward@8" and row["feature"] == "bound":
            assert f"`reward@8` predicted bound 2(1 - m) {_shown(row)}" in _line_of(text, name, "Forcing set")
        elif row["estimator"] == "sync_marginal" and row["condition"] in ("sync@1", "sync@8"):
            n = row["condition"].split("@")[1]
            assert f"n={n} {_shown(row)}" in _line_of(text, name, "Synchronisation curves")
        else:
            continue
        checked += 1
    assert checked == 2 * (2 + 1 + 1 + 2 * 3) + 1  # per model: 2 controls, m_8, bound, 3 features x 2 sizes; one Goodhart score
    reference = next(r for r in rows if (r["estimator"], r["condition"], r["feature"]) == ("forcing_mass", "reference", "K=8"))
    assert f"- reference: m_8 {_shown(reference)}" in text


def test_a_flag_in_the_estimates_shows_up_in_the_prose(board):
    _, text = board
    control = _line_of(text, "Flagged", "Control success")
    assert "By construction, not findings: `prompt:5`" in control
    assert "flags: by construction" in control and "flags:" not in _line_of(text, "Plain", "Control success")
    assert "flags: low ESS" in _line_of(text, "Flagged", "Goodhart-proneness")
    forcing = _line_of(text, "Flagged", "Forcing set")
    assert "flags: low ESS, selection uses world draws" in forcing
    assert "flags: bound exceeded" in forcing and "exceeds it" in forcing
    assert "is within it" in _line_of(text, "Plain", "Forcing set")


def test_scores_and_how_the_board_was_made_come_from_the_document_and_manifests(board):
    root, text = board
    doc = build_document(load_runs([root]))
    for m in doc["sections"][0]["models"]:
        assert f"**{m['model_name']}** {md_cell(score_text(m))}" in text
    assert "- 2 run(s) of 2 model(s) on 1 task(s), harness version(s) 0.1.0." in text
    assert "8 contexts x 4 samples per pool, 3 exemplars per context" in text and "- Seeds: 0." in text
    assert "- Draws: 192 of 192 planned (0 read from the draw cache)." in text
    assert "already made only re-estimates): 4.0 s in all" in text  # 1.5 + 0.5 s per run
    rows = [e for s in doc["sections"] for e in s["estimates"]]
    withheld = sum(1 for e in rows if e["point"] is not None and (e["lower"] is None or e["upper"] is None))
    flagged = sum(1 for e in rows if e["flags"])
    assert withheld >= 2 and f"Of {len(rows)} estimates, {withheld} have no interval and {flagged} carry flags" in text


def test_the_closing_sentence_depends_on_what_the_ranking_decided(board):
    root, _ = board
    data = load_runs([root], with_draws=False)
    doc = build_document(data)
    first, second = doc["sections"][0]["models"]
    first.update(rank_label="1", vs_next={"point": 0.2, "lower": 0.1, "upper": 0.3, "distinguishable": True})
    second.update(rank_label="2")
    decided = render_report(doc, data.manifests)
    assert f"- {first['model_name']} vs {second['model_name']}: distinguishable (difference {fmt_interval(0.2, 0.1, 0.3)})." in decided
    assert "All 1 comparison(s) between neighbouring models on the synchronisation score were decided." in decided
    first.update(rank_label="1=", vs_next={"point": 0.2, "lower": -0.1, "upper": 0.5, "distinguishable": False})
    second.update(rank_label="1=")
    tied = render_report(doc, data.manifests)
    assert f"**not distinguishable** (difference {fmt_interval(0.2, -0.1, 0.5)})" in tied and "None of the 1 comparison(s)" in tied


def test_leaderboard_writes_the_same_findings_and_keeps_a_hand_written_readme(board, tmp_path):
    root, text = board
    out = tmp_path / "board"
    code, stdout, _ = _cli("leaderboard", str(root), "--out", str(out), "--format", "markdown")
    assert code == 0 and f"wrote {out / 'README.md'}" in stdout
    assert (out / "README.md").read_text(encoding="utf-8") == text
    (out / "README.md").write_text("# my own notes\n")
    code, stdout, stderr = _cli("leaderboard", str(root), "--out", str(out), "--format", "markdown")
    assert code == 0 and (out / "README.md").read_text() == "# my own notes\n" and "kept" in stderr and "README.md" not in stdout
    code, _, _ = _cli("leaderboard", str(root), "--out", str(tmp_path / "plain"), "--format", "markdown", "--no-findings")
    assert code == 0 and not (tmp_path / "plain" / "README.md").exists()


def test_report_usage_errors_are_one_line(board, tmp_path):
    root, _ = board
    code, _, err = _cli("report", str(root), "--out", str(tmp_path))
    assert code == 2 and err.startswith("error: --out") and err.count("\n") == 1
    code, _, err = _cli("report", str(tmp_path / "missing"))
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    code, stdout, _ = _cli("report", str(root))
    assert code == 0 and stdout.startswith(MARKER)


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="no published runs in this checkout")
def test_report_reads_the_published_runs_as_they_are():
    code, stdout, err = _cli("report", str(PUBLISHED))
    assert code == 0, err
    for heading in ("How this board was made", "Synchronisation score", "Control success", "Forcing set", "Goodhart-proneness",
                    "Synchronisation curves", "In short"):
        assert f"## {heading}" in stdout


def test_the_report_states_the_sampling_time_and_the_machine(tmp_path):
    from harness.records import read_manifest, write_manifest

    machine = {"cpu": "AMD EPYC 7B13", "cores": 2, "system": "Linux x86_64", "python": "3.11.7", "load_average": [1.4, 1.2, 1.0]}
    for i, model in enumerate(("a", "b")):
        run_dir = write_run(tmp_path, model=model, shift=0.1 * (i + 1), name=model.upper())
        manifest = read_manifest(run_dir)
        manifest.sampling = {"seconds": 60.0 * (i + 1), "model_calls": 10, "invocations": 1, "machine": machine}
        write_manifest(run_dir, manifest)
    code, _, _ = _cli("report", str(tmp_path), "--out", str(tmp_path / "README.md"))
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert code == 0 and "2 of 2 run(s) recorded it): 180 s = 3.0 min in all" in text
    assert "- Machine(s): AMD EPYC 7B13, 2 usable core(s), Linux x86_64; load average (1 min) when each run ended: 1.4." in text
