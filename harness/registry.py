"""Typed registries filled by the ``register_*`` hooks, with plugin attribution."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from harness.errors import PluginError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered factory and the plugin (name, version) that registered it."""

    name: str
    factory: T
    plugin: str
    plugin_version: str
    description: str = ""

    def provenance(self) -> dict[str, str]:
        """Plugin name and version, for manifests."""
        return {"name": self.name, "plugin": self.plugin, "version": self.plugin_version}


@dataclass
class Registry(Generic[T]):
    """Name -> factory for one kind of component. Names are unique across plugins."""

    kind: str
    entries: dict[str, Entry[T]] = field(default_factory=dict)

    def add(self, name: str, factory: T, plugin: str, plugin_version: str, description: str = "") -> None:
        """Add an entry; a name registered twice is an error naming both plugins."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin} registered a {self.kind} with an empty or non-string name", "pass a name")
        if self.kind != "command" and not callable(factory):
            raise PluginError(f"plugin {plugin} registered {self.kind} {name!r} with a factory that is not callable", "pass a callable")
        if name in self.entries:
            other = self.entries[name].plugin
            raise PluginError(
                f"{self.kind} {name!r} is registered by both plugin {other} and plugin {plugin}",
                f"uninstall one, or restrict plugins with MIMIC_PLUGINS",
            )
        self.entries[name] = Entry(name, factory, plugin, plugin_version, description)

    def get(self, name: str) -> Entry[T]:
        """Look up an entry; an unknown name lists the known ones."""
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none installed"
            raise PluginError(f"unknown {self.kind} {name!r} (known: {known})", f"use one of the known {self.kind}s or install a plugin that adds it") from None

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self.entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self.entries)


Factory = Callable[..., Any]


@dataclass
class Registries:
    """All registries, filled once from a plugin manager."""

    mimics: Registry[Factory] = field(default_factory=lambda: Registry("mimic backend"))
    features: Registry[Factory] = field(default_factory=lambda: Registry("feature"))
    worlds: Registry[Factory] = field(default_factory=lambda: Registry("world"))
    controls: Registry[Factory] = field(default_factory=lambda: Registry("control"))
    estimators: Registry[Factory] = field(default_factory=lambda: Registry("estimator"))
    reference_sources: Registry[Factory] = field(default_factory=lambda: Registry("reference source"))
    leaderboard_writers: Registry[Factory] = field(default_factory=lambda: Registry("leaderboard writer"))
    commands: Registry[Any] = field(default_factory=lambda: Registry("command"))
    plugin_manager: Any = None

    HOOK_TO_REGISTRY = {
        "register_mimics": "mimics",
        "register_features": "features",
        "register_worlds": "worlds",
        "register_controls": "controls",
        "register_estimators": "estimators",
        "register_reference_sources": "reference_sources",
        "register_leaderboard_writers": "leaderboard_writers",
    }
