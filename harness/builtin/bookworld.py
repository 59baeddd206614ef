"""Plugin ``builtin-bookworld``: registers the bookworld source and readers of :mod:`harness.worlds.bookworld`."""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.worlds.bookworld import bookworld_source, readers_world


@hookimpl
def register_reference_sources(register):
    """Register the ``bookworld`` reference source."""
    register("bookworld", bookworld_source, "synthetic book reviews with exact ground truth (n, seed)")


@hookimpl
def register_worlds(register):
    """Register the ``bookworld-readers`` world."""
    register("bookworld-readers", readers_world, "simulated readers with exact rho; flattery forces success")
