"""The plugin manager factory, typed registries and plugin attribution."""

import importlib
import sys
import types

import pluggy
import pytest

from harness import hookspecs
from harness.errors import PluginError
from harness.hookspecs import hookimpl
from harness.plugins import build_registries, get_plugin_manager, plugin_hooks, register_plugin
from harness.protocols import Command


def _module(name, **functions):
    module = types.ModuleType(name)
    for key, fn in functions.items():
        setattr(module, key, fn)
    return module


def test_importing_harness_plugins_has_no_side_effects():
    sys.modules.pop("harness.plugins", None)
    module = importlib.import_module("harness.plugins")
    assert not any(isinstance(v, pluggy.PluginManager) for v in vars(module).values())


def test_each_call_returns_a_fresh_manager():
    assert get_plugin_manager() is not get_plugin_manager()


def test_builtins_load_through_entry_points_with_versions():
    pm = get_plugin_manager()
    rows = {row["name"]: row for row in plugin_hooks(pm)}
    assert "register_mimics" in rows["builtin-scripted"]["hooks"]
    assert rows["builtin-scripted"]["version"] != "unknown"


def test_mimic_plugins_env_restricts_loading(monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", "builtin-scripted")
    names = [name for name, _ in get_plugin_manager().list_name_plugin()]
    assert names == ["builtin-scripted"]


def test_misspelled_hook_fails_loudly():
    @hookimpl
    def register_mimic(register):  # missing the trailing "s"
        pass

    pm = get_plugin_manager(load_entrypoints=False)
    with pytest.raises(PluginError, match="register_mimic"):
        register_plugin(pm, _module("typo", register_mimic=register_mimic), "typo-plugin")


def test_duplicate_names_name_both_plugins():
    @hookimpl
    def register_mimics(register):
        register("scripted", lambda spec, ctx: None)

    pm = get_plugin_manager()
    register_plugin(pm, _module("dupe", register_mimics=register_mimics), "dupe-plugin", "9.9")
    with pytest.raises(PluginError) as info:
        build_registries(pm)
    assert "builtin-scripted" in info.value.message and "dupe-plugin" in info.value.message


def test_registries_record_plugin_and_version():
    @hookimpl
    def register_features(register):
        register("shouting", lambda options, ctx: object(), "counts capitals")

    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, _module("feat", register_features=register_features), "feat-plugin", "1.2.3")
    entry = build_registries(pm).features.get("shouting")
    assert entry.provenance() == {"name": "shouting", "plugin": "feat-plugin", "version": "1.2.3"}


def test_unknown_name_lists_known_ones():
    registries = build_registries(get_plugin_manager())
    with pytest.raises(PluginError, match="scripted"):
        registries.mimics.get("nonexistent")


def test_plugin_that_raises_in_a_hook_is_a_one_line_error():
    @hookimpl
    def register_worlds(register):
        raise RuntimeError("boom")

    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, _module("bad", register_worlds=register_worlds), "bad-plugin")
    with pytest.raises(PluginError, match="bad-plugin failed in register_worlds: RuntimeError: boom"):
        build_registries(pm)


def test_non_callable_factory_and_bad_command_rejected():
    @hookimpl
    def register_controls(register):
        register("x", 42)

    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, _module("nc", register_controls=register_controls), "nc-plugin")
    with pytest.raises(PluginError, match="not callable"):
        build_registries(pm)

    @hookimpl
    def register_commands(register):
        register("not a command")

    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, _module("bc", register_commands=register_commands), "bc-plugin")
    with pytest.raises(PluginError, match="Command"):
        build_registries(pm)


def test_plugin_commands_are_registered():
    @hookimpl
    def register_commands(register):
        register(Command("hello", "say hello", lambda parser: None, lambda args: 0))

    pm = get_plugin_manager(load_entrypoints=False)
    register_plugin(pm, _module("cmd", register_commands=register_commands), "cmd-plugin")
    assert build_registries(pm).commands.get("hello").plugin == "cmd-plugin"


def test_hookspecs_module_holds_only_specs():
    specs = [name for name in dir(hookspecs) if not name.startswith("_") and callable(getattr(hookspecs, name))]
    for name in specs:
        obj = getattr(hookspecs, name)
        if name in {"hookspec", "hookimpl"} or isinstance(obj, type) or isinstance(obj, types.ModuleType):
            continue
        assert hasattr(obj, "mimic_harness_spec"), name
