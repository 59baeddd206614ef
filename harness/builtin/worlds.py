"""Plugin ``builtin-worlds``: registers the ``python-exec`` and ``judge`` worlds of :mod:`harness.worlds`."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.worlds.judge import create_judge
from harness.worlds.python_exec import create_python_exec


@hookimpl
def register_worlds(register):
    """Register the python-exec and judge worlds."""
    register("python-exec", create_python_exec, "R = the item's first function runs without raising on a random input (sandboxed)")
    register("judge", create_judge, "R = a judge model sampled at temperature 1 answers yes to a question about the item")
