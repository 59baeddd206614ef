"""Suites: a named list of models and tasks run together and merged into one leaderboard.

A suite file (``tasks/suites/<name>.yaml``)::

    name: default
    description: what it is for
    models: [gguf:default, gguf:smollm2]     # model specs, as on the command line
    tasks:                                   # task names or paths, or {task:, plan:} with that task's design
      - bookworld
      - {task: python-functions, plan: {contexts: 12, samples_per_context: 16}}
    plan: {samples_per_context: 8}           # optional overrides for every run (context_sizes: [] runs no curve)

A design on the command line wins over a task's suite plan, which wins over the suite-wide plan,
which wins over the task file's own ``plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import TaskError
from harness.paths import builtin_tasks_dir, local_tasks_dir

PLAN_KEYS = {"seed", "samples", "contexts", "samples_per_context", "n_exemplars", "context_sizes"}


def suite_folders() -> tuple[Path, Path]:
    """Where bare suite names are looked up, in order: ``./tasks/suites``, then the built-in suites."""
    return local_tasks_dir() / "suites", builtin_tasks_dir() / "suites"


@dataclass(frozen=True)
class Suite:
    """A validated suite."""

    name: str
    description: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    plan: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    task_plans: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> its own design in this suite


def find_suite(name_or_path: str) -> Path:
    """Resolve a suite path, or a name: ``./tasks/suites/NAME.yaml``, then the built-in suite."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if path.is_file():
            return path
        raise TaskError(f"suite file {path} does not exist", "pass an existing YAML file or a suite name")
    for folder in suite_folders():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for folder in suite_folders() if folder.is_dir() for p in folder.glob("*.yaml")})
    raise TaskError(f"unknown suite {name_or_path!r} (known: {', '.join(known) or 'none'})", "pass a known suite name or a YAML path")


def _string_list(data: dict, key: str, path: Path) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise TaskError(f"{path}: field `{key}` must be a non-empty list of strings", f"write {key}: [a, b]")
    return tuple(value)


def load_suite(name_or_path: str) -> Suite:
    """Load and validate a suite file."""
    path = find_suite(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaskError(f"{path}: not valid YAML: {first}", "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a suite must be a mapping", "write name:, models:, tasks:")
    unknown = set(data) - {"name", "description", "models", "tasks", "plan"}
    if unknown:
        raise TaskError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}", "allowed: name, description, models, tasks, plan")
    tasks, task_plans = _tasks(data.get("tasks"), path)
    return Suite(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        models=_string_list(data, "models", path),
        tasks=tasks,
        plan=_plan(data.get("plan"), "plan", path),
        path=path,
        task_plans=task_plans,
    )


def _plan(value: Any, where: str, path: Path) -> dict[str, int]:
    plan = value or {}
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
    if not isinstance(plan, dict) or set(plan) - PLAN_KEYS or not all(
            (isinstance(v, list) and all(whole(k) for k in v)) if key == "context_sizes" else whole(v) for key, v in plan.items()):
        raise TaskError(f"{path}: field `{where}` must map {', '.join(sorted(PLAN_KEYS))} to whole numbers "
                        "(context_sizes: a list of them)", "fix the plan overrides")
    return dict(plan)


def _tasks(value: Any, path: Path) -> tuple[tuple[str, ...], dict[str, dict[str, int]]]:
    """The suite's task names and the designs given to some of them (``{task: NAME, plan: {...}}``)."""
    if not isinstance(value, list) or not value:
        raise TaskError(f"{path}: field `tasks` must be a non-empty list", "write tasks: [a, b] or - {task: a, plan: {contexts: 8}}")
    names, plans = [], {}
    for i, entry in enumerate(value):
        if isinstance(entry, dict):
            if set(entry) - {"task", "plan"} or not isinstance(entry.get("task"), str) or not entry["task"]:
                raise TaskError(f"{path}: tasks[{i}] must be a task name or {{task: NAME, plan: {{...}}}}", "fix that entry")
            names.append(entry["task"])
            plans[entry["task"]] = _plan(entry.get("plan"), f"tasks[{i}].plan", path)
        elif isinstance(entry, str) and entry:
            names.append(entry)
        else:
            raise TaskError(f"{path}: tasks[{i}] must be a task name or {{task: NAME, plan: {{...}}}}", "fix that entry")
    if len(set(names)) != len(names):
        raise TaskError(f"{path}: a task is listed twice in `tasks`", "list each task once")
    return tuple(names), plans
