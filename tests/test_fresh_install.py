"""A plain `pip install` of the checkout, in a fresh virtualenv, runs a built-in task from an empty directory.

This is what a user outside the repository gets: the wheel must ship the built-in tasks and declare
every dependency the core imports (nothing from the checkout or the test virtualenv leaks in).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What building the core's wheel reads; copied so that the build's build/ and *.egg-info stay out of
# the checkout, and no stale file from an earlier build/lib can slip into the wheel.
BUILD_INPUTS = ("pyproject.toml", "README.md", "harness", "tasks")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_pip_install_then_mimic_run_from_an_empty_directory(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "MIMIC_PLUGINS", "MIMIC_CACHE_DIR", "VIRTUAL_ENV", "PYTHONHOME"}}
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 300)
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(source)],
                     tmp_path, env, 900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "deprecat" not in installed.stderr.lower(), installed.stderr

    workdir = tmp_path / "empty"
    workdir.mkdir()
    run = _run([str(venv / "bin" / "mimic"), "run", "--model", "scripted:echo", "--task", "bookworld", "-n", "4",
                "--progress", "off"], workdir, env, 600)
    assert run.returncode == 0, run.stdout + run.stderr
    run_dirs = sorted((workdir / "results" / "runs").iterdir())
    assert len(run_dirs) == 1, run_dirs
    assert (run_dirs[0] / "manifest.json").is_file()
    assert any((run_dirs[0] / name).is_file() for name in ("draws.parquet", "draws.jsonl"))
    assert (run_dirs[0] / "estimates.parquet").is_file()

    listed = _run([str(venv / "bin" / "mimic"), "tasks"], workdir, env, 120)
    assert listed.returncode == 0 and "bookworld" in listed.stdout and "built-in" in listed.stdout, listed.stderr
