"""Build components from registries with clear errors (the one place factories are called)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.chat.renderings import backend_spec, forced_rendering
from harness.errors import HarnessError, ModelSpecError, PluginError
from harness.mimic import Mimic
from harness.modelspec import ModelSpec
from harness.protocols import BuildContext
from harness.registry import Registries, Registry


def create_mimic(spec: ModelSpec, registries: Registries, ctx: BuildContext | None = None) -> Mimic:
    """Instantiate the backend named by ``spec.backend``."""
    if spec.backend not in registries.mimics:
        known = ", ".join(registries.mimics.names()) or "none installed"
        raise ModelSpecError(
            f"unknown mimic backend {spec.backend!r} in model spec (known: {known})",
            "use one of the known backends, or install the plugin that provides it",
        )
    entry = registries.mimics.get(spec.backend)
    ctx = ctx or BuildContext(registries=registries)
    forced_rendering(spec)  # a bad value fails before the model loads
    try:
        mimic = entry.factory(backend_spec(spec), ctx)  # the rendering is the harness's option, not the backend's
    except HarnessError:
        raise
    except Exception as exc:
        raise PluginError(
            f"backend {spec.backend} (plugin {entry.plugin}) could not load model {spec.model!r}: {type(exc).__name__}: {exc}",
            "check the model name and options",
        ) from exc
    return mimic


def create_component(registry: Registry, name: str, options: Mapping[str, Any], ctx: BuildContext, where: str = "") -> Any:
    """Instantiate a registered feature/world/control/estimator/source/writer by name."""
    entry = registry.get(name) if name in registry else None
    if entry is None:
        known = ", ".join(registry.names()) or "none installed"
        prefix = f"{where}: " if where else ""
        raise PluginError(f"{prefix}unknown {registry.kind} {name!r} (known: {known})", f"use one of the known {registry.kind}s")
    try:
        return entry.factory(dict(options), ctx)
    except HarnessError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        prefix = f"{where}: " if where else ""
        raise PluginError(f"{prefix}bad options for {registry.kind} {name!r}: {exc}", "check the options against `mimic plugins --components`") from exc
