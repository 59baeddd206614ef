"""A plugin installed from outside the repository is discovered and usable by name, with no core change."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "thirdparty_plugin"


def mimic_command() -> list[str]:
    """The installed ``mimic`` console script next to this interpreter."""
    script = Path(sys.executable).with_name("mimic")
    if not script.exists():
        pytest.skip("the mimic console script is not installed (pip install -e .)")
    return [str(script)]


def run(args: list[str], path: list[Path] = (), plugins: str | None = None) -> subprocess.CompletedProcess:
    """Run ``mimic ARGS`` with PYTHONPATH set to ``path`` and MIMIC_PLUGINS to ``plugins``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIMIC_PLUGINS", "PYTHONPATH", "MIMIC_DEBUG")}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    if plugins is not None:
        env["MIMIC_PLUGINS"] = plugins
    return subprocess.run(mimic_command() + args, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-install the fixture package (no deps) into a private directory; return that directory."""
    work = tmp_path_factory.mktemp("thirdparty")
    source = work / "src"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (target / "mimic_shout-0.3.1.dist-info" / "entry_points.txt").exists()
    return target


def fake_distribution(root: Path, name: str, module: str, source: str) -> Path:
    """An installed distribution made by hand: a module plus a dist-info with one entry point."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[mimic_harness]\n{name} = {module}\n")
    return root


def test_discovered_by_mimic_plugins(installed):
    result = run(["plugins", "--json"], [installed])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    shout = rows["shout"]
    assert shout["version"] == "0.3.1"
    assert shout["hooks"] == ["register_features", "register_mimics"]
    assert {(c["kind"], c["name"]) for c in shout["components"]} == {("mimic backend", "shout"), ("feature", "exclamations")}
    assert "builtin-scripted" in rows  # the built-ins load beside it


def test_usable_by_name(installed):
    result = run(["sample", "shout:x", r"first line\nhi there", "-n", "2"], [installed], plugins="shout")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("HI THERE!") == 2
    listed = run(["models"], [installed], plugins="shout,builtin-scripted")
    assert listed.returncode == 0 and "shout" in listed.stdout and "scripted" in listed.stdout


def test_not_installed_means_unknown():
    result = run(["sample", "shout:x", "hi"], plugins="builtin-scripted")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown mimic backend 'shout'") and len(result.stderr.splitlines()) == 1


def test_mimic_plugins_env_restricts_loading(installed):
    result = run(["plugins", "--json"], [installed], plugins="shout")
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["shout"]
    blocked = run(["sample", "scripted:echo", "hi"], [installed], plugins="shout")
    assert blocked.returncode == 2 and "unknown mimic backend 'scripted'" in blocked.stderr and "(known: shout)" in blocked.stderr


def test_plugin_raising_on_import(tmp_path, installed):
    broken = fake_distribution(tmp_path / "broken", "broken-plugin", "broken_plugin",
                               "raise RuntimeError('database of jokes not found')\n")
    result = run(["plugins"], [installed, broken], plugins="shout,broken-plugin")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: plugin broken-plugin (broken_plugin) failed to import")
    assert "database of jokes not found" in lines[0] and "MIMIC_PLUGINS" in lines[0]
    skipped = run(["plugins"], [installed, broken], plugins="shout")
    assert skipped.returncode == 0 and "shout 0.3.1" in skipped.stdout


def test_duplicate_registration_names_both_plugins(tmp_path, installed):
    source = (
        "from harness.hookspecs import hookimpl\n\n"
        "@hookimpl\n"
        "def register_mimics(register):\n"
        "    register('shout', lambda spec, ctx: None, 'a second shout')\n"
    )
    dupe = fake_distribution(tmp_path / "dupe", "loud-copy", "loud_copy", source)
    result = run(["models"], [installed, dupe], plugins="shout,loud-copy")
    assert result.returncode == 2
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "'shout' is registered by both plugin" in line and "loud-copy" in line and "plugin shout" in line
