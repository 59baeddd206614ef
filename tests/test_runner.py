"""The runner end to end with scripted mimics on a small bookworld task: tables, cache, resume, errors."""

from __future__ import annotations

import asyncio
import json
import random

import polars as pl
import pytest

from harness.hookspecs import hookimpl
from harness.scripted import ScriptedMimic
from harness.errors import PermanentBackendError, TransientBackendError, UsageError
from harness.mimic import Capability
from harness.modelspec import ModelSpec
from harness.run import RunConfig, run
from harness.store import load_draws

TASK = """\
name: tiny-books
version: 3
reference: {type: bookworld, n: 120, seed: 1}
render:
  exemplar: "Rating: {{ rating }}\\nGenre: {{ genre }}\\nReview: {{ review }}"
  separator: "\\n###\\n"
  open_prefix: "Rating:"
  prompt_prefix: "Rating: {{ value }}\\n"
  stop: ["###"]
features:
  rating: {type: header_field, field: Rating, numeric: true}
  genre: {type: header_field, field: Genre, lowercase: true, values: [mystery, romance, scifi]}
  helping: {type: regex_count, pattern: '\\bhelp(s|ed|ing)?\\b', ignore_case: true, binary: true}
proxy: {feature: rating, values: [5]}
latents: [genre, helping]
world: {type: bookworld-readers, k: 2}
controls: [none, prompt, filter, reward@1]
plan: {contexts: 3, samples_per_context: 4, exemplars: 2, seed: 0}
generation: {max_tokens: 40}
"""
SPEC = ModelSpec("scripted", "books")
CONTRACT_COLUMNS = [
    "run_id", "task", "task_version", "pool", "context_id", "sample_index", "seed", "model", "n_exemplars", "exemplar_ids",
    "prompt_hash", "text", "completion", "finish_reason", "prompt_tokens", "completion_tokens", "cached",
    "rendering", "item_parsed", "feat_rating", "feat_genre", "feat_helping", "world_draws",
]


def book(request) -> str:
    """A seeded review continuing either ``Rating:`` or ``Rating: 5\\n``."""
    rng = random.Random(request.seed)
    genre = rng.choice(["mystery", "romance", "scifi"])
    body = f"Genre: {genre}\nReview: A {genre} tale." + (" Mara helps a friend." if rng.random() < 0.4 else "")
    return body if request.prompt.endswith("\n") else f" {rng.randint(1, 5)}\n{body}"


class BooksMimic(ScriptedMimic):
    """Scripted mimic with a switch for SHARED_PREFIX and injectable failures."""

    def __init__(self, shared_prefix: bool = True, fail=None):
        super().__init__("scripted:books", book)
        caps = {Capability.COMPLETION, Capability.SEEDED} | ({Capability.SHARED_PREFIX} if shared_prefix else set())
        self.capabilities = frozenset(caps)
        self.batch_sizes: list[int] = []
        self.fail = fail

    async def generate(self, requests):
        await asyncio.sleep(0)  # yield like a real backend, so the writer interleaves with calls
        if self.fail is not None:
            exc = self.fail(len(self.batch_sizes))
            if exc is not None:
                self.batch_sizes.append(0)
                raise exc
        self.batch_sizes.append(len(requests))
        return await super().generate(requests)


@pytest.fixture
def book_registries(registries, register_plugin):
    """Registries with bookworld, whether or not its entry point is installed."""
    if "bookworld" in registries.reference_sources:
        return registries
    import harness.builtin.bookworld as bookworld

    return register_plugin(bookworld)


@pytest.fixture
def task_file(tmp_path):
    path = tmp_path / "tiny-books.yaml"
    path.write_text(TASK)
    return path


def config(task_file, out, **kw) -> RunConfig:
    # one cheap estimator keeps these tests fast; the first test runs them all
    base = dict(model=SPEC, task=task_file, out_dir=out, cache_dir=out / "cache", progress="off", summary_to="off", n_boot=20,
                estimators=("control_success",))
    return RunConfig(**{**base, **kw})


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop("cached").sort(["pool", "context_id", "sample_index"])


