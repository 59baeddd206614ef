"""Plugin manager factory. No module-level manager: call :func:`get_plugin_manager`.

Plugins are modules exposed under the ``mimic_harness`` entry-point group (the built-ins use the
same group). ``MIMIC_PLUGINS=name,name`` restricts which entry points load.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from typing import Any

import pluggy

from harness import hookspecs
from harness.errors import PluginError
from harness.protocols import Command
from harness.registry import Registries

ENTRY_POINT_GROUP = "mimic_harness"
PROJECT_NAME = "mimic_harness"


def _allowed_plugins() -> set[str] | None:
    raw = os.environ.get("MIMIC_PLUGINS")
    if raw is None or not raw.strip():
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Return a fresh plugin manager with the hookspecs added and installed plugins loaded.

    A plugin that fails to import raises :class:`PluginError` naming it; a plugin implementing
    a hook that does not exist (a misspelling) fails ``check_pending``.
    """
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.plugin_versions = {}  # plugin name -> distribution version
    if load_entrypoints:
        allowed = _allowed_plugins()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not crash with a traceback
                raise PluginError(
                    f"plugin {ep.name} ({ep.value}) failed to import: {type(exc).__name__}: {exc}",
                    f"fix or uninstall it, or leave it out with MIMIC_PLUGINS",
                ) from exc
            register_plugin(pm, module, ep.name, ep.dist.version if ep.dist else "unknown")
    pm.check_pending()
    return pm


def register_plugin(pm: pluggy.PluginManager, module: Any, name: str, version: str = "unknown") -> None:
    """Register one plugin object under ``name`` and remember its version."""
    try:
        pm.register(module, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        raise PluginError(f"plugin {name} is invalid: {exc}", "check its hook names against `mimic plugins --hooks`") from exc
    if not hasattr(pm, "plugin_versions"):
        pm.plugin_versions = {}
    pm.plugin_versions[name] = version


def plugin_version(pm: pluggy.PluginManager, name: str) -> str:
    """The distribution version recorded for a plugin."""
    return getattr(pm, "plugin_versions", {}).get(name, "unknown")


def build_registries(pm: pluggy.PluginManager | None = None) -> Registries:
    """Call every collection hook once per plugin and collect typed, attributed registries."""
    pm = pm or get_plugin_manager()
    registries = Registries(plugin_manager=pm)
    for hook_name, attr in Registries.HOOK_TO_REGISTRY.items():
        registry = getattr(registries, attr)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin, version = impl.plugin_name, plugin_version(pm, impl.plugin_name)

            def register(name, factory, description="", _p=plugin, _v=version, _r=registry):
                _r.add(name, factory, _p, _v, description)

            _call_plugin(impl, plugin, hook_name, register)
    for impl in pm.hook.register_commands.get_hookimpls():
        plugin, version = impl.plugin_name, plugin_version(pm, impl.plugin_name)

        def register_command(command: Command, _p=plugin, _v=version):
            if not isinstance(command, Command):
                raise PluginError(f"plugin {_p} registered a command that is not a harness.protocols.Command", "wrap it in Command(...)")
            registries.commands.add(command.name, command, _p, _v, command.help)

        _call_plugin(impl, plugin, "register_commands", register_command)
    return registries


def _call_plugin(impl, plugin: str, hook_name: str, register) -> None:
    try:
        impl.function(register=register)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"plugin {plugin} failed in {hook_name}: {type(exc).__name__}: {exc}",
            "fix or uninstall it, or leave it out with MIMIC_PLUGINS",
        ) from exc


def plugin_hooks(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Each loaded plugin with its version and the hooks it implements (for `mimic plugins`)."""
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "version": plugin_version(pm, name), "hooks": hooks})
    return rows
