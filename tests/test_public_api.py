"""The plugin boundary: plugins import only ``harness``'s public API, and the core does not depend on them."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import re
import tomllib
from pathlib import Path

import pytest

import harness

ROOT = Path(__file__).resolve().parents[1]
# The shipped package of each plugin: plugins/<dist>/<pkg>/ or plugins/<dist>/src/<pkg>/.
PACKAGES = sorted(init.parent for pattern in ("plugins/*/*/__init__.py", "plugins/*/src/*/__init__.py")
                  for init in ROOT.glob(pattern))
PUBLIC = set(harness.__all__)


def shipped_modules() -> list[tuple[str, Path]]:
    """(dotted module name, file) for every .py of the plugins' shipped packages, build/ dirs skipped."""
    modules = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if "build" in path.relative_to(package).parts:
                continue
            parts = path.relative_to(package.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules.append((name, path))
    return modules


def private_harness_uses(path: Path) -> list[str]:
    """``file:line: what`` for each import or attribute of ``harness`` outside its public API."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(ROOT)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("harness.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("harness."):
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif node.module == "harness":
                found += [f"{where}:{node.lineno}: from harness import {a.name}" for a in node.names if a.name not in PUBLIC]
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "harness"
              and node.attr not in PUBLIC):
            found.append(f"{where}:{node.lineno}: harness.{node.attr}")
    return found


def test_every_plugin_package_is_found():
    assert {p.name for p in PACKAGES} >= {"mimic_openai", "mimic_gguf", "mimic_lmeval"}


@pytest.mark.parametrize("name,path", shipped_modules(), ids=[name for name, _ in shipped_modules()])
def test_plugin_module_uses_only_the_public_api(name, path):
    private = private_harness_uses(path)
    assert not private, "outside harness's public API (import it from `harness`; see docs/plugins.md):\n" + "\n".join(private)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in {"harness", *(p.name for p in PACKAGES)}:
            raise
        pytest.skip(f"{name} needs the optional dependency {exc.name!r}, which is not installed")


def test_every_public_name_resolves_and_is_documented():
    for name in harness.__all__:
        value = getattr(harness, name)
        if inspect.isclass(value) or inspect.isfunction(value):  # type aliases (FeatureKind) carry no docstring
            assert (getattr(value, "__doc__", None) or "").strip(), f"harness.{name} has no docstring"
    assert set(harness.__all__) <= set(dir(harness))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = harness.not_a_name


def test_every_harness_package_ships_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "harness").rglob("*")
               if d.is_dir() and d.name != "__pycache__"} | {"harness"}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"


def test_core_does_not_depend_on_backend_libraries():
    requirements = importlib.metadata.requires("mimic-harness") or []
    names = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    assert not names & {"openai", "httpx", "lm-eval"}, f"mimic-harness requires {sorted(names)}"
