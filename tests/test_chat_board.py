"""The leaderboard and `mimic compare` over runs in different renderings: the rendering beside each model
(Markdown, JSON, HTML), the note that the renderings differ (tables and prose), unparsed chat answers
kept out of examples and charts, format adherence rows in the per-task tables.

Two small bookworld runs: the scripted completion mimic (``scripted:planted``, the document) and the
scripted chat mimic (``scripted:chat``, a conversation; some answers chatty, some refusals)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import polars as pl
import pytest

from harness.cli import main
from harness.leaderboard.document import build_document
from harness.leaderboard.jsonout import validate
from harness.leaderboard.markdown import labels
from harness.leaderboard.runs import load_runs
from harness.modelspec import ModelSpec
from harness.run import RunConfig, run
from harness.scripted import REFUSAL
from harness.tasks import load_task

RATINGS = {5: 0.3, 4: 0.25, 3: 0.2, 2: 0.15, 1: 0.1}
CHAT_NAME, COMPLETION_NAME = "scripted:chat", "scripted:planted"


def _items(prefix: str) -> list[dict]:
    """Bookworld items (after ``prefix``) with a planted rating distribution."""
    return [{"text": f"{prefix}{rating}\nGenre: {genre}\nReview: A {genre} I rated {rating}. Mara helps a friend.", "p": p / 2}
            for rating, p in RATINGS.items() for genre in ("mystery", "romance")]


def _run(out: Path, spec: ModelSpec) -> Path:
    from harness.plugins import build_registries, get_plugin_manager

    task = dataclasses.replace(load_task("bookworld"), context_sizes=())  # no sync curve: a fast run
    config = RunConfig(model=spec, task=task, out_dir=out, use_cache=False, contexts=6, samples_per_context=5, progress="off",
                       summary_to="off", n_boot=20, estimators=("latent_shift", "control_success", "format_adherence"))
    return run(config, build_registries(get_plugin_manager())).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One run per rendering, under one folder."""
    root = tmp_path_factory.mktemp("runs")
    return {"completion": _run(root, ModelSpec("scripted", "planted", {"distribution": _items(" ")})),
            "chat": _run(root, ModelSpec("scripted", "chat", {"distribution": _items("Rating: "), "chatty": 0.3, "refusals": 0.3}))}


def _cli(*argv: str) -> str:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(list(argv)) == 0, stderr.getvalue()
    return stdout.getvalue()


@pytest.fixture(scope="module")
def board(runs, tmp_path_factory) -> Path:
    """`mimic leaderboard` over both runs, every writer."""
    out = tmp_path_factory.mktemp("board")
    _cli("leaderboard", str(next(iter(runs.values())).parent), "--out", str(out))
    return out


def test_the_runs_record_their_renderings(runs):
    for rendering, run_dir in runs.items():
        assert json.loads((run_dir / "manifest.json").read_text())["plan"]["rendering"] == rendering
    chat = pl.read_parquet(runs["chat"] / "draws.parquet")
    assert (~chat["item_parsed"]).sum() > 0 and chat.filter(~pl.col("item_parsed"))["text"].null_count() > 0


def test_json_carries_the_rendering_of_every_model_and_run(board):
    doc = json.loads((board / "leaderboard.json").read_text())
    validate(doc)
    (section,) = doc["sections"]
    for entries in (section["models"], doc["models"], doc["runs"]):
        assert {m["model_name"]: m["rendering"] for m in entries} == {CHAT_NAME: "chat", COMPLETION_NAME: "completion"}
    assert all(m["rank"] is not None for m in section["models"])  # ranked together, and said so
    (note,) = [n for n in section["notes"] if n.startswith("renderings differ")]
    assert f"{CHAT_NAME} through chat (" in note and f"{COMPLETION_NAME} through completion (" in note


def test_markdown_labels_each_row_with_its_rendering_and_notes_the_difference(board):
    md = (board / "leaderboard.md").read_text()
    ranking = [line for line in md.splitlines() if line.startswith("| ") and "scripted:" in line and "| scripted" in line]
    assert any(f"| {CHAT_NAME} (chat) |" in line for line in ranking)
    assert any(f"| {COMPLETION_NAME} (completion) |" in line for line in ranking)
    assert "- renderings differ in this section:" in md
    header = next(line for line in md.split("### control_success")[1].splitlines() if line.startswith("| Condition"))
    assert f"{CHAT_NAME} (chat)" in header and f"{COMPLETION_NAME} (completion)" in header
    assert "6×5, k=5, chat |" in md  # the provenance plan names a chat rendering


def test_prose_says_the_renderings_differ_and_reports_format_adherence(board):
    prose = (board / "README.md").read_text()
    assert "- Renderings (how each model was shown the task" in prose
    assert f"{CHAT_NAME} (chat) on bookworld" in prose and f"{COMPLETION_NAME} (completion) on bookworld" in prose
    assert "- renderings differ in this section:" in prose
    adherence = prose.split("## Format adherence")[1].split("\n## ")[0]
    line = next(line for line in adherence.splitlines() if line.startswith(f"- {CHAT_NAME} (chat):"))
    assert "`none` " in line and "`prompt:5` " in line and "answers unparsed" in line and "[" in line
    assert COMPLETION_NAME not in adherence  # an item exists by construction: no rows


