"""Every hook is specified with a pytest-style docstring and documented for plugin authors."""

import argparse
import ast
import asyncio
import inspect
import re
import types
from pathlib import Path

import polars as pl
import pytest

from harness import hookspecs
from harness.plugins import get_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hook_names():
    pm = get_plugin_manager(load_entrypoints=False)
    return sorted(name for name in dir(pm.hook) if not name.startswith("_"))


@pytest.mark.parametrize("name", hook_names())
def test_hookspec_docstring_is_pytest_style(name):
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec)
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary[0].isupper() and summary.endswith("."), f"{name}: summary must be one imperative sentence"
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name} does not document :param {param}:"


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_for_plugin_authors(name):
    headings = re.findall(r"^### (\w+)$", DOCS.read_text(), flags=re.M)
    assert name in headings, f"docs/plugins.md has no section for {name}"


def hook_section(name):
    """The text of ``### name`` in docs/plugins.md, up to the next heading."""
    match = re.search(rf"^### {name}\n(.*?)(?=^#{{2,3}} |\Z)", DOCS.read_text(), flags=re.M | re.S)
    return match.group(1) if match else ""


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.parametrize("name", hook_names())
def test_hook_has_an_example_in_the_docs(name):
    examples = [code for code in python_blocks(hook_section(name)) if re.search(rf"@hookimpl\ndef {name}\(", code)]
    assert examples, f"docs/plugins.md: section {name} has no ```python example with an @hookimpl def {name}(...)"


def test_docs_examples_import_only_the_public_api():
    import harness

    for code in python_blocks(DOCS.read_text()):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
                assert node.module == "harness", f"docs/plugins.md imports from {node.module}: use `from harness import ...`"
                assert {a.name for a in node.names} <= set(harness.__all__), ast.unparse(node)


def test_docs_list_the_public_api():
    import harness

    text = DOCS.read_text()
    missing = [name for name in harness.__all__ if name != "__version__" and f"`{name}`" not in text]
    assert not missing, f"docs/plugins.md does not list {missing} in its public API table"


def test_docs_examples_run(tmp_path, capsys):
    """Every example registers what it says, and the components it builds work."""
    from harness import (BuildContext, EstimationInputs, GenerationRequest, LeaderboardData, ModelSpec, RunFinished,
                         RunStarted, SampleCompleted)
    from harness.plugins import build_registries, register_plugin

    pm = get_plugin_manager(load_entrypoints=False)
    for i, code in enumerate(python_blocks(DOCS.read_text())):
        module = types.ModuleType(f"docs_example_{i}")
        exec(compile(code, f"docs/plugins.md example {i}", "exec"), module.__dict__)  # noqa: S102 - our own docs
        register_plugin(pm, module, module.__name__)
    registries = build_registries(pm)
    ctx = BuildContext(registries=registries)

    def build(registry, name, options):
        return getattr(registries, registry).get(name).factory(options, ctx)

    shout = registries.mimics.get("shout").factory(ModelSpec("shout", "x"), ctx)
    assert [c.text for c in asyncio.run(shout.generate([GenerationRequest("a\nhello")]))] == ["HELLO"]
    texts = pl.Series(["a b c!", "d!!"])
    assert build("features", "words", {"cap": 2}).extract(texts).to_list() == [2.0, 1.0]
    assert build("features", "exclamations", {}).extract(texts).to_list() == [1.0, 2.0]
    assert len(asyncio.run(build("worlds", "likes-short", {}).draw(["a b", "c"], [1, 2]))) == 2
    draws = pl.DataFrame({"pool": ["none"] * 4 + ["prompt:5"], "text": ["a", "a b c", "a b", "a b c d", "x"]})
    [selection] = build("controls", "shortest-half", {}).select(draws, None)
    assert selection.kept["text"].to_list() == ["a", "a b"] and selection.raw_draws == 4
    [estimate] = build("estimators", "mean-words", {}).estimate(EstimationInputs(None, pl.DataFrame(), draws, [selection]))
    assert estimate.point == 1.5 and estimate.n == 2
    (tmp_path / "lines.txt").write_text("one\n\ntwo\n", encoding="utf-8")
    assert build("reference_sources", "lines", {"path": str(tmp_path / "lines.txt")}).load()["review"].to_list() == ["one", "two"]
    estimates = pl.DataFrame({"estimator": ["e"], "condition": ["c"], "feature": ["f"], "point": [1.0], "lower": [0.0],
                              "upper": [2.0]})
    [csv] = build("leaderboard_writers", "csv", {}).write(LeaderboardData(estimates, []), tmp_path / "board")
    assert csv.read_text().splitlines()[1] == "e,c,f,1.0,0.0,2.0"
    command = registries.commands.get("hello").factory
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["you"])) == 0
    pm.hook.run_started(event=RunStarted("r", tmp_path, "t", "m", 10, 2))
    pm.hook.sample_completed(event=SampleCompleted("r", "t", "none", 0, 1, " ", False))
    pm.hook.run_finished(event=RunFinished("r", tmp_path, "interrupted", 3, 1.0))
    out = capsys.readouterr().out
    assert "hello, you" in out and "10 draws planned" in out and "empty draw" in out and "stopped (interrupted)" in out
