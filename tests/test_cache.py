"""DrawCache: distinct sampled draws stay distinct, sampling changes miss, world draws, stats/clear."""

from __future__ import annotations

import pytest

from harness.cache import DrawCache, default_cache_dir, world_id, world_key
from harness.mimic import Completion, GenerationRequest, TokenLogprob


def req(**kw) -> GenerationRequest:
    base = dict(prompt="Once upon", max_tokens=16, temperature=1.0, seed=7, sample_index=0, context_id="none/5/0")
    return GenerationRequest(**{**base, **kw})


def test_distinct_samples_and_params_get_distinct_keys():
    m = "openai:x"
    keys = {
        req().cache_key(m), req(sample_index=1).cache_key(m), req(seed=8).cache_key(m),
        req(temperature=0.7).cache_key(m), req(top_p=0.9).cache_key(m), req(max_tokens=17).cache_key(m),
        req(stop=("\n",)).cache_key(m), req(prompt="Once upon a").cache_key(m), req().cache_key("openai:y"),
        req(top_logprobs=5).cache_key(m),
    }
    assert len(keys) == 10
    # the context id only groups requests for batching: it does not change the distribution
    assert req(context_id="other").cache_key(m) == req().cache_key(m)


def test_roundtrip_hits_misses_and_persistence(tmp_path):
    lp = (TokenLogprob("a", -0.1, {"a": -0.1, "b": -2.3}),)
    first, second = Completion("one", "stop", 3, 1, lp), Completion("two", "length", 3, 16)
    with DrawCache.open(tmp_path) as cache:
        cache.put_many("m", [(req().cache_key("m"), first), (req(sample_index=1).cache_key("m"), second)])
        got = cache.get_many([req().cache_key("m"), req(sample_index=1).cache_key("m"), req(seed=9).cache_key("m")])
        assert cache.hits == 2 and cache.misses == 1
    assert got[req().cache_key("m")] == first and got[req(sample_index=1).cache_key("m")] == second
    with DrawCache.open(tmp_path) as again:  # survives reopening (another run, another process)
        assert again.get_many([req().cache_key("m")]) == {req().cache_key("m"): first}


def test_many_keys_beyond_sqlite_parameter_limit(tmp_path):
    with DrawCache.open(tmp_path) as cache:
        items = [(req(sample_index=i).cache_key("m"), Completion(f"t{i}", "stop")) for i in range(1500)]
        cache.put_many("m", items)
        found = cache.get_many([k for k, _ in items])
    assert len(found) == 1500 and found[items[1234][0]].text == "t1234"


def test_world_draws_keyed_by_world_options_text_seed(tmp_path):
    reader = world_id("reader", {"p": 0.5})
    other = world_id("reader", {"p": 0.6})
    keys = {world_key(reader, "txt", 1), world_key(reader, "txt", 2), world_key(reader, "txt2", 1), world_key(other, "txt", 1)}
    assert len(keys) == 4
    with DrawCache.open(tmp_path) as cache:
        cache.put_world(reader, [(world_key(reader, "txt", 1), True), (world_key(reader, "txt", 2), False)])
        assert cache.get_world(list(keys)) == {world_key(reader, "txt", 1): True, world_key(reader, "txt", 2): False}


def test_stats_and_clear(tmp_path):
    with DrawCache.open(tmp_path) as cache:
        cache.put_many("a", [(req().cache_key("a"), Completion("x", "stop"))])
        cache.put_many("b", [(req().cache_key("b"), Completion("y", "stop")), (req(seed=1).cache_key("b"), Completion("z", "stop"))])
        cache.put_world("w{}", [(world_key("w{}", "x", 0), True)])
        stats = cache.stats()
        assert stats["completions"] == 3 and stats["models"] == {"a": 1, "b": 2} and stats["world_draws"] == 1
        assert stats["bytes"] > 0
        assert cache.clear(model="b") == 2
        assert cache.stats()["models"] == {"a": 1}
        assert cache.clear() == 2
        assert cache.stats()["completions"] == 0 and cache.stats()["world_draws"] == 0


def test_default_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv("MIMIC_CACHE_DIR", raising=False)
    assert default_cache_dir(tmp_path) == tmp_path / "cache"
    monkeypatch.setenv("MIMIC_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir(tmp_path) == tmp_path / "elsewhere"


def test_unusable_cache_is_a_one_line_error(tmp_path):
    from harness.errors import RunStoreError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunStoreError) as info:
        DrawCache.open(blocker / "cache")
    assert "MIMIC_CACHE_DIR" in info.value.one_line()


def test_cache_command_stats_and_clear(tmp_path, capsys):
    from harness.cli import main

    with DrawCache.open(tmp_path / "c") as cache:
        cache.put_many("m1", [(req().cache_key("m1"), Completion("x", "stop"))])
        cache.put_many("m2", [(req().cache_key("m2"), Completion("y", "stop"))])
    assert main(["cache", "stats", "--cache-dir", str(tmp_path / "c"), "--json"]) == 0
    import json

    assert json.loads(capsys.readouterr().out)["models"] == {"m1": 1, "m2": 1}
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "c"), "--model", "m1"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert main(["cache", "stats", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "1 completions" in out and "m2" in out and "m1" not in out
    assert main(["cache", "stats", "--model", "m2", "--cache-dir", str(tmp_path / "c")]) == 2
