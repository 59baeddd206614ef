"""Reference sources and load_reference: formats, paths, hashing, one-line DataErrors, hf offline, stdlib."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

import harness.builtin.bookworld
import harness.builtin.features
import harness.builtin.sources
from harness.errors import DataError, TaskError
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.protocols import BuildContext
from harness.reference import ReferenceTable, content_hash, load_reference
from harness.sources import stdlib_source
from harness.taskspec import ComponentRef
from harness.tasks import load_task

ROWS = [{"stars": 5, "body": "A wonderful read; it helps.", "lang": "en"},
        {"stars": 1, "body": "Dull.", "lang": "en"},
        {"stars": 3, "body": "Fine, I guess.", "lang": "fr"}]


@pytest.fixture(scope="module")
def registries():
    pm = get_plugin_manager(load_entrypoints=False)
    for name, module in (("builtin-features", harness.builtin.features), ("builtin-sources", harness.builtin.sources),
                         ("builtin-bookworld", harness.builtin.bookworld)):
        register_plugin(pm, module, name)
    return build_registries(pm)


@pytest.fixture()
def ctx(registries):
    return BuildContext(registries=registries)


def task_file(folder: Path, reference: dict, exemplar: str = "Rating: {{ stars }}\nReview: {{ body }}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "ref-test", "reference": reference,
        "render": {"exemplar": exemplar, "open_prefix": "Rating:", "prompt_prefix": "Rating: {{ value }}\n"},
        "features": {"rating": {"type": "header_field", "field": "Rating", "numeric": True},
                     "helping": {"type": "regex_count", "pattern": r"\bhelps\b", "binary": True}},
        "proxy": {"feature": "rating", "values": [5]}, "latents": ["helping"], "controls": ["none", "prompt", "filter"],
    }
    path = folder / "task.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_rows(path: Path, kind: str, rows=ROWS) -> None:
    frame = pl.DataFrame(rows)
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "jsonl": frame.write_ndjson}[kind](path)


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_file_sources_load_render_and_featurize(tmp_path, registries, ctx, monkeypatch, kind):
    (tmp_path / "tasks" / "data").mkdir(parents=True)
    write_rows(tmp_path / "tasks" / "data" / f"rows.{kind}", kind)
    path = task_file(tmp_path / "tasks", {"type": kind, "path": f"data/rows.{kind}"})
    monkeypatch.chdir(tmp_path / "tasks" / "data")  # relative paths start at the task file, not the cwd
    ref = load_reference(load_task(path), registries, ctx)
    assert isinstance(ref, ReferenceTable) and len(ref.hash) == 16
    frame = ref.frame
    assert frame.columns == ["stars", "body", "lang", "ref_id", "text", "feat_rating", "feat_helping"]
    assert frame["ref_id"].dtype == pl.Int64 and frame["ref_id"].to_list() == [0, 1, 2]
    assert frame["text"][1] == "Rating: 1\nReview: Dull."
    assert frame["feat_rating"].to_list() == [5.0, 1.0, 3.0] and frame["feat_helping"].to_list() == [1.0, 0.0, 0.0]


def test_hash_is_the_same_across_formats_and_changes_with_content(tmp_path, registries, ctx):
    hashes = {}
    for kind in ("csv", "parquet", "jsonl"):
        write_rows(tmp_path / f"rows.{kind}", kind)
        hashes[kind] = load_reference(load_task(task_file(tmp_path / kind, {"type": kind, "path": str(tmp_path / f"rows.{kind}")})),
                                      registries, ctx).hash
    assert len(set(hashes.values())) == 1
    assert hashes["csv"] == content_hash(pl.DataFrame(ROWS))
    changed = [dict(r) for r in ROWS]
    changed[2]["body"] = "Fine, I guess!"
    assert content_hash(pl.DataFrame(changed)) != hashes["csv"]


def test_limit_filter_rename(tmp_path, registries, ctx):
    write_rows(tmp_path / "rows.jsonl", "jsonl")
    reference = {"type": "jsonl", "path": "rows.jsonl", "filter": {"lang": "en", "stars": [1, 5]}, "limit": 1,
                 "rename": {"body": "review"}}
    ref = load_reference(load_task(task_file(tmp_path, reference, "Rating: {{ stars }}\nReview: {{ review }}")), registries, ctx)
    assert ref.frame["review"].to_list() == ["A wonderful read; it helps."] and "body" not in ref.frame.columns
    assert ref.hash == content_hash(pl.DataFrame(ROWS[:1]).rename({"body": "review"}))


def _error(tmp_path, registries, ctx, reference, exemplar=None, exc=DataError) -> str:
    args = (tmp_path, reference) if exemplar is None else (tmp_path, reference, exemplar)
    with pytest.raises(exc) as err:
        load_reference(load_task(task_file(*args)), registries, ctx)
    line = err.value.one_line()
    assert "\n" not in line and "task.yaml" in line and err.value.hint
    return line


def test_data_errors_are_one_line(tmp_path, registries, ctx):
    (tmp_path / "latin1.csv").write_bytes("stars,body\n5,caf\xe9\n".encode("latin-1"))
    (tmp_path / "header.csv").write_text("stars,body\n", encoding="utf-8")
    (tmp_path / "broken.jsonl").write_text('{"stars": 5, "body": "ok"}\n{"stars": 1, "body": \n', encoding="utf-8")
    (tmp_path / "list.jsonl").write_text('[1, 2]\n', encoding="utf-8")
    (tmp_path / "fake.parquet").write_text("not parquet", encoding="utf-8")
    (tmp_path / "nulls.jsonl").write_text('{"stars": 5, "body": "ok"}\n{"stars": 2, "body": null}\n', encoding="utf-8")
    (tmp_path / "clash.jsonl").write_text('{"stars": 5, "body": "ok", "text": "x"}\n', encoding="utf-8")
    write_rows(tmp_path / "rows.csv", "csv")
    cases = [
        ({"type": "csv", "path": "missing.csv"}, ["field `reference`", "missing.csv does not exist"]),
        ({"type": "csv", "path": "header.csv"}, ["has no rows"]),
        ({"type": "csv", "path": "latin1.csv"}, ["line 2 has bytes that are not UTF-8"]),
        ({"type": "jsonl", "path": "broken.jsonl"}, ["line 2 is not valid JSON"]),
        ({"type": "jsonl", "path": "list.jsonl"}, ["line 1"]),
        ({"type": "parquet", "path": "fake.parquet"}, ["not a readable Parquet file"]),
        ({"type": "jsonl", "path": "nulls.jsonl"}, ["row 1 has a null in column 'body'"]),
        ({"type": "jsonl", "path": "clash.jsonl"}, ["column 'text' clashes", "rename"]),
        ({"type": "csv", "path": "rows.csv", "filter": {"lang": "de"}}, ["no rows after `filter`"]),
        ({"type": "csv", "path": "rows.csv", "filter": {"country": "de"}}, ["`filter` names column 'country'"]),
        ({"type": "csv", "path": "rows.csv", "rename": {"bdy": "review"}}, ["`rename` names column 'bdy'"]),
    ]
    for reference, fragments in cases:
        line = _error(tmp_path, registries, ctx, reference)
        for fragment in fragments:
            assert fragment in line, (reference, line)


def test_option_and_template_mistakes_are_task_errors(tmp_path, registries, ctx):
    write_rows(tmp_path / "rows.csv", "csv")
    line = _error(tmp_path, registries, ctx, {"type": "csv", "path": "rows.csv", "limit": 0}, exc=TaskError)
    assert "field `reference`" in line and "`limit` must be a positive integer" in line
    line = _error(tmp_path, registries, ctx, {"type": "csv", "path": "rows.csv", "sep": ";"}, exc=TaskError)
    assert "unknown option(s) sep" in line
    line = _error(tmp_path, registries, ctx, {"type": "csv", "path": "rows.csv"}, "{{ stars }} {{ title }}", exc=TaskError)
    assert "field `render.exemplar` uses column 'title'" in line and "columns: stars, body, lang" in line
    line = _error(tmp_path, registries, ctx, {"type": "csv", "path": "rows.csv"}, "{{ stars + body }}")
    assert "fails on reference row 0" in line


def test_hf_source_reads_a_local_json_file(tmp_path, registries, ctx):
    pytest.importorskip("datasets")
    write_rows(tmp_path / "rows.jsonl", "jsonl")
    reference = {"type": "hf", "path": "json", "data_files": "rows.jsonl", "split": "train",
                 "cache_dir": str(tmp_path / "hf-cache"), "filter": {"lang": "en"}}
    ref = load_reference(load_task(task_file(tmp_path, reference)), registries, ctx)
    assert ref.frame["stars"].to_list() == [5, 1] and ref.hash == content_hash(pl.DataFrame(ROWS[:2]))
    line = _error(tmp_path, registries, ctx, {"type": "hf", "path": "json", "data_files": "nope.jsonl",
                                              "cache_dir": str(tmp_path / "hf-cache")})
    assert "hf dataset json could not be loaded" in line


def test_reviews_task_runs_offline_on_a_local_file(tmp_path, registries, ctx):
    """tasks/reviews.yaml with its hub source swapped for a local file of the same schema (label 0-4, text)."""
    pytest.importorskip("datasets")
    rows = [{"label": 4, "text": "Wonderful staff who helped us carry our bags. Great!"},
            {"label": 0, "text": "Awful. Cold food and rude, terrible service."},
            {"label": 2, "text": "It was okay."}]
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    task = load_task("reviews")
    options = {**task.reference.options, "path": "json", "data_files": str(tmp_path / "reviews.jsonl"), "split": "train",
               "cache_dir": str(tmp_path / "hf-cache")}
    task = dataclasses.replace(task, reference=ComponentRef("hf", options))
    frame = load_reference(task, registries, ctx).frame
    assert frame["feat_rating"].to_list() == [5.0, 1.0, 3.0]
    assert frame["feat_helping"].to_list() == [1.0, 0.0, 0.0]
    sentiment = frame["feat_sentiment"].to_list()
    assert sentiment[0] > 0.3 and sentiment[1] < -0.3
    assert frame["text"][2] == "Rating: 3\nReview: It was okay."


def test_python_stdlib_sample_is_deterministic_and_valid():
    a = stdlib_source({"n": 12, "seed": 3, "max_lines": 12}).load()
    assert a.equals(stdlib_source({"n": 12, "seed": 3, "max_lines": 12}).load())
    b = stdlib_source({"n": 12, "seed": 4, "max_lines": 12}).load()
    assert not a.equals(b)
    assert a.columns == ["module", "name", "lineno", "source", "n_lines", "has_docstring"] and a.height == 12
    assert a.select(pl.struct("module", "name").n_unique()).item() == 12
    for row in a.iter_rows(named=True):
        tree = ast.parse(row["source"])
        node = tree.body[0]
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == row["name"]
        assert 3 <= row["n_lines"] <= 12 and row["n_lines"] == len(row["source"].splitlines())
        assert row["has_docstring"] == (ast.get_docstring(node) is not None)
        assert not row["module"].startswith(("test.", "encodings"))
    only_json = stdlib_source({"n": 3, "seed": 0, "modules": ["json"]}).load()
    assert all(m == "json" or m.startswith("json.") for m in only_json["module"])
    with pytest.raises(DataError, match="python-stdlib: only"):
        stdlib_source({"n": 500, "modules": ["json"]}).load()
