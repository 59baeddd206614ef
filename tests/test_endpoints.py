"""One model over several endpoints (the openai backend's endpoint pool), against loopback fake servers.

A run over three replicas gives the single-endpoint run's draws when one replica dies mid-run; a
429 from one replica slows that replica only (the others stay at their concurrency cap, and the
run's limiter never sees a rate limit); the model id, hence the cache, ignores the endpoint list.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import polars as pl
import pytest

from harness.errors import ModelSpecError, RateLimitedError, TransientBackendError
from harness.mimic import GenerationRequest
from harness.modelspec import ModelSpec, load_model_config, parse_model_spec
from harness.records import DRAW_KEY_COLUMNS
from harness.run import RunConfig, run
from harness.store import load_draws
from harness.testing import expected_completion
from harness.testing.fake_server import FakeOpenAIServer
from tests.helpers import books_reference_jsonl, books_task_yaml

pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")
from mimic_openai import create_openai  # noqa: E402
from mimic_openai.config import parse_config  # noqa: E402

PLUGINS = "builtin-features,builtin-sources,builtin-controls,openai"
CONTEXTS, SAMPLES = 8, 6
PLANNED = 2 * CONTEXTS * SAMPLES  # two pools (proxy value and none) x contexts x samples
PROMPT = "Review: a quiet book about a lighthouse.\nRating: 4\n\nReview:"


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS)


@pytest.fixture
def task(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl())
    (tmp_path / "task.yaml").write_text(books_task_yaml("replica-books", CONTEXTS, SAMPLES))
    return tmp_path / "task.yaml"


@pytest.fixture
def servers():
    """Three fake servers, 10 ms latency; the test configures them further."""
    with ExitStack() as stack:
        yield [stack.enter_context(FakeOpenAIServer(latency_ms=10)) for _ in range(3)]


def run_over(urls, task: Path, out: Path, **kw):
    from harness.plugins import build_registries

    options = {"base_url": urls, **kw.pop("options", {})}
    settings = dict(model=ModelSpec("openai", "fake", options), task=task, out_dir=out, use_cache=False, concurrency=6,
                    progress="off", summary_to="off", estimators=(), retry_wait=0.01, max_attempts=8, request_timeout=10.0)
    return run(RunConfig(**{**settings, **kw}), build_registries())


def table(run_dir: Path) -> pl.DataFrame:
    """The draws in key order, without what names the run or the model (the single-URL id has the port)."""
    return load_draws(run_dir).drop("cached", "run_id", "model").sort(list(DRAW_KEY_COLUMNS))


def calls_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())["calls"]


def when(condition, action, stop: threading.Event) -> threading.Thread:
    """Run ``action`` once ``condition()`` holds (polled every 2 ms), in a thread, until ``stop`` is set."""
    def watch():
        while not stop.is_set():
            if condition():
                action()
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# ----- configuration and identity ----------------------------------------------------------------
def test_a_list_of_base_urls_names_replicas_whose_id_ignores_the_list(tmp_path):
    urls = [f"http://127.0.0.1:{port}/v1" for port in (8001, 8002, 8003)]
    (tmp_path / "models.yaml").write_text("models:\n  gemma:\n    backend: openai\n    model: gemma\n"
                                          f"    base_url: [{', '.join(urls)}]\n    concurrency: 10\n")
    from_file = parse_model_spec("gemma", load_model_config(tmp_path / "models.yaml"))
    config = parse_config(from_file)
    assert config.endpoints == tuple(urls) and config.endpoint_concurrency == 4  # ceil(10 / 3)
    assert [c.base_url for c in config.endpoint_configs()] == urls
    assert {c.concurrency for c in config.endpoint_configs()} == {4}

    def mid(base_url, **options):
        return create_openai(ModelSpec("openai", "gemma", {"base_url": base_url, **options})).model_id

    same = {mid(urls), mid(urls[::-1]), mid(urls[1:]), mid([urls[2]]), mid(",".join(urls)), mid(urls, endpoint_concurrency=2),
            create_openai(from_file).model_id}
    assert len(same) == 1 and "127.0.0.1" not in same.pop()
    assert mid(urls) != mid(urls, mode="chat")
    assert mid(urls[0]) not in (mid(urls), mid(urls[1]))  # one URL, as before: the server is part of the id
    assert parse_config(parse_model_spec(f"openai:gemma?base_url={urls[0]},{urls[1]}&endpoint_concurrency=7")).endpoint_concurrency == 7


def test_bad_endpoint_lists_are_one_line_errors(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cases = {
        "same URL twice": ["http://127.0.0.1:1/v1", "http://127.0.0.1:1/v1/"],
        "empty entry": ["http://127.0.0.1:1/v1", " "],
        r"not an http\(s\) URL": ["http://127.0.0.1:1/v1", "ftp://h/v1"],
        "contains credentials": ["http://127.0.0.1:1/v1", "http://u:hunter2@127.0.0.1:2/v1"],
        "OPENAI_API_KEY is not set": ["http://127.0.0.1:1/v1", "https://api.example.invalid/v1"],
    }
    for message, urls in cases.items():
        with pytest.raises(ModelSpecError, match=message) as info:
            parse_config(ModelSpec("openai", "m", {"base_url": urls}))
        assert "hunter2" not in info.value.one_line() and "\n" not in info.value.one_line()
    with pytest.raises(ModelSpecError, match="endpoint_concurrency"):
        parse_config(ModelSpec("openai", "m", {"base_url": ["http://127.0.0.1:1/v1"], "endpoint_concurrency": 0}))


async def test_fake_server_queues_requests_beyond_its_concurrency_cap():
    with FakeOpenAIServer(latency_ms=50, max_concurrency=2) as srv:
        payload = {"model": "m", "prompt": "hi", "max_tokens": 2, "seed": 1}
        async with aiohttp.ClientSession() as session:
            async def one():
                async with session.post(f"{srv.base_url}/completions", json=payload) as response:
                    return response.status

            start = time.monotonic()
            assert await asyncio.gather(*(one() for _ in range(6))) == [200] * 6
            elapsed = time.monotonic() - start
        assert elapsed >= 3 * 0.05 - 0.005  # three rounds of two, 50 ms each
        assert srv.max_in_flight == 6  # arrivals, the queued ones included
        with pytest.raises(Exception, match="max_concurrency"):
            srv.configure(max_concurrency=0)


# ----- the pool on its own -------------------------------------------------------------------------
def reqs(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(PROMPT, seed=100 + i, sample_index=i, max_tokens=8) for i in range(n)]


def expected(requests) -> list[str]:
    return [expected_completion(PROMPT, seed=r.seed, model="m", max_tokens=8) for r in requests]


async def test_requests_spread_and_a_drained_endpoint_is_probed_back(servers):
    mimic = create_openai(ModelSpec("openai", "m", {"base_url": [s.base_url for s in servers], "concurrency": 6}))
    try:
        requests = reqs(24)
        assert [c.text for c in await mimic.generate(requests)] == expected(requests)
        assert all(s.max_in_flight == 2 for s in servers)  # 6 in flight, the fewest-in-flight rule: 2 each
        servers[1].stop()
        assert [c.text for c in await mimic.generate(requests)] == expected(requests)
        down = mimic.pool.endpoints[1]
        assert down.down and not down.tasks
        served = servers[1].count(status=200)
        servers[1].start()  # back on the same port: after the rest, one request probes it, then it gets its share
        await asyncio.sleep(down.down_until - time.monotonic() + 0.01)
        assert [c.text for c in await mimic.generate(requests)] == expected(requests)
        assert not down.down and servers[1].count(status=200) > served
    finally:
        await mimic.aclose()


async def test_the_pool_raises_as_one_server_only_when_no_endpoint_can_take_a_request(servers):
    for srv in servers:
        srv.configure(faults={"rate_limit": 1.0}, retry_after=0.3)
    mimic = create_openai(ModelSpec("openai", "m", {"base_url": [s.base_url for s in servers]}))
    try:
        with pytest.raises(RateLimitedError, match="every endpoint") as info:
            await mimic.generate(reqs(1))
        assert 0.2 < info.value.retry_after <= 0.3
        assert sum(s.count(status=429) for s in servers) == 3  # one try per endpoint, then the run's limiter decides
        for srv in servers:
            srv.stop()
        await asyncio.sleep(0.3)
        with pytest.raises(TransientBackendError, match="no endpoint of openai:m is reachable") as info:
            await mimic.generate(reqs(1))
        assert not isinstance(info.value, RateLimitedError)
    finally:
        await mimic.aclose()


async def test_timeouts_in_a_row_drain_a_hung_endpoint(servers):
    servers[0].configure(faults={"hang": 1.0}, hang_s=5)
    mimic = create_openai(ModelSpec("openai", "m", {"base_url": [s.base_url for s in servers], "timeout": 0.2,
                                                    "endpoint_concurrency": 3}))
    try:
        requests = reqs(12)
        assert [c.text for c in await mimic.generate(requests)] == expected(requests)
        # three hung requests drain it (a fourth, re-sent there before the third timed out, is cancelled by the drain)
        assert mimic.pool.endpoints[0].down and servers[0].count(fault="hang") in (3, 4)
    finally:
        await mimic.aclose()


# ----- whole runs ----------------------------------------------------------------------------------
@pytest.fixture
def baseline(task, tmp_path) -> pl.DataFrame:
    with FakeOpenAIServer() as srv:
        result = run_over(srv.base_url, task, tmp_path / "baseline")
    assert result.status == "complete" and result.done == PLANNED
    return table(result.run_dir)


def test_a_run_over_three_endpoints_survives_one_dying_mid_run(servers, task, tmp_path, baseline):
    victim = servers[1]
    stop = threading.Event()
    watcher = when(lambda: victim.count(status=200) >= 10, victim.stop, stop)
    try:
        result = run_over([s.base_url for s in servers], task, tmp_path / "out")
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert result.status == "complete" and result.done == PLANNED
    assert not victim.running and victim.count(status=200) >= 10
    frame = table(result.run_dir)
    assert frame.select(DRAW_KEY_COLUMNS).n_unique() == PLANNED and frame.equals(baseline)
    assert sum(s.count(status=200) for s in servers) >= PLANNED


def test_429s_on_one_endpoint_leave_the_others_at_their_cap(servers, task, tmp_path, baseline):
    cap = 3
    noisy, healthy = servers[0], servers[1:]
    for srv in servers:
        srv.configure(max_concurrency=cap, latency_ms=20)
    noisy.configure(faults={"rate_limit": 0.5}, fault_seed=1, retry_after=0.05)
    stop = threading.Event()

    def restart_peaks():  # from the first 429 on, the healthy endpoints must still fill their cap
        for srv in healthy:
            srv.reset_max_in_flight()

    watcher = when(lambda: noisy.count(status=429) >= 1, restart_peaks, stop)
    try:
        result = run_over([s.base_url for s in servers], task, tmp_path / "out", concurrency=3 * cap)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert result.status == "complete" and table(result.run_dir).equals(baseline)
    assert noisy.count(status=429) >= 3 and not noisy.retry_after_violations()
    assert [srv.max_in_flight for srv in healthy] == [cap, cap]  # not halved
    assert max(srv.count(status=200) for srv in healthy) > noisy.count(status=200)
    assert calls_of(result.run_dir)["rate_limited"] == 0  # no 429 reached the run's limiter


def test_the_cache_is_shared_whatever_the_endpoint_list(servers, task, tmp_path):
    urls = [s.base_url for s in servers]
    first = run_over(urls, task, tmp_path / "three", use_cache=True, cache_dir=tmp_path / "cache")
    assert first.status == "complete" and first.model_calls == PLANNED
    second = run_over([urls[2]], task, tmp_path / "one", use_cache=True, cache_dir=tmp_path / "cache")
    assert second.status == "complete" and second.done == PLANNED and second.model_calls == 0
    assert second.model_id == first.model_id and "127.0.0.1" not in first.model_id
    assert table(second.run_dir).equals(table(first.run_dir))