def test_full_run_writes_every_table_and_batches_contexts(tmp_path, task_file, book_registries):
    mimic = BooksMimic()
    secret_spec = ModelSpec("scripted", "books", {"api_key": "sk-SECRET-123", "flavour": "plain"})
    result = run(config(task_file, tmp_path / "a", estimators=None, model=secret_spec), book_registries, mimic)
    assert result.status == "complete" and result.planned == result.done == 2 * 3 * 4
    # SHARED_PREFIX: one generate() call per context (2 pools x 3 contexts), each with its 4 samples
    assert mimic.batch_sizes == [4] * 6 and result.model_calls == 6
    run_dir = result.run_dir
    assert {p.name for p in run_dir.iterdir()} >= {"manifest.json", "draws.jsonl", "draws.parquet", "reference.parquet",
                                                   "estimates.parquet", "estimates.json", "summary.md", "lock"}
    draws = pl.read_parquet(run_dir / "draws.parquet")
    assert draws.columns == CONTRACT_COLUMNS
    assert draws.schema["exemplar_ids"] == pl.List(pl.Int64) and draws.schema["world_draws"] == pl.List(pl.Boolean)
    assert draws.schema["feat_genre"] == pl.Utf8 and draws.schema["feat_rating"] == pl.Float64
    assert set(draws["pool"]) == {"none", "prompt:5"} and draws["world_draws"].list.len().unique().to_list() == [3]
    assert (draws.filter(pl.col("pool") == "prompt:5")["feat_rating"] == 5.0).all()
    assert draws["text"].str.starts_with("Rating:").all() and not draws["cached"].any()
    reference = pl.read_parquet(run_dir / "reference.parquet")
    assert reference.height == 120 and reference["world_draws"].list.len().unique().to_list() == [3]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["schema_version"] == 1
    assert manifest["counts"] == {"planned": 24, "done": 24, "cached": 0}
    assert manifest["usage"]["completion_tokens"] == int(draws["completion_tokens"].sum()) > 0
    assert set(manifest["usage"]["pools"]) == {"none", "prompt:5"}
    assert {"load", "reference_world", "plan", "generate", "select", "estimate"} <= set(manifest["timings"])
    assert {c["kind"] for c in manifest["components"]} >= {"mimic", "feature", "world", "control", "estimator", "reference_source"}
    estimates = pl.read_parquet(run_dir / "estimates.parquet")
    assert estimates.columns[:6] == ["run_id", "model", "model_name", "task", "task_version", "reference_hash"]
    assert estimates.height > 0 and (estimates["run_id"] == result.run_id).all()
    assert estimates["task_version"].unique().to_list() == [3]
    assert len(json.loads((run_dir / "estimates.json").read_text())) == estimates.height
    assert "| condition |" in (run_dir / "summary.md").read_text()
    assert manifest["model"]["options"] == {"flavour": "plain"}
    for path in [*run_dir.iterdir(), *(tmp_path / "a" / "cache").iterdir()]:  # the secret is written nowhere
        assert b"sk-SECRET-123" not in path.read_bytes(), path


def test_rerun_with_shared_cache_makes_zero_model_calls(tmp_path, task_file, book_registries):
    first = run(config(task_file, tmp_path / "a", cache_dir=tmp_path / "cache"), book_registries, BooksMimic())
    mimic = BooksMimic()
    second = run(config(task_file, tmp_path / "b", cache_dir=tmp_path / "cache"), book_registries, mimic)
    assert mimic.batch_sizes == [] and second.model_calls == 0
    assert second.cached == second.done == 24 and second.usage["completion_tokens"] == 0
    assert comparable(load_draws(first.run_dir)).equals(comparable(load_draws(second.run_dir)))
    # a change of a sampling parameter misses the cache
    changed = TASK.replace("max_tokens: 40", "max_tokens: 41")
    task_file.write_text(changed)
    third_mimic = BooksMimic()
    run(config(task_file, tmp_path / "c", cache_dir=tmp_path / "cache"), book_registries, third_mimic)
    assert len(third_mimic.batch_sizes) == 6


def test_manifest_sums_sampling_time_over_invocations_that_called_the_model(tmp_path, task_file, book_registries):
    from harness.records import read_manifest

    first = run(config(task_file, tmp_path / "a", cache_dir=tmp_path / "cache"), book_registries, BooksMimic())
    sampling = read_manifest(first.run_dir).sampling
    assert sampling["model_calls"] == first.model_calls > 0 and sampling["invocations"] == 1 and sampling["seconds"] >= 0
    assert sampling["machine"]["cores"] >= 1 and sampling["machine"]["cpu"]
    again = run(config(task_file, tmp_path / "a", cache_dir=tmp_path / "cache"), book_registries, BooksMimic())
    assert again.model_calls == 0 and read_manifest(first.run_dir).sampling == sampling  # nothing sampled: unchanged


