"""Disk and process faults not covered by test_store.py, test_runner.py and test_resume_kill.py.

Those cover: ENOSPC on the draw log (store and runner level), a lock held in the same process,
SIGKILL at random points of generation, one SIGINT during generation. Here:

- ENOSPC (a real one from /dev/full for Parquet, a simulated one for JSON) on every file written
  after the draws are in, through the CLI: one line, no temporary files left, the draws kept, and
  the rerun makes no model call; the draw cache's SQLite reporting a full disk; read-only and I/O
  errors on the draw log through the CLI.
- Two real ``mimic run`` processes on one run directory: the second refuses in one line naming the
  first's pid; the first finishes untouched.
- SIGTERM, and SIGINT twice, during generation; SIGINT and SIGKILL after the draws are in (during
  estimation): clean stop or crash, a line saying how to resume, nothing lost, no model call redone.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from harness.records import DRAW_KEY_COLUMNS
from harness.store import load_draws, scan_log
from tests.helpers import books_reference_jsonl, books_task_yaml

REPO = Path(__file__).resolve().parent.parent
PLUGINS = "builtin-features,builtin-sources,builtin-controls,builtin-scripted,openai"
TASK = books_task_yaml("disk-books", 4, 4)
PLANNED = 2 * 4 * 4
MODELS = """\
models:
  books:
    backend: scripted
    model: planted
    distribution:
      - {text: " 5\\nReview: warm and good", p: 0.4}
      - {text: " 2\\nReview: dull and slow", p: 0.3}
      - {text: "Review: a good warm book", p: 0.3}
"""
# An estimator that marks when estimation starts and then naps (NAP_SECONDS, or until the file
# NAP_RELEASE exists): a window in which the run holds its lock with every draw already in.
NAP_PLUGIN = """\
import os
import time
from pathlib import Path

from harness.hookspecs import hookimpl


class Nap:
    def estimate(self, inputs):
        Path(os.environ["NAP_MARKER"]).write_text("estimating")
        deadline = time.monotonic() + float(os.environ.get("NAP_SECONDS", "0"))
        release = os.environ.get("NAP_RELEASE")
        while time.monotonic() < deadline and not (release and Path(release).exists()):
            time.sleep(0.01)
        return []


