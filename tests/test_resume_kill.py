"""`mimic run` against the fake OpenAI server: SIGKILL at random points, resume, SIGINT, faults, lock.

The fake server runs in this process (a thread), so its request log sees every `mimic run`
subprocess. Only the plugins a run needs are loaded (``MIMIC_PLUGINS``) to keep start-up short.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from harness.store import RunStore, load_draws, scan_log
from harness.testing.fake_server import FakeOpenAIServer
from tests.helpers import books_reference_jsonl, books_task_yaml

PLUGINS = "builtin-features,builtin-sources,builtin-controls,openai"
TASK = books_task_yaml("kill-books", 6, 6)
PLANNED = 2 * 6 * 6


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl())
    (tmp_path / "task.yaml").write_text(TASK)
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def server():
    with FakeOpenAIServer(latency_ms=40) as srv:
        yield srv


def mimic_cmd(server: FakeOpenAIServer, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", "-m", f"openai:fake?base_url={server.base_url}", "-t", "task.yaml",
            "--out", out, "--concurrency", "4", "--progress", "plain", "--retry-wait", "0.01", *extra]


def env() -> dict:
    return {**os.environ, "MIMIC_PLUGINS": PLUGINS, "PYTHONUNBUFFERED": "1"}


def logged_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def settle(server: FakeOpenAIServer) -> None:
    """Wait until requests sent before a kill have been answered and logged by the server."""
    last, quiet = -1, 0
    while quiet < 5:
        count = len(server.records())
        quiet = quiet + 1 if count == last else 0
        last = count
        time.sleep(0.02)


def run_dir_of(out: Path) -> Path:
    dirs = list((out / "runs").iterdir())
    assert len(dirs) == 1
    return dirs[0]


def draws_table(run_dir: Path) -> pl.DataFrame:
    return load_draws(run_dir).drop("cached").sort(["pool", "context_id", "sample_index"])


def test_sigkill_at_random_points_then_resume_equals_uninterrupted(workdir, server):
    straight = subprocess.run(mimic_cmd(server, "straight", "--no-cache"), env=env(), capture_output=True, text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr
    expected = draws_table(run_dir_of(workdir / "straight"))
    assert expected.height == PLANNED
    server.clear_log()

    rng = random.Random(1234)
    log = None
    in_flight_at_kills: set[tuple] = set()
    for _ in range(3):
        before = logged_lines(log) if log else 0
        target = before + rng.randint(1, 12)
        proc = subprocess.Popen(mimic_cmd(server, "killed"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while log is None or logged_lines(log) < target:
                assert proc.poll() is None, "the run ended before it could be killed"
                if log is None and (workdir / "killed" / "runs").exists():
                    found = list((workdir / "killed" / "runs").glob("*/draws.jsonl"))
                    log = found[0] if found else None
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        settle(server)
        durable = {(r["prompt_hash"], r["seed"]) for r in scan_log(log).rows}
        assert len(durable) < PLANNED
        requested = {(r.prompt_hash, r.seed) for r in server.records()}
        in_flight_at_kills |= requested - durable

    final = subprocess.run(mimic_cmd(server, "killed"), env=env(), capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    run_dir = run_dir_of(workdir / "killed")
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    assert draws_table(run_dir).equals(expected)
    answered = Counter((r.prompt_hash, r.seed) for r in server.records() if r.status == 200)
    twice = {key for key, n in answered.items() if n > 1}
    assert twice <= in_flight_at_kills
    assert set(answered) == {(p, s) for p, s in expected.select("prompt_hash", "seed").iter_rows()}


def test_faults_429_with_retry_after_and_500_still_give_every_draw(workdir, server):
    clean = subprocess.run(mimic_cmd(server, "clean", "--no-cache"), env=env(), capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr
    server.clear_log()
    server.configure(faults={"rate_limit": 0.05, "server_error": 0.05}, retry_after=0.15, fault_seed=7)
    faulty = subprocess.run(mimic_cmd(server, "faulty", "--no-cache"), env=env(), capture_output=True, text=True, timeout=120)
    assert faulty.returncode == 0, faulty.stderr
    assert server.count(status=429) > 0 and server.count(status=500) > 0
    assert server.retry_after_violations() == []
    resent = [r for r in server.records() if r.retry_after_ok is True]
    assert resent  # re-sends after a 429 were checked, and every one waited its Retry-After
    manifest = json.loads((run_dir_of(workdir / "faulty") / "manifest.json").read_text())
    assert manifest["calls"]["rate_limited"] == server.count(status=429)
    assert manifest["calls"]["transient_errors"] == server.count(status=500)
    assert draws_table(run_dir_of(workdir / "faulty")).equals(draws_table(run_dir_of(workdir / "clean")))


def test_sigint_marks_interrupted_and_says_how_to_resume(workdir, server):
    proc = subprocess.Popen(mimic_cmd(server, "int"), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = None
    while log is None or logged_lines(log) < 4:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        found = list((workdir / "int" / "runs").glob("*/draws.jsonl")) if (workdir / "int" / "runs").exists() else []
        log = found[0] if found else None
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    manifest = json.loads((log.parent / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and 0 < manifest["counts"]["done"] < PLANNED
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted:") and f"mimic run --resume {manifest['run_id']}" in last
    resumed = subprocess.run(mimic_cmd(server, "int", "--resume", manifest["run_id"]), env=env(), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((log.parent / "manifest.json").read_text())["counts"]["done"] == PLANNED


def test_second_run_on_a_locked_run_dir_refuses_in_one_line(workdir, server, capsys):
    from harness.cli import main

    args = ["run", "-m", f"openai:fake?base_url={server.base_url}", "-t", "task.yaml", "--out", "locked", "--progress", "off",
            "-n", "2"]
    assert main(args) == 0
    run_dir = run_dir_of(workdir / "locked")
    capsys.readouterr()
    with RunStore.open(run_dir):
        assert main(args) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "in use by another `mimic run`" in err