def test_no_cache_neither_reads_nor_writes(tmp_path, task_file, book_registries):
    run(config(task_file, tmp_path / "a", use_cache=False), book_registries, BooksMimic())
    assert not (tmp_path / "a" / "cache").exists()


def test_budget_stop_then_resume_equals_uninterrupted(tmp_path, task_file, book_registries):
    straight = run(config(task_file, tmp_path / "straight", use_cache=False), book_registries, BooksMimic(shared_prefix=False))
    mimic = BooksMimic(shared_prefix=False)
    stopped = run(config(task_file, tmp_path / "r", use_cache=False, max_tokens=60, concurrency=1), book_registries, mimic)
    assert stopped.status == "budget" and 0 < stopped.done < 24 and stopped.estimates is None
    manifest = json.loads((stopped.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "budget" and manifest["counts"]["done"] == stopped.done
    assert not (stopped.run_dir / "draws.parquet").exists()
    resumed_mimic = BooksMimic(shared_prefix=False)
    resumed = run(config(task_file, tmp_path / "r", use_cache=False, resume_id=stopped.run_id), book_registries, resumed_mimic)
    assert resumed.status == "complete" and resumed.run_id == stopped.run_id
    assert sum(resumed_mimic.batch_sizes) == 24 - stopped.done  # only the missing draws were generated
    assert comparable(load_draws(resumed.run_dir)).drop("run_id").equals(comparable(load_draws(straight.run_dir)).drop("run_id"))


def test_samples_override_and_one_request_per_call(tmp_path, task_file, book_registries):
    mimic = BooksMimic(shared_prefix=False)
    result = run(config(task_file, tmp_path / "a", samples=5), book_registries, mimic)
    draws = load_draws(result.run_dir)
    assert draws.group_by("pool").len()["len"].to_list() == [5, 5]
    assert mimic.batch_sizes == [1] * 10
    other = run(config(task_file, tmp_path / "a", samples=6), book_registries, BooksMimic())
    assert other.run_id != result.run_id  # the plan is part of the run id


def test_permanent_error_stops_at_once_and_the_run_resumes(tmp_path, task_file, book_registries):
    calls = []

    def fail(n):
        calls.append(n)
        return PermanentBackendError("401 unauthorized", "check the API key") if n >= 2 else None

    with pytest.raises(PermanentBackendError) as info:
        run(config(task_file, tmp_path / "a", concurrency=1), book_registries, BooksMimic(fail=fail))
    assert "mimic run --resume" in info.value.one_line() and "check the API key" in info.value.one_line()
    assert len(calls) == 3  # nothing was retried or sent after the permanent error
    runs = list((tmp_path / "a" / "runs").iterdir())
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["counts"]["done"] == 8
    again = run(config(task_file, tmp_path / "a"), book_registries, BooksMimic())
    assert again.status == "complete" and again.done == 24


def test_transient_errors_are_retried_within_the_run(tmp_path, task_file, book_registries):
    def flaky(n):
        return TransientBackendError("500 from server") if n % 3 == 1 else None

    mimic = BooksMimic(fail=flaky)
    result = run(config(task_file, tmp_path / "a", use_cache=False, retry_wait=0.001), book_registries, mimic)
    assert result.status == "complete" and result.done == 24
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["calls"]["retries"] >= 1 and manifest["calls"]["transient_errors"] == manifest["calls"]["retries"]


def test_hooks_see_every_durable_draw(tmp_path, task_file, book_registries, register_plugin):
    seen = {"started": [], "samples": [], "finished": []}

    class Recorder:
        @hookimpl
        def run_started(self, event):
            seen["started"].append(event)

        @hookimpl
        def sample_completed(self, event):
            seen["samples"].append(event)

        @hookimpl
        def run_finished(self, event):
            seen["finished"].append(event)

    registries = register_plugin(Recorder(), "recorder")
    result = run(config(task_file, tmp_path / "a"), registries, BooksMimic())
    assert [e.planned_draws for e in seen["started"]] == [24]
    assert len(seen["samples"]) == 24 and all("feat_rating" in e.features for e in seen["samples"])
    assert [(e.status, e.draws) for e in seen["finished"]] == [("complete", 24)]
    assert seen["finished"][0].run_id == result.run_id


def test_resume_id_must_match_and_budget_needs_prices(tmp_path, task_file, book_registries):
    with pytest.raises(UsageError, match="does not match"):
        run(config(task_file, tmp_path / "a", resume_id="tiny-books-other-12345678"), book_registries, BooksMimic())
    with pytest.raises(UsageError, match="needs a price"):
        run(config(task_file, tmp_path / "a", max_cost=1.0), book_registries, BooksMimic())


def test_context_sizes_add_none_draws_with_their_own_keys(tmp_path, task_file, book_registries):
    task_file.write_text(TASK + "context_sizes: [0, 1, 2]\n")
    mimic = BooksMimic()
    result = run(config(task_file, tmp_path / "a"), book_registries, mimic)
    draws = load_draws(result.run_dir)
    sizes = draws.group_by("pool", "n_exemplars").len().sort("pool", "n_exemplars").rows()
    # k=2 is the main size (already planned for `none`); 0 and 1 add `none` draws of the same contexts
    assert sizes == [("none", 0, 12), ("none", 1, 12), ("none", 2, 12), ("prompt:5", 2, 12)]
    assert draws.filter(pl.col("n_exemplars") == 0)["exemplar_ids"].list.len().max() == 0
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["plan"]["context_sizes"] == [0, 1, 2] and manifest["plan"]["n_exemplars"] == 2
    assert manifest["plan"]["contexts"] == 3 and manifest["plan"]["samples_per_context"] == 4
    assert len(mimic.batch_sizes) == 12  # one batch per (pool, size, context)


def test_disk_full_stops_cleanly_and_the_run_resumes(tmp_path, task_file, book_registries, monkeypatch):
    import errno
    import os

    from harness import store as store_mod
    from harness.errors import RunStoreError
    from harness.store import scan_log

    real_write, log_writes = os.write, []

    def write(fd, data):
        # the disk fills up after the first append to the draw log: every later write fails
        if os.readlink(f"/proc/self/fd/{fd}").endswith("draws.jsonl"):
            log_writes.append(len(data))
        if len(log_writes) > 1 or (log_writes and not os.readlink(f"/proc/self/fd/{fd}").endswith("draws.jsonl")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(store_mod.os, "write", write)
    with pytest.raises(RunStoreError) as info:
        run(config(task_file, tmp_path / "a", concurrency=1), book_registries, BooksMimic())
    monkeypatch.undo()
    assert "no space left on device" in info.value.one_line() and "resume" in info.value.one_line()
    log = next((tmp_path / "a" / "runs").glob("*/draws.jsonl"))
    scan = scan_log(log)
    assert scan.dropped_bytes == 0 and 0 < len(scan.rows) < 24  # only whole, durable lines
    again = run(config(task_file, tmp_path / "a"), book_registries, BooksMimic())
    assert again.status == "complete" and again.done == 24


def test_prices_give_costs_and_bad_price_files_are_usage_errors(tmp_path, task_file, book_registries):
    from harness.run import load_prices

    prices = tmp_path / "prices.yaml"
    prices.write_text("scripted:books: {prompt: 2.0, completion: 10.0}\n")
    result = run(config(task_file, tmp_path / "a", prices=load_prices(prices)), book_registries, BooksMimic())
    usage = result.usage
    assert usage["cost"] == pytest.approx((usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 10.0) / 1e6, abs=1e-6)
    assert usage["cost"] > 0
    prices.write_text("scripted:books: {prompt: cheap}\n")
    with pytest.raises(UsageError, match="numeric prompt and completion"):
        load_prices(prices)
    with pytest.raises(UsageError, match="does not exist"):
        load_prices(tmp_path / "missing.yaml")


def test_an_unexpected_backend_exception_fails_the_run_instead_of_losing_draws(tmp_path, task_file, book_registries):
    from harness.errors import BackendError

    def broken(n):
        return KeyError("choices") if n == 1 else None

    with pytest.raises(BackendError, match="raised KeyError") as info:
        run(config(task_file, tmp_path / "a", concurrency=1), book_registries, BooksMimic(fail=broken))
    assert "--resume" in info.value.one_line()
    manifest = json.loads(next((tmp_path / "a" / "runs").glob("*/manifest.json")).read_text())
    assert manifest["status"] == "failed" and manifest["counts"]["done"] < 24