@hookimpl
def register_estimators(register):
    register("nap", lambda options, ctx: Nap(), "sleeps NAP_SECONDS")
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl())
    (tmp_path / "task.yaml").write_text(TASK)
    (tmp_path / "models.yaml").write_text(MODELS)
    site = tmp_path / "_plugins"
    (site / "nap_estimator_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "nap_estimator_plugin.py").write_text(NAP_PLUGIN)
    (site / "nap_estimator_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: nap-estimator-plugin\nVersion: 0.1\n")
    (site / "nap_estimator_plugin-0.1.dist-info" / "entry_points.txt").write_text("[mimic_harness]\nnap = nap_estimator_plugin\n")
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def only_run(out: Path) -> Path:
    (run_dir,) = list((out / "runs").iterdir())
    return run_dir


def scripted_args(out: str = "results", *extra: str) -> list[str]:
    return ["run", "-m", "books", "--model-config", "models.yaml", "-t", "task.yaml", "--out", out, "--progress", "off",
            "--concurrency", "1", "--estimator", "nap", *extra]


def main_in_process(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``mimic ARGS`` in this process (so faults can be patched in); returns (exit code, stderr)."""
    from harness.cli import main

    monkeypatch.syspath_prepend(str(Path.cwd() / "_plugins"))
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS + ",nap")
    monkeypatch.setenv("NAP_MARKER", str(Path.cwd() / "nap-marker"))
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def assert_one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


def assert_no_temp_files(run_dir: Path) -> None:
    leftovers = [p.name for p in run_dir.iterdir() if ".tmp-" in p.name]
    assert not leftovers, leftovers


# -- ENOSPC after the draws are in ------------------------------------------------------------------
def _full_disk_for(target: str, mp: pytest.MonkeyPatch) -> list[str]:
    """Writes of ``target`` (a file of the run directory) go to /dev/full: the kernel answers ENOSPC."""
    from harness import store as store_mod

    hits: list[str] = []
    real_write = os.write
    full = os.open("/dev/full", os.O_WRONLY)

    def write(fd, data):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        # the manifest: only the final one (status complete) meets the full disk
        final = target != "manifest.json" or b'"status": "complete"' in bytes(data)
        if name.startswith(f".{target}.tmp-") and final:
            hits.append(target)
            return real_write(full, data)  # raises OSError(ENOSPC) from the kernel
        return real_write(fd, data)

    mp.setattr(store_mod.os, "write", write)
    return hits


@pytest.mark.parametrize("target", ["draws.parquet", "estimates.parquet", "estimates.json", "summary.md", "manifest.json"])
def test_disk_full_after_the_draws_are_in(target, workdir, capsys, monkeypatch):
    with pytest.MonkeyPatch.context() as mp:
        hits = _full_disk_for(target, mp)
        code, err = main_in_process(scripted_args(), capsys, monkeypatch)
    assert hits, f"{target} was never written"
    assert code == 3
    line = assert_one_error_line(err, f"could not write results/runs/disk-books-", target, "no space left on device",
                                 "free disk space", "resume")
    assert line.count("resume") <= 2  # one hint, not the same advice twice over
    run_dir = only_run(workdir / "results")
    assert_no_temp_files(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())  # still valid JSON: atomic writes
    assert manifest["status"] in ("running", "failed")  # never "complete" without its files
    scan = scan_log(run_dir / "draws.jsonl")
    assert len(scan.rows) == PLANNED and scan.dropped_bytes == 0
    code, err = main_in_process(scripted_args(), capsys, monkeypatch)  # the disk has room again
    assert code == 0, err
    assert "0 model calls" in err
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert load_draws(run_dir).height == PLANNED


@pytest.mark.parametrize("code_, fragment", [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "permission denied"),
                                             (errno.EIO, "Input/output error")])
def test_draw_log_write_errors_through_the_cli(code_, fragment, workdir, capsys, monkeypatch):
    from harness import store as store_mod

    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("draws.jsonl") and os.fstat(fd).st_size > 0:
            raise OSError(code_, os.strerror(code_))  # the first append lands, the next ones fail
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_mod.os, "write", write)
        code, err = main_in_process(scripted_args(), capsys, monkeypatch)
    assert code == 3
    assert_one_error_line(err, "could not append to results/runs/disk-books-", "draws.jsonl", fragment, "resume")
    run_dir = only_run(workdir / "results")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    scan = scan_log(run_dir / "draws.jsonl")
    assert manifest["status"] == "failed" and scan.dropped_bytes == 0 and 0 < len(scan.rows) < PLANNED
    assert manifest["counts"]["done"] == len(scan.rows)


class _FullDatabase:
    """A sqlite3 connection whose inserts fail the way SQLite reports a full disk."""

    def __init__(self, db, allowed: int):
        self._db, self.allowed = db, allowed

    def executemany(self, sql, rows):
        if sql.startswith("INSERT") and "completions" in sql:
            if self.allowed <= 0:
                raise sqlite3.OperationalError("database or disk is full")
            self.allowed -= 1
        return self._db.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_cache_disk_full_stops_the_run_resumably(workdir, capsys, monkeypatch):
    from harness.cache import DrawCache

    real_open = DrawCache.open.__func__

    def open_full(cls, cache_dir=None):
        cache = real_open(cls, cache_dir)
        cache._db = _FullDatabase(cache._db, allowed=1)
        return cache

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DrawCache, "open", classmethod(open_full))
        code, err = main_in_process(scripted_args(), capsys, monkeypatch)
    assert code == 3
    assert_one_error_line(err, "draw cache", "could not be written: database or disk is full", "free disk space", "--resume")
    run_dir = only_run(workdir / "results")
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"
    assert 0 < len(scan_log(run_dir / "draws.jsonl").rows) < PLANNED
    code, err = main_in_process(scripted_args(), capsys, monkeypatch)
    assert code == 0, err
    assert load_draws(run_dir).height == PLANNED


# -- processes ----------------------------------------------------------------------------------------
@pytest.fixture
def server():
    from harness.testing.fake_server import FakeOpenAIServer

    with FakeOpenAIServer(latency_ms=60) as srv:
        yield srv


def env(**extra: str) -> dict:
    site = str(Path.cwd() / "_plugins")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MIMIC_", "OPENAI_"))}
    return {**base, "MIMIC_PLUGINS": PLUGINS + ",nap", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([site, str(REPO), os.environ.get("PYTHONPATH", "")]),
            "NAP_MARKER": str(Path.cwd() / "nap-marker"), **extra}


def openai_args(server, out: str, *extra: str) -> list[str]:
    return ["run", "-m", f"openai:fake?base_url={server.base_url}", "-t", "task.yaml", "--out", out, "--concurrency", "4",
            "--progress", "off", "--retry-wait", "0.01", "--estimator", "nap", *extra]


def openai_cmd(server, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *openai_args(server, out, *extra)]


def wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def logged(out: Path) -> int:
    logs = list(out.glob("runs/*/draws.jsonl"))
    return logs[0].read_bytes().count(b"\n") if logs else 0


def table(run_dir: Path) -> pl.DataFrame:
    return load_draws(run_dir).drop("cached").sort(list(DRAW_KEY_COLUMNS))


def test_two_runs_on_one_run_dir_the_second_refuses(workdir, server):
    release = workdir / "release"
    # the first run holds the run directory (in its estimation nap) until the second has tried
    first = subprocess.Popen(openai_cmd(server, "shared"), env=env(NAP_SECONDS="60", NAP_RELEASE=str(release)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: logged(workdir / "shared") >= 1, first, "the first run recorded a draw")
        second = subprocess.run(openai_cmd(server, "shared"), env=env(), capture_output=True, text=True, timeout=60)
        assert first.poll() is None, "the first run must still hold the run when the second starts"
    finally:
        release.write_text("go")
        out, err = first.communicate(timeout=120)
    assert second.returncode == 3
    assert_one_error_line(second.stderr, "run disk-books-openai-fake-", f"is in use by another `mimic run` (pid {first.pid})",
                          "wait for it to finish")
    assert first.returncode == 0, err
    run_dir = only_run(workdir / "shared")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["done"] == PLANNED
    rows = scan_log(run_dir / "draws.jsonl").rows
    assert len(rows) == PLANNED and len({tuple(r[c] for c in DRAW_KEY_COLUMNS) for r in rows}) == PLANNED


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]], ids=["sigterm", "double-sigint"])
def test_signals_during_generation_stop_cleanly_and_resume(signals, workdir, server, capsys, monkeypatch):
    code, err = main_in_process(openai_args(server, "straight", "--no-cache"), capsys, monkeypatch)
    assert code == 0, err
    proc = subprocess.Popen(openai_cmd(server, "sig"), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: logged(workdir / "sig") >= 4, proc, "four draws were recorded")
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    # 130; a second Ctrl-C that lands while the interpreter is exiting ends it by SIGINT (which a
    # shell reports as 130 too), after everything was saved
    assert proc.returncode == 130 or (len(signals) > 1 and proc.returncode == -signal.SIGINT), err
    assert "Traceback" not in err
    run_dir = only_run(workdir / "sig")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and 4 <= manifest["counts"]["done"] < PLANNED
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted:") and "resume" in lines[-1], err
    if signals == [signal.SIGTERM]:  # the stop came during generation: the line names the run
        assert lines[-1].endswith(f"`mimic run --resume {manifest['run_id']}`"), err
    assert all(line.startswith(f"{manifest['run_id']}: interrupted") for line in lines[:-1]), err  # the status line
    scan = scan_log(run_dir / "draws.jsonl")
    assert scan.dropped_bytes == 0 and len(scan.rows) == manifest["counts"]["done"]
    code, err = main_in_process(openai_args(server, "sig", "--resume", manifest["run_id"]), capsys, monkeypatch)
    assert code == 0, err
    assert table(run_dir).equals(table(only_run(workdir / "straight")))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_stop_during_estimation_keeps_every_draw_and_costs_no_model_call(sig, workdir, server, capsys, monkeypatch):
    proc = subprocess.Popen(openai_cmd(server, "est"), env=env(NAP_SECONDS="60"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    marker = workdir / "nap-marker"
    wait_for(marker.exists, proc, "estimation started")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    run_dir = only_run(workdir / "est")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("interrupted") and "resume" in lines[0], err
        assert manifest["status"] == "interrupted" and manifest["counts"]["done"] == PLANNED  # not left "running"
    else:
        assert proc.returncode == -signal.SIGKILL
        assert manifest["status"] == "running"  # nobody could update it: the rerun must cope
    assert len(scan_log(run_dir / "draws.jsonl").rows) == PLANNED
    served = server.count(status=200)
    marker.unlink()
    code, err = main_in_process(openai_args(server, "est"), capsys, monkeypatch)
    assert code == 0, err
    assert server.count(status=200) == served, "the rerun asked the model again for draws it had"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and (run_dir / "estimates.parquet").exists()
