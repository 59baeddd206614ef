"""Where a task or suite name is found (a path, then ./tasks, then the built-in files) and `mimic tasks`."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from harness.cli import main
from harness.errors import TaskError
from harness.paths import builtin_tasks_dir
from harness.suites import find_suite
from harness.tasks import load_task, task_files

BUILTIN = ("bookworld", "python-functions", "reviews")


@pytest.fixture
def empty_dir(tmp_path, monkeypatch):
    """An empty working directory (no ./tasks)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def local_copy(folder, name, description, as_name=None):
    """Copy a built-in task into ``folder/tasks`` with another description."""
    (folder / "tasks").mkdir(exist_ok=True)
    data = yaml.safe_load((builtin_tasks_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    data.update(name=as_name or name, description=description)
    target = folder / "tasks" / f"{as_name or name}.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def test_bare_name_outside_any_checkout_finds_the_built_in_task(empty_dir):
    for name in BUILTIN:
        assert load_task(name).source_path == (builtin_tasks_dir() / f"{name}.yaml").resolve()
    assert find_suite("default") == builtin_tasks_dir() / "suites" / "default.yaml"


def test_local_task_and_suite_win_over_built_in_ones(empty_dir):
    local_copy(empty_dir, "bookworld", "local copy")
    assert load_task("bookworld").description == "local copy"
    assert load_task("reviews").source_path == (builtin_tasks_dir() / "reviews.yaml").resolve()
    (empty_dir / "tasks" / "suites").mkdir()
    shutil.copy(builtin_tasks_dir() / "suites" / "default.yaml", empty_dir / "tasks" / "suites" / "default.yaml")
    assert find_suite("default") == empty_dir / "tasks" / "suites" / "default.yaml"


def test_a_path_is_used_as_given(empty_dir):
    elsewhere = empty_dir / "elsewhere"
    elsewhere.mkdir()
    path = local_copy(elsewhere, "bookworld", "from a path", as_name="mine")
    assert load_task(path).description == "from a path"
    assert load_task(str(path)).source_path == path.resolve()
    with pytest.raises(TaskError, match="does not exist"):
        load_task(str(elsewhere / "missing.yaml"))


def test_task_files_lists_local_then_built_in_and_marks_hidden_ones(empty_dir):
    local_copy(empty_dir, "reviews", "local reviews")
    local_copy(empty_dir, "bookworld", "my own task", as_name="mine")
    files = task_files()
    assert [(f.name, f.origin, f.shadowed) for f in files] == [
        ("mine", "local", False), ("reviews", "local", False),
        *[(name, "built-in", name == "reviews") for name in BUILTIN],
    ]


def test_mimic_tasks_lists_name_version_source_description(empty_dir, capsys):
    local_copy(empty_dir, "bookworld", "My local bookworld. More words.")
    (empty_dir / "tasks" / "broken.yaml").write_text("name: [\n", encoding="utf-8")
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "SOURCE", "DESCRIPTION"]
    rows = {(line.split()[0], line.split()[2]): line for line in lines[1:]}
    assert "My local bookworld." in rows[("bookworld", "local")] and "More words" not in rows[("bookworld", "local")]
    assert "tasks/bookworld.yaml" in rows[("bookworld", "local")]
    assert "hidden by local" in rows[("bookworld", "built-in")]
    assert "invalid: tasks/broken.yaml: YAML syntax error" in rows[("broken", "local")]
    assert "Yelp reviews with star ratings." in rows[("reviews", "built-in")]
    assert all(len(line.split()) > 3 for line in lines[1:])  # every row has a version and a description


def test_mimic_tasks_json(empty_dir, capsys):
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list(BUILTIN)
    assert {row["origin"] for row in rows} == {"built-in"} and all(row["version"] == load_task(row["name"]).version for row in rows)
    assert all(row["description"] and row["error"] is None for row in rows)
