"""Suite files: models x tasks, a suite-wide plan and a design per task, with the command line winning."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from harness.cli import run as run_cli
from harness.errors import TaskError
from harness.suites import load_suite

SUITE = """\
name: two
models: ["scripted:echo"]
plan: {samples_per_context: 4}
tasks:
  - bookworld
  - {task: reviews, plan: {contexts: 6, samples_per_context: 2, context_sizes: []}}
"""


def _args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    return parser.parse_args(["--suite", str(tmp_path / "two.yaml"), "--out", str(tmp_path / "out"), *argv])


def _designs(tmp_path: Path, *argv: str) -> dict[str, tuple]:
    (tmp_path / "two.yaml").write_text(SUITE, encoding="utf-8")
    args = _args(tmp_path, *argv)
    run_cli.apply_suite(args)
    return {config.task: (config.plan.contexts, config.plan.samples_per_context) for config in run_cli.build_configs(args)}


def test_a_task_entry_may_carry_its_own_design(tmp_path):
    (tmp_path / "two.yaml").write_text(SUITE, encoding="utf-8")
    suite = load_suite(str(tmp_path / "two.yaml"))
    assert suite.tasks == ("bookworld", "reviews")
    assert suite.task_plans == {"reviews": {"contexts": 6, "samples_per_context": 2, "context_sizes": []}}
    # the task's own design wins over the suite-wide plan; a task without one gets the suite-wide plan
    assert _designs(tmp_path) == {"bookworld": (None, 4), "reviews": (6, 2)}


def test_the_command_line_wins_over_every_suite_design(tmp_path):
    assert _designs(tmp_path, "--contexts", "3") == {"bookworld": (3, 4), "reviews": (3, 2)}


@pytest.mark.parametrize("tasks, fragment", [
    ("[{task: bookworld, plan: {contexts: -1}}]", "tasks[0].plan"),
    ("[{task: bookworld, plan: {context_sizes: [1, x]}}]", "tasks[0].plan"),
    ("[bookworld, bookworld]", "listed twice"),
    ("[{plan: {contexts: 2}}]", "tasks[0]"),
    ("[]", "non-empty list"),
])
def test_bad_task_entries_are_one_line_errors(tmp_path, tasks, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nmodels: [a]\ntasks: {tasks}\n", encoding="utf-8")
    with pytest.raises(TaskError) as err:
        load_suite(str(path))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_run_may_set_its_own_curve_sizes_and_run_none(tmp_path):
    from harness.cli import main
    from harness.records import read_manifest

    out = tmp_path / "out"
    assert main(["run", "-m", "scripted:echo", "-t", "bookworld", "--contexts", "2", "--samples-per-context", "2",
                 "--context-sizes", "--out", str(out), "--progress", "off", "--n-boot", "200", "--estimator", "control_success"]) == 0
    (run_dir,) = (out / "runs").iterdir()
    manifest = read_manifest(run_dir)
    assert manifest.task["context_sizes"] == [] and manifest.plan["context_sizes"] == [5]  # only the main size
    assert manifest.overrides["context_sizes"] == []
