"""The event loop choice: uvloop where installed, asyncio on request, a one-line error for a typo."""

import asyncio

import pytest

from harness import eventloop
from harness.cli import main
from harness.errors import UsageError
from harness.modelspec import ModelSpec
from tests.helpers import books_reference_jsonl, books_task_yaml


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_uses_uvloop_when_installed(monkeypatch):
    pytest.importorskip("uvloop")
    monkeypatch.delenv("MIMIC_EVENT_LOOP", raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_asyncio_can_be_forced(monkeypatch):
    monkeypatch.setenv("MIMIC_EVENT_LOOP", "asyncio")
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_unknown_loop_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("MIMIC_EVENT_LOOP", "trio")
    with pytest.raises(UsageError, match="MIMIC_EVENT_LOOP"):
        eventloop.run(_loop_module())


def test_cli_reports_unknown_loop_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("MIMIC_EVENT_LOOP", "trio")
    code = main(["sample", "scripted:fixed?text=hi", "Prompt:", "-n", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "MIMIC_EVENT_LOOP" in err and "Traceback" not in err


def test_a_run_on_each_loop_gives_the_same_samples(monkeypatch, tmp_path):
    """The loop changes scheduling, never results: the sample tables are equal."""
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl())
    task = tmp_path / "books.yaml"
    task.write_text(books_task_yaml("loop-books", 4, 3))
    model = ModelSpec("scripted", "planted", {"distribution": [{"text": " good", "p": 0.5}, {"text": " slow and dull", "p": 0.5}]})
    from harness.plugins import build_registries
    from harness.run import RunConfig, run
    from harness.store import RunStore

    texts = {}
    for name in ("asyncio", "uvloop"):
        if name == "uvloop":
            pytest.importorskip("uvloop")
        monkeypatch.setenv("MIMIC_EVENT_LOOP", name)
        config = RunConfig(model=model, task=task, out_dir=tmp_path / name,
                           cache_dir=tmp_path / f"cache-{name}", concurrency=8, progress="off", summary_to="off", estimators=())
        result = run(config, build_registries())
        assert result.status == "complete"
        texts[name] = RunStore.open(result.run_dir).frame().sort("pool", "n_exemplars", "context_id", "sample_index")["text"].to_list()
    assert len(set(texts["asyncio"])) > 1  # seeded draws differ, so equal tables mean equal draws
    assert texts["asyncio"] == texts["uvloop"]
