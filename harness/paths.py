"""Where files are: paths as the user sees them, and the task files that ship with the package."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def display_path(path: Path) -> str:
    """A path as the user will recognise it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def builtin_tasks_dir() -> Path:
    """The built-in task files (``suites/`` inside holds the built-in suites).

    An installed wheel has them in ``harness/task_files`` (pyproject.toml maps the repository's
    ``tasks/`` there); a source checkout, editable installs included, reads ``tasks/`` itself.
    """
    shipped = _PACKAGE / "task_files"
    return shipped if shipped.is_dir() else _PACKAGE.parent / "tasks"


def local_tasks_dir() -> Path:
    """``./tasks`` under the working directory: task files there win over built-in ones of the same name."""
    return Path.cwd() / "tasks"
