"""Worlds: building a task's world and drawing R (``draws``), and the worlds the built-in plugins
register: ``python_exec``, ``judge`` and ``bookworld`` (world, source and exact truth).

Also the option check their factories share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.errors import TaskError


def check_options(options: Mapping[str, Any], known: set[str], world: str) -> dict[str, Any]:
    """The options as a dict; an option outside ``known`` is a TaskError naming the world."""
    unknown = sorted(set(options) - known)
    if unknown:
        raise TaskError(f"world {world}: unknown option(s) {', '.join(unknown)}", f"use only {', '.join(sorted(known))}")
    return dict(options)
