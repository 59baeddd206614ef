"""`mimic run --executor ray`: a run sharded over a real 2-node local Ray cluster (separate raylets on
loopback, started and stopped by the fixture) against the fake OpenAI server.

The sharded run's tables equal the single-process run's (a draw's seed depends only on its key);
killing a node mid-run loses no durable draw, duplicates none, and asks the server again only for
the draws that were in flight; rerunning a finished sharded run asks for nothing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from harness.errors import UsageError
from harness.modelspec import ModelSpec
from harness.prompts import PlannedDraw
from harness.records import DRAW_KEY_COLUMNS, DrawKey
from harness.run import RunConfig, run
from harness.run.shards import import_ray, merge_shard_dir, plan_shards
from harness.store import RunStore, load_draws, scan_log
from harness.testing.fake_server import FakeOpenAIServer
from tests.helpers import books_reference_jsonl, books_task_yaml

PLUGINS = "builtin-features,builtin-sources,builtin-controls,builtin-estimators,openai"
CONTEXTS, PER_CONTEXT = 12, 4
TASK = books_task_yaml("ray-books", CONTEXTS, PER_CONTEXT)
PLANNED = 2 * CONTEXTS * PER_CONTEXT  # pools none and prompt:5
CONCURRENCY = 2  # calls in flight per worker


def draw(pool: str, context: int, sample: int) -> PlannedDraw:
    return PlannedDraw("t", pool, context, sample, seed=context * 10 + sample, n_exemplars=2, exemplar_ids=(1, 2),
                       prompt=f"p{context}", prefix="Rating:")


def test_shards_keep_each_context_whole_and_balance():
    draws = [draw(pool, c, s) for pool in ("none", "prompt:5") for c in range(5) for s in range(3)]
    shards = plan_shards(draws, 4)
    assert len(shards) == 4 and sorted(d.key for s in shards for d in s.draws) == sorted(d.key for d in draws)
    homes = {}
    for shard in shards:
        for d in shard.draws:
            assert homes.setdefault((d.pool, d.n_exemplars, d.context_id), shard.shard_id) == shard.shard_id
    sizes = sorted(len(s.draws) for s in shards)
    assert sizes[-1] - sizes[0] <= 3  # at most one context apart
    assert plan_shards(draws, 4) == shards  # deterministic
    assert len(plan_shards(draws[:3], 4)) == 1  # one context: one shard


def test_merging_a_shard_twice_adds_nothing(tmp_path):
    rows = [{"task": "t", "pool": "none", "n_exemplars": 2, "context_id": c, "sample_index": 0, "text": str(c)} for c in range(3)]
    with RunStore.open(tmp_path / "run") as store:
        for _ in range(2):
            with RunStore.open(tmp_path / "run" / "shards" / "s000") as shard:
                shard.append(rows)
            merged = merge_shard_dir(store, tmp_path / "run" / "shards" / "s000")
            assert not (tmp_path / "run" / "shards" / "s000").exists()
        assert merged == [] and len(store) == 3
    assert len(scan_log(tmp_path / "run" / "draws.jsonl").rows) == 3


def test_missing_ray_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(UsageError) as info:
        import_ray()
    assert "pip install 'mimic-harness[ray]'" in info.value.one_line()


def test_ray_executor_refuses_a_budget():
    with pytest.raises(UsageError, match="not enforced across Ray workers"):
        RunConfig(model=ModelSpec("scripted", "echo"), task="t", executor="ray", max_tokens=10)
    with pytest.raises(UsageError, match="--executor 'dask' is unknown"):
        RunConfig(model=ModelSpec("scripted", "echo"), task="t", executor="dask")


def test_an_address_nobody_listens_on_is_a_one_line_usage_error(tmp_path):
    pytest.importorskip("ray")
    from harness.plugins import build_registries
    from harness.testing.ray_cluster import free_port

    address = f"127.0.0.1:{free_port()}"
    config = RunConfig(model=ModelSpec("scripted", "echo"), task="bookworld", samples=2, out_dir=tmp_path, progress="off",
                       summary_to="off", estimators=(), executor="ray", ray_address=address)
    with pytest.raises(UsageError) as info:
        run(config, build_registries())
    line = info.value.one_line()
    assert f"cannot join the Ray cluster at {address}" in line and "ray start --head" in line and "\n" not in line


# -- on a real cluster ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")
    from harness.testing.ray_cluster import LocalRayCluster

    with LocalRayCluster(nodes=2, cpus_per_node=1) as started:
        yield started


@pytest.fixture
def task(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl())
    (tmp_path / "task.yaml").write_text(TASK)
    return tmp_path / "task.yaml"


def config(server: FakeOpenAIServer, task: Path, out: Path, **kw) -> RunConfig:
    base = dict(model=ModelSpec("openai", "fake", {"base_url": server.base_url}), task=task, out_dir=out,
                concurrency=CONCURRENCY, progress="off", summary_to="off", n_boot=200, retry_wait=0.001, request_timeout=10.0)
    return RunConfig(**{**base, **kw})


def registries():
    from harness.plugins import build_registries

    return build_registries()


def table(run_dir: Path) -> pl.DataFrame:
    """The draws in key order, without what differs between runs (run id, model id with its port, cache hits)."""
    return load_draws(run_dir).drop("cached", "run_id", "model").sort(list(DRAW_KEY_COLUMNS))


def estimates(run_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(run_dir / "estimates.parquet").drop("run_id", "model").sort("estimator", "condition", "feature")


def executor_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["executor"]


@pytest.mark.slow
def test_sharded_run_equals_the_single_process_run_and_a_rerun_asks_nothing(cluster, task, tmp_path):
    with FakeOpenAIServer() as server:
        local = run(config(server, task, tmp_path / "local"), registries())
        server.clear_log()
        sharded = run(config(server, task, tmp_path / "ray", executor="ray", ray_address=cluster.address), registries())
        assert sharded.status == "complete" and sharded.done == PLANNED
        assert server.count(status=200) == PLANNED and sharded.model_calls == PLANNED  # the workers' calls are counted
        server.clear_log()
        again = run(config(server, task, tmp_path / "ray", executor="ray", ray_address=cluster.address), registries())
        assert again.status == "complete" and again.model_calls == 0 and server.count() == 0
    assert table(sharded.run_dir).equals(table(local.run_dir))
    assert estimates(sharded.run_dir).equals(estimates(local.run_dir))
    record = executor_record(sharded.run_dir)
    assert record["workers"] == 2 and record["shards"] == 4 and record["resubmitted"] == 0 and record["cache"] == "shared"
    assert not (sharded.run_dir / "shards").exists()  # every shard merged and removed


def busy_shards(out: Path) -> int:
    """Shards being recorded now: a shard's directory holds durable draws until the driver merges it."""
    return sum(1 for log in out.glob("runs/*/shards/*/draws.jsonl") if log.stat().st_size > 0)


