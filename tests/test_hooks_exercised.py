"""Every hook is exercised: a plugin implementing all of them takes part in a real run."""

import argparse

import pytest

from harness.factories import create_component
from harness.hookspecs import hookimpl  # noqa: F401  (the plugin module uses it)
from harness.modelspec import parse_model_spec
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.protocols import BuildContext
from harness.run import RunConfig, run
from tests.plugins import everything

HERE = __import__("pathlib").Path(__file__).parent


@pytest.fixture
def registries(monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", "builtin-scripted,builtin-controls,builtin-features,builtin-leaderboard")
    pm = get_plugin_manager()
    register_plugin(pm, everything, "everything", "0.0.1")
    return build_registries(pm)


def test_every_hook_is_implemented_by_the_test_plugin():
    pm = get_plugin_manager(load_entrypoints=False)
    specs = {name for name in dir(pm.hook) if not name.startswith("_")}
    implemented = {name for name in specs if callable(getattr(everything, name, None))}
    assert implemented == specs


def test_every_hook_is_called_in_a_run(registries, tmp_path):
    everything.CALLS.clear()
    for attr in ("mimics", "features", "worlds", "controls", "estimators", "reference_sources", "leaderboard_writers", "commands"):
        assert any(e.plugin == "everything" for e in getattr(registries, attr)), attr
    config = RunConfig(model=parse_model_spec("everything-scripted:fixed?text=wow!"), task=HERE / "data" / "everything_task.yaml",
                       out_dir=tmp_path, progress="off", summary_to="off", n_boot=50, use_cache=False,
                       estimators=("everything-count",))
    result = run(config, registries)
    assert result.status == "complete" and result.done == 4
    kinds = [name for name, _ in everything.CALLS]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and kinds.count("sample_completed") == 4
    sample = next(event for name, event in everything.CALLS if name == "sample_completed")
    assert sample.text == "Item:wow!" and sample.run_id == result.run_id
    row = result.estimates.filter(result.estimates["estimator"] == "everything-count")
    assert row["point"].to_list() == [2.0]  # everything-none and reward@1 selections
    writer = create_component(registries.leaderboard_writers, "everything-text", {}, BuildContext(registries))
    from harness.leaderboard.runs import load_runs

    paths = writer.write(load_runs([result.run_dir]), tmp_path)
    assert paths[0].read_text() == result.run_id
    command = registries.commands.get("everything-hello").factory
    assert command.run(argparse.Namespace()) == 0
