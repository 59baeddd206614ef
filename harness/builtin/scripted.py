"""Plugin ``builtin-scripted``: registers the scripted mimic of :mod:`harness.scripted`."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.scripted import create_scripted


@hookimpl
def register_mimics(register):
    """Register the scripted backend."""
    register("scripted", create_scripted, "deterministic outputs for tests: echo, fixed, cycle, planted, callable")