def kill_when_both_busy(cluster, out: Path, killed: threading.Event) -> threading.Thread:
    """Kill node 1 once both workers (one per node) have durable draws of an unfinished shard."""

    def watch() -> None:
        deadline = time.monotonic() + 120
        while busy_shards(out) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.kill_node(1)
        killed.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_node_killed_mid_run_loses_no_draw_and_repeats_only_those_in_flight(cluster, task, tmp_path):
    with FakeOpenAIServer() as server:
        baseline = table(run(config(server, task, tmp_path / "local", estimators=()), registries()).run_dir)
        server.clear_log()
        server.configure(latency_ms=150)  # a shard of 24 draws, 2 at a time, takes 1.8 s
        killed = threading.Event()
        watcher = kill_when_both_busy(cluster, tmp_path / "ray", killed)
        result = run(config(server, task, tmp_path / "ray", executor="ray", ray_address=cluster.address, estimators=()),
                     registries())
        watcher.join(timeout=60)
        records = [r for r in server.records() if r.prompt_hash is not None]  # every draw request, answered or cut off
    assert killed.is_set() and result.status == "complete" and result.done == PLANNED
    rows = scan_log(result.run_dir / "draws.jsonl").rows
    assert len(rows) == PLANNED and len({DrawKey.of(r) for r in rows}) == PLANNED  # 0 lost, 0 duplicated
    assert table(result.run_dir).equals(baseline)
    asked = Counter((r.prompt_hash, r.seed) for r in records)
    assert len(asked) == PLANNED
    repeated = sum(n - 1 for n in asked.values())
    # Asked twice: at most the dead worker's calls in flight, and the answers waiting for its next
    # group commit (at most another window's worth); every durable draw was kept.
    assert repeated <= 2 * CONCURRENCY
    assert executor_record(result.run_dir)["resubmitted"] >= 1
