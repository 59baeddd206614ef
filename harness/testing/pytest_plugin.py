"""pytest fixtures for testing mimic-harness plugins (loaded automatically via the ``pytest11`` entry point).

Fixtures, each fresh per test:

``plugin_manager``
    A new ``harness.plugins.get_plugin_manager()`` with every installed plugin loaded
    (``MIMIC_PLUGINS`` is honoured).
``registries``
    ``build_registries(plugin_manager)``: what the CLI would see.
``register_plugin``
    ``register_plugin(obj, name=None) -> Registries``. ``obj`` is a module, class or object with
    ``@harness.hookimpl`` functions. It is added to this test's ``plugin_manager`` and fresh registries
    including it (and any plugin registered earlier in the same test) are returned::

        def test_my_feature(register_plugin):
            registries = register_plugin(my_plugin_module)
            assert "my-feature" in registries.features

``scripted_mimic``
    A factory for deterministic mimics from ``harness.scripted``: ``scripted_mimic(outputs=[...])``
    (output i is ``outputs[sample_index % len]``), ``scripted_mimic(distribution={"a": 0.7, "b": 0.3})``
    (sampled with each request's seed), ``scripted_mimic(fn=lambda request: "text")`` or
    ``scripted_mimic(text="fixed")``. Exactly one keyword.
``fake_openai_server``
    A started :class:`harness.testing.FakeOpenAIServer` (``.base_url`` ends in ``/v1``), stopped after
    the test. Change it while it runs with ``fake_openai_server.configure(latency_ms=..., api_key=...,
    faults={"rate_limit": 0.5}, ...)``; read its request log with ``.records()``, ``.count(status=429)``
    and ``.retry_after_violations()``. Settings at start-up can be given by indirect parametrisation::

        @pytest.mark.parametrize("fake_openai_server", [{"api_key": "k"}], indirect=True)
        def test_auth(fake_openai_server): ...
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def plugin_manager():
    """A fresh plugin manager with the installed plugins."""
    from harness.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture
def registries(plugin_manager):
    """Registries built from this test's plugin manager."""
    from harness.plugins import build_registries

    return build_registries(plugin_manager)


@pytest.fixture
def register_plugin(plugin_manager):
    """Return ``register(obj, name=None) -> Registries`` adding a plugin for this test only."""
    from harness.errors import UsageError
    from harness.plugins import build_registries
    from harness.plugins import register_plugin as _register

    counter = iter(range(1_000_000))

    def register(obj: Any, name: str | None = None):
        plugin_name = name or getattr(obj, "__name__", None) or f"test-plugin-{next(counter)}"
        existing = plugin_manager.get_plugin(plugin_name)
        if existing is None:
            _register(plugin_manager, obj, plugin_name, "test")
        elif existing is not obj:
            raise UsageError(f"a different plugin is already registered as {plugin_name!r}", "pass another name=")
        return build_registries(plugin_manager)

    return register


@pytest.fixture
def scripted_mimic():
    """Return a factory of scripted mimics: ``outputs=``, ``distribution=``, ``fn=`` or ``text=``."""
    from harness.scripted import create_scripted
    from harness.errors import UsageError
    from harness.modelspec import ModelSpec

    modes = {"outputs": "cycle", "distribution": "planted", "fn": "fn", "text": "fixed"}

    def make(**kwargs: Any):
        given = [k for k in kwargs if k in modes]
        unknown = sorted(set(kwargs) - set(modes))
        if unknown or len(given) != 1:
            raise UsageError(
                f"scripted_mimic takes exactly one of outputs=, distribution=, fn=, text= (got {sorted(kwargs)})",
                "pass one keyword, e.g. scripted_mimic(outputs=['a', 'b'])",
            )
        key = given[0]
        return create_scripted(ModelSpec("scripted", modes[key], {key: kwargs[key]}))

    return make


@pytest.fixture
def fake_openai_server(request):
    """A started FakeOpenAIServer on 127.0.0.1, stopped after the test."""
    from harness.testing.fake_server import FakeOpenAIServer

    options = getattr(request, "param", None) or {}
    with FakeOpenAIServer(**options) as server:
        yield server
