"""`mimic tasks`: list the tasks ``--task NAME`` can find: local ones (``./tasks``), then built-in ones."""

from __future__ import annotations

import argparse
import json
import re

from harness.errors import TaskError
from harness.paths import display_path
from harness.protocols import Command
from harness.tasks import TaskFile, load_task, task_files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic tasks`."""
    parser.add_argument("--json", action="store_true", help="print JSON (with each file's path and full description)")


def first_sentence(text: str) -> str:
    """The description's first sentence, on one line."""
    line = " ".join(text.split())
    return re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0]


def task_row(file: TaskFile) -> dict:
    """Name, version, origin and description of one task file; a file that does not load says why."""
    try:
        spec = load_task(file.path)
        version, description, problem = spec.version, spec.description, None
    except TaskError as exc:
        version, description, problem = None, "", exc.one_line()
    return {"name": file.name, "version": version, "origin": file.origin, "shadowed": file.shadowed,
            "path": display_path(file.path), "description": description, "error": problem}


def source_label(row: dict) -> str:
    """Where a task comes from, as the listing shows it."""
    if row["origin"] == "local":
        return f"local {row['path']}"
    return "built-in (hidden by local)" if row["shadowed"] else "built-in"


def run(args: argparse.Namespace) -> int:
    """List the tasks."""
    rows = [task_row(file) for file in task_files()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no tasks found: write one as ./tasks/NAME.yaml")
        return 0
    sources = [source_label(row) for row in rows]
    name_width = max(len("NAME"), *(len(row["name"]) for row in rows))
    source_width = max(len("SOURCE"), *(len(source) for source in sources))
    print(f"{'NAME':<{name_width}}  VERSION  {'SOURCE':<{source_width}}  DESCRIPTION")
    for row, source in zip(rows, sources, strict=True):
        version = "?" if row["version"] is None else str(row["version"])
        about = f"invalid: {row['error']}" if row["error"] else first_sentence(row["description"])
        print(f"{row['name']:<{name_width}}  {version:<7}  {source:<{source_width}}  {about}")
    return 0


COMMAND = Command("tasks", "List the tasks --task NAME finds: ./tasks/NAME.yaml first, then the built-in ones.",
                  add_arguments, run)
