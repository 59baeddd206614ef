"""Network faults through the openai backend and the runner, against the loopback fake server.

Every run either completes with every draw (the draws table equals a fault-free run's, value for
value) or stops with a one-line, resumable error, keeping only correct draws; resuming then gives
the fault-free table. 429 and 500 under load, and SIGKILL/SIGINT, are in ``test_resume_kill.py``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from harness.errors import HarnessError, TransientBackendError
from harness.hookspecs import hookimpl
from harness.modelspec import ModelSpec
from harness.run import RunConfig, run
from harness.records import DRAW_KEY_COLUMNS
from harness.store import load_draws, scan_log
from harness.testing.fake_server import FakeOpenAIServer
from tests.helpers import books_reference_jsonl, books_task_yaml

pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")

PLUGINS = "builtin-features,builtin-sources,builtin-controls,openai"
TASK = books_task_yaml("net-books", 4, 4)
PLANNED = 2 * 4 * 4


def write_workdir(path: Path, task: str = TASK) -> Path:
    (path / "ref.jsonl").write_text(books_reference_jsonl())
    (path / "task.yaml").write_text(task)
    return path / "task.yaml"


def registries_with(*extra):
    from harness.plugins import build_registries, get_plugin_manager, register_plugin

    pm = get_plugin_manager()
    for i, plugin in enumerate(extra):
        register_plugin(pm, plugin, f"net-test-{i}")
    return build_registries(pm)


def config(server: FakeOpenAIServer, task: Path, out: Path, **kw) -> RunConfig:
    base = dict(model=ModelSpec("openai", "fake", {"base_url": server.base_url}), task=task, out_dir=out, use_cache=False,
                concurrency=8, progress="off", summary_to="off", estimators=(), retry_wait=0.001, max_attempts=12,
                request_timeout=5.0)
    return RunConfig(**{**base, **kw})


def table(run_dir: Path) -> pl.DataFrame:
    """The draws, in key order, without what differs between fault-free servers (the port is in the model id)."""
    return load_draws(run_dir).drop("cached", "run_id", "model").sort(list(DRAW_KEY_COLUMNS))


def only_run(out: Path) -> Path:
    (run_dir,) = list((out / "runs").iterdir())
    return run_dir


@pytest.fixture(autouse=True)
def _plugins(monkeypatch):
    monkeypatch.setenv("MIMIC_PLUGINS", PLUGINS)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> pl.DataFrame:
    """The fault-free draws table (the fake server's output depends only on prompt, seed and model)."""
    import os

    work = tmp_path_factory.mktemp("net-baseline")
    task = write_workdir(work)
    old = os.environ.get("MIMIC_PLUGINS")
    os.environ["MIMIC_PLUGINS"] = PLUGINS
    try:
        with FakeOpenAIServer() as server:
            result = run(config(server, task, work / "out"), registries_with())
    finally:
        if old is None:
            os.environ.pop("MIMIC_PLUGINS", None)
        else:
            os.environ["MIMIC_PLUGINS"] = old
    assert result.status == "complete" and result.done == PLANNED
    frame = table(result.run_dir)
    assert frame.height == PLANNED and frame["text"].n_unique() > PLANNED // 2
    return frame


@pytest.fixture
def server():
    with FakeOpenAIServer(hang_s=3.0) as srv:
        yield srv


@pytest.fixture
def task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_workdir(tmp_path)


def assert_subset_of(frame: pl.DataFrame, baseline: pl.DataFrame) -> None:
    """Every recorded draw equals the fault-free draw with the same key, column for column."""
    assert frame.height > 0
    keys = frame.select(DRAW_KEY_COLUMNS)
    assert keys.n_unique() == frame.height  # no duplicates
    expected = baseline.join(keys, on=list(DRAW_KEY_COLUMNS), how="semi").sort(list(DRAW_KEY_COLUMNS))
    assert expected.height == frame.height
    assert frame.sort(list(DRAW_KEY_COLUMNS)).equals(expected)


# Faults that make one response unusable; a retry of the same request then gets the right answer.
TRANSIENT = {
    "reset": {},
    "hang": {"request_timeout": 0.3},
    "slow_body": {},  # 8 chunks x 20 ms: slow but within the timeout, so no error at all
    "truncated": {},
    "non_json": {},
    "empty_choices": {},
    "bad_logprobs": {},  # draws do not ask for logprobs: the text is still right and must be kept
    "unavailable": {},  # 503 with Retry-After
}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_sporadic_fault_still_gives_every_draw_unchanged(fault, server, task, tmp_path, baseline):
    # at most 6 faults in all and 12 attempts per request: every draw must get through
    server.configure(faults={fault: 0.3}, max_faults=6, fault_seed=3, slow_body_ms=20, retry_after=0.05)
    result = run(config(server, task, tmp_path / "out", **TRANSIENT[fault]), registries_with())
    assert result.status == "complete" and result.done == PLANNED
    assert server.count(fault=fault) > 0, "the fault was never injected"
    assert table(result.run_dir).equals(baseline)
    calls = json.loads((result.run_dir / "manifest.json").read_text())["calls"]
    failed_responses = server.count(fault=fault) if fault not in ("slow_body", "bad_logprobs") else 0
    assert calls["retries"] == failed_responses  # each unusable answer was retried once, nothing else
    assert calls["calls"] == server.count()  # every attempt reached the server: none vanished


# Faults that persist: the run must stop in one line, resumably, keeping only correct draws.
PERSISTENT = {
    "reset": ("connection failed", {}),
    "hang": ("timed out after 0.3 s", {"request_timeout": 0.3}),
    "slow_body": ("timed out after 0.3 s", {"request_timeout": 0.3}),
    "truncated": ("malformed response", {}),
    "non_json": ("body is not JSON", {}),
    "empty_choices": ("no choices", {}),
}


class FaultAfter:
    """A plugin that switches a server fault on once ``after`` draws are durable."""

    def __init__(self, after: int, action):
        self.after, self.action, self.seen, self.fired = after, action, 0, False

    @hookimpl
    def sample_completed(self, event):
        self.seen += 1
        if self.seen >= self.after and not self.fired:
            self.fired = True
            self.action()


@pytest.mark.parametrize("fault", sorted(PERSISTENT))
def test_persistent_fault_stops_resumably_then_resume_completes(fault, server, task, tmp_path, baseline):
    message, options = PERSISTENT[fault]
    server.configure(slow_body_ms=200, latency_ms=5)
    # two requests in flight at most, so most draws are still to be asked for when the fault starts
    trigger = FaultAfter(6, lambda: server.configure(faults={fault: 1.0}))
    with pytest.raises(TransientBackendError) as info:
        run(config(server, task, tmp_path / "out", max_attempts=3, concurrency=2, **options), registries_with(trigger))
    line = info.value.one_line()
    assert "\n" not in line and message in line and "mimic run --resume net-books-openai-fake-" in line
    run_dir = only_run(tmp_path / "out")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and 6 <= manifest["counts"]["done"] < PLANNED
    partial = table(run_dir)
    assert partial.height == manifest["counts"]["done"]
    assert_subset_of(partial, baseline)
    assert scan_log(run_dir / "draws.jsonl").dropped_bytes == 0
    assert not (run_dir / "draws.parquet").exists() and not (run_dir / "estimates.parquet").exists()

    server.configure(faults={})
    server.clear_log()
    resumed = run(config(server, task, tmp_path / "out", resume_id=manifest["run_id"]), registries_with())
    assert resumed.status == "complete" and resumed.done == PLANNED
    assert server.count(status=200) == PLANNED - partial.height  # only the missing draws were asked for
    assert table(run_dir).equals(baseline)


def test_server_dies_mid_run_and_comes_back_on_the_same_port(server, task, tmp_path, baseline):
    port = server.port
    server.configure(latency_ms=5)
    outage = threading.Event()

    def die_and_return():
        server.stop()
        outage.set()
        time.sleep(0.4)
        server.start()  # the same port: start() reuses it

    thread = threading.Thread(target=die_and_return, daemon=True)
    trigger = FaultAfter(5, thread.start)
    result = run(config(server, task, tmp_path / "out", retry_wait=0.05, max_attempts=10, concurrency=2),
                 registries_with(trigger))
    thread.join(timeout=30)
    assert outage.is_set() and server.port == port and server.running
    assert result.status == "complete" and result.done == PLANNED
    assert table(result.run_dir).equals(baseline)
    calls = json.loads((result.run_dir / "manifest.json").read_text())["calls"]
    assert calls["transient_errors"] > 0  # the outage was seen and retried through


def test_server_stays_down_then_resume_after_restart(server, task, tmp_path, baseline):
    server.configure(latency_ms=5)
    trigger = FaultAfter(5, lambda: threading.Thread(target=server.stop, daemon=True).start())
    with pytest.raises(TransientBackendError) as info:
        run(config(server, task, tmp_path / "out", max_attempts=3, concurrency=2), registries_with(trigger))
    line = info.value.one_line()
    assert "connection failed" in line and server.base_url.rsplit("/v1", 1)[0] in line and "--resume" in line
    run_dir = only_run(tmp_path / "out")
    partial = table(run_dir)
    assert 5 <= partial.height < PLANNED
    assert_subset_of(partial, baseline)
    server.start()
    resumed = run(config(server, task, tmp_path / "out"), registries_with())
    assert resumed.status == "complete" and table(run_dir).equals(baseline)


# A header field whose values are words of the fake server's vocabulary, so the logprobs route
# (context_sizes + a backend with LOGPROBS) reaches some of them and writes a field_probs table.
SYNC_TASK = """\
name: sync-moods
version: 1
reference: {type: jsonl, path: moods.jsonl}
render:
  exemplar: "Mood: {{ mood }}\\nReview: {{ review }}"
  separator: "\\n###\\n"
  open_prefix: "Mood:"
  stop: ["###"]
features:
  mood: {type: header_field, field: Mood}
  length: {type: length_words}
proxy: {feature: mood, values: [the]}
latents: [length]
controls: [none, filter]
context_sizes: [0, 1, 2]
plan: {contexts: 6, samples_per_context: 2, exemplars: 2, seed: 0}
generation: {max_tokens: 8}
"""


def write_sync_workdir(path: Path) -> Path:
    from harness.testing.fake_payloads import _WORDS

    rng = random.Random(0)
    with open(path / "moods.jsonl", "w") as fh:
        for _ in range(40):
            review = " ".join(rng.choice(["good", "bad", "slow"]) for _ in range(4))
            fh.write(json.dumps({"mood": rng.choice(_WORDS[:20]), "review": review}) + "\n")
    (path / "task.yaml").write_text(SYNC_TASK)
    return path / "task.yaml"


def test_malformed_logprobs_are_retried_never_scored(server, tmp_path, monkeypatch):
    """The runner reads the header field's distribution from logprobs: a corrupt logprobs answer must
    be retried like a draw (one fault must not end a run whose draws are all in), never scored."""
    monkeypatch.chdir(tmp_path)
    task = write_sync_workdir(tmp_path)
    clean = run(config(server, task, tmp_path / "clean"), registries_with())
    assert clean.status == "complete"
    expected = pl.read_parquet(clean.run_dir / "field_probs.parquet")
    assert expected.height > 0 and set(expected["method"]) == {"logprobs"}
    server.clear_log()
    # once every draw is in, a third of the logprobs answers (at most 6) are corrupt
    trigger = FaultAfter(36, lambda: server.configure(faults={"bad_logprobs": 0.3}, max_faults=6, fault_seed=5))
    faulty = run(config(server, task, tmp_path / "faulty"), registries_with(trigger))
    assert faulty.status == "complete"
    corrupt = [r for r in server.records() if r.fault == "bad_logprobs" and (r.params or {}).get("logprobs")]
    assert corrupt, "no logprobs request got the fault"
    for record in corrupt:  # each corrupt answer was asked again and answered cleanly
        assert any(r.prompt_hash == record.prompt_hash and r.time >= record.time and r.status == 200 and r.fault is None
                   for r in server.records())
    assert pl.read_parquet(faulty.run_dir / "field_probs.parquet").equals(expected)
    assert table(faulty.run_dir).equals(table(clean.run_dir))


def test_logprobs_that_stay_malformed_stop_the_run_in_one_line(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = write_sync_workdir(tmp_path)
    trigger = FaultAfter(36, lambda: server.configure(faults={"bad_logprobs": 1.0}))  # once every draw is in
    with pytest.raises(HarnessError) as info:
        run(config(server, task, tmp_path / "out", max_attempts=2), registries_with(trigger))
    line = info.value.one_line()
    assert "\n" not in line and "malformed response" in line and "logprobs" in line
    assert "mimic run --resume sync-moods-openai-fake-" in line
    run_dir = only_run(tmp_path / "out")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["counts"]["done"] == 36  # not left saying "running"
    assert not (run_dir / "field_probs.parquet").exists() and not (run_dir / "estimates.parquet").exists()
    server.configure(faults={})
    seen = len(server.records())
    again = run(config(server, task, tmp_path / "out"), registries_with())
    # the draws were kept: the rerun's calls are the field-probability requests still missing (one token each)
    resent = server.records()[seen:]
    assert again.status == "complete" and again.model_calls == len(resent) > 0
    assert all((r.params or {}).get("max_tokens") == 1 for r in resent)
    assert (run_dir / "field_probs.parquet").exists()


def test_soak_small(tmp_path):
    """1,000 draws at concurrency 64 through a fake server process with 10% mixed faults."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak_benchmark", path)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    # hangs are cut by a short request timeout (a slow answer under load is retried, which is fine)
    report = soak.soak(draws=1000, concurrency=64, fault_rate=0.10, request_timeout=0.25, workdir=tmp_path)
    assert report["draws_planned"] == 1000
    assert report["draws_completed"] == 1000 and report["draws_lost"] == 0 and report["duplicates"] == 0
    assert report["wrong_values"] == 0
    assert report["faults_injected"] > 0 and report["status"] == "complete"


def test_throughput_benchmark_small(capsys):
    """A fast version of benchmarks/throughput.py: every client completes every request and the table prints."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput_benchmark", path)
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    assert throughput.main(["--requests", "64", "--concurrency", "8", "--latency-ms", "5", "--repeats", "2", "--json"]) == 0
    out = capsys.readouterr().out
    row = json.loads(out.splitlines()[0])
    for client in ("harness", "lm_eval", "aiohttp"):  # each run asserts it got all 64 answers
        assert len(row[client]["all_req_per_s"]) == 2 and row[client]["req_per_s"] > 0
    assert row["ideal"] == 8 / 0.005
    assert "h/ideal" in out and "client CPU per request at 5 ms" in out