def test_format_adherence_rows_render_with_their_intervals(board):
    doc = json.loads((board / "leaderboard.json").read_text())
    rows = [e for e in doc["sections"][0]["estimates"] if e["estimator"] == "format_adherence"]
    assert {r["model_name"] for r in rows} == {CHAT_NAME} and {r["condition"] for r in rows} == {"none", "prompt:1", "prompt:5"}
    assert all(r["lower"] <= r["point"] <= r["upper"] <= 1 and r["point"] < 1 for r in rows)
    md = (board / "leaderboard.md").read_text()
    table = md.split("### format_adherence")[1].split("\n\n")[1].splitlines()
    assert table[0] == f"| Condition | Feature | {CHAT_NAME} (chat) |"
    assert len(table) == 5 and all("| item_parsed | " in line and " [" in line for line in table[2:])
    task_page = next(board.glob("task-bookworld-*.html")).read_text()
    assert "<h4>format_adherence</h4>" in task_page and "unparsed</th>" in task_page
    assert "renderings differ in this section" in (board / "index.html").read_text()
    model_page = next(p for p in board.glob("model-scripted-chat-*.html")).read_text()
    assert "<h1>scripted:chat (chat)</h1>" in model_page and "rendering <code>chat</code>" in model_page


def test_unparsed_answers_are_never_examples_nor_charted(board, runs):
    doc = json.loads((board / "leaderboard.json").read_text())
    chat = next(m for m in doc["sections"][0]["models"] if m["model_name"] == CHAT_NAME)
    draws = pl.read_parquet(runs["chat"] / "draws.parquet")
    parsed = set(draws.filter(pl.col("item_parsed"))["text"])
    assert chat["examples"] and all(e["text"] in parsed for e in chat["examples"])
    none = draws.filter(pl.col("pool") == "none")
    chart = next(c for c in doc["sections"][0]["charts"]["latents"] if c["condition"] == "none" and c["latent"] == "genre")
    series = next(s for s in chart["series"] if s["model"] == chat["model"])
    assert series["n"] == none["item_parsed"].sum() < none.height


def test_an_unparsed_answer_with_text_is_still_no_example(runs):
    """The draws contract gives an unparsed answer no text; a draw that says item_parsed false is skipped even with one."""
    data = load_runs([runs["chat"]])
    (run_id,) = data.draws
    frame = data.draws[run_id].sort("pool", "context_id", "sample_index")
    first = frame.filter(pl.col("pool") == "none").row(0, named=True)
    marked = frame.with_columns(
        pl.when((pl.col("pool") == "none") & (pl.col("context_id") == first["context_id"]) & (pl.col("sample_index") == first["sample_index"]))
        .then(pl.lit(False)).otherwise(pl.col("item_parsed")).alias("item_parsed"),
        pl.col("text").fill_null(REFUSAL))
    doc = build_document(dataclasses.replace(data, draws={run_id: marked}))
    examples = doc["sections"][0]["models"][0]["examples"]
    assert examples and REFUSAL not in {e["text"] for e in examples}
    assert first["text"] is None or first["text"] not in {e["text"] for e in examples if e["pool"] == "none"}


def test_a_board_of_completions_alone_shows_no_rendering(runs):
    doc = build_document(load_runs([runs["completion"]]))
    (section,) = doc["sections"]
    assert list(labels(section["models"]).values()) == [COMPLETION_NAME]
    assert not [n for n in section["notes"] if "rendering" in n]
    assert section["models"][0]["rendering"] == "completion"


def test_compare_says_the_renderings_differ(runs):
    text = _cli("compare", str(runs["completion"]), str(runs["chat"]), "--n-boot", "100")
    assert "renderings differ: A completion, B chat" in text
    assert "note: bookworld: the renderings differ (A through completion (the few-shot document), B through chat (" in text
    result = json.loads(_cli("compare", str(runs["completion"]), str(runs["chat"]), "--n-boot", "100", "--json"))
    assert (result["sections"][0]["rendering_a"], result["sections"][0]["rendering_b"]) == ("completion", "chat")
    same = _cli("compare", str(runs["chat"]), str(runs["chat"]), "--n-boot", "100")
    assert "renderings differ" not in same


def test_the_default_suite_runs_the_instruct_model_through_its_chat_template():
    from harness.chat.renderings import forced_rendering
    from harness.modelspec import parse_model_spec
    from harness.suites import load_suite

    specs = [parse_model_spec(m) for m in load_suite("default").models]
    renderings = {spec.model: forced_rendering(spec) for spec in specs}
    assert renderings == {"default": None, "smollm2": renderings["smollm2"]}  # the base model: its capabilities pick completion
    assert renderings["smollm2"] in ("chat", "chat+prefill")
