"""`mimic plugins`: list installed plugins, their versions, hooks and registered components."""

from __future__ import annotations

import argparse
import json

from harness.plugins import build_registries, get_plugin_manager, plugin_hooks
from harness.protocols import Command
from harness.registry import Registries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `mimic plugins`."""
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--components", action="store_true", help="also list what each plugin registered")


def run(args: argparse.Namespace) -> int:
    """List plugins."""
    pm = get_plugin_manager()
    rows = plugin_hooks(pm)
    registries = build_registries(pm)
    components: dict[str, list[dict]] = {row["name"]: [] for row in rows}
    for attr in [*Registries.HOOK_TO_REGISTRY.values(), "commands"]:
        registry = getattr(registries, attr)
        for entry in registry:
            components.setdefault(entry.plugin, []).append({"kind": registry.kind, "name": entry.name, "description": entry.description})
    for row in rows:
        row["components"] = components.get(row["name"], [])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']} {row['version']}")
        print(f"  hooks: {', '.join(row['hooks']) or '-'}")
        if args.components:
            for comp in row["components"]:
                print(f"  {comp['kind']}: {comp['name']}" + (f" - {comp['description']}" if comp["description"] else ""))
    return 0


COMMAND = Command("plugins", "List installed plugins, their versions and hooks.", add_arguments, run)
