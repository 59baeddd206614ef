"""The event loop the harness runs on: uvloop where it is installed, asyncio's own otherwise.

At 64 concurrent HTTP requests the client's CPU per request decides how far throughput falls
below concurrency / latency, and uvloop (libuv under the asyncio API) cuts the harness's share by
about a third (``benchmarks/throughput.py`` prints the figure). ``MIMIC_EVENT_LOOP=asyncio``
forces the standard loop, e.g. to rule uvloop out while debugging.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from harness.errors import UsageError

T = TypeVar("T")

_CHOICES = ("auto", "uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory for new loops, as ``MIMIC_EVENT_LOOP`` (auto, uvloop, asyncio; default auto) asks."""
    choice = os.environ.get("MIMIC_EVENT_LOOP", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise UsageError(f"MIMIC_EVENT_LOOP={choice!r} is not a loop this harness knows", "set it to auto, uvloop or asyncio")
    if choice == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UsageError("MIMIC_EVENT_LOOP=uvloop but uvloop is not installed", "pip install uvloop, or unset MIMIC_EVENT_LOOP") from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` would use now."""
    return "uvloop" if loop_factory() is not asyncio.new_event_loop else "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the configured kind."""
    return loop_factory()()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop of the configured kind (like ``asyncio.run``)."""
    try:
        factory = loop_factory()
    except UsageError:
        coro.close()  # never started: close it so Python does not warn that it was never awaited
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
