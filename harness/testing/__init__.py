"""Test kit for mimic-harness and its plugins.

- :class:`FakeOpenAIServer`: a loopback OpenAI-compatible server with injectable faults.
- :func:`start_fake_server_process`: the same server in a child process (for benchmarks).
- :func:`expected_completion`: the text the fake server returns for a (prompt, seed, model).
- ``harness.testing.pytest_plugin``: fixtures (auto-loaded by pytest once mimic-harness is installed).

Names are imported lazily: pytest loads this package at start-up, and aiohttp is slow to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FakeOpenAIServer": "harness.testing.fake_server",
    "FakeServerSettings": "harness.testing.fake_server",
    "FakeServerProcess": "harness.testing.fake_process",
    "RequestRecord": "harness.testing.fake_server",
    "start_fake_server_process": "harness.testing.fake_process",
    "FAULTS": "harness.testing.fake_payloads",
    "expected_completion": "harness.testing.fake_payloads",
    "prompt_hash": "harness.testing.fake_payloads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
