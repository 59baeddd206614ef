"""The harness.testing kit: the fake OpenAI server and the pytest fixtures."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from harness.errors import UsageError
from harness.hookspecs import hookimpl
from harness.mimic import GenerationRequest
from harness.testing import FAULTS, FakeOpenAIServer, expected_completion, prompt_hash, start_fake_server_process


def post(url: str, body: dict, key: str | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    """POST JSON with the standard library; returns (status, headers, body)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def complete(srv, **fields):
    body = {"model": "m", "prompt": "Once upon a time", "seed": 1, "max_tokens": 12, **fields}
    status, headers, raw = post(srv.base_url + "/completions", body)
    return status, headers, raw


def test_output_is_deterministic_in_prompt_seed_model(fake_openai_server):
    srv = fake_openai_server
    texts = {}
    for seed in (1, 2):
        for model in ("a", "b"):
            status, _, raw = complete(srv, seed=seed, model=model)
            assert status == 200
            texts[seed, model] = json.loads(raw)["choices"][0]["text"]
    assert len(set(texts.values())) == 4
    assert json.loads(complete(srv, seed=1, model="a")[2])["choices"][0]["text"] == texts[1, "a"]
    assert texts[1, "a"] == expected_completion("Once upon a time", seed=1, model="a", max_tokens=12)
    # Greedy decoding ignores the seed.
    greedy = {json.loads(complete(srv, seed=s, temperature=0)[2])["choices"][0]["text"] for s in range(5)}
    assert len(greedy) == 1


def test_max_tokens_stop_usage_and_n(fake_openai_server):
    srv = fake_openai_server
    data = json.loads(complete(srv, max_tokens=3, n=3, seed=7)[2])
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in data["choices"]}) == 3
    for c in data["choices"]:
        assert len(c["text"].split()) <= 3
    assert data["usage"]["completion_tokens"] == sum(len(c["text"].split()) for c in data["choices"])
    assert data["usage"]["prompt_tokens"] == 4
    seed = next(s for s in range(100) if "\n" in expected_completion("Once upon a time", seed=s, model="m", max_tokens=200))
    long = json.loads(complete(srv, max_tokens=200, seed=seed)[2])["choices"][0]
    assert "\n" in long["text"]  # so the stop test below cuts something
    cut = json.loads(complete(srv, max_tokens=200, seed=seed, stop=["\n"])[2])["choices"][0]
    assert cut["finish_reason"] == "stop" and "\n" not in cut["text"]
    assert long["text"].startswith(cut["text"])


def test_logprobs_completions_and_chat(fake_openai_server):
    srv = fake_openai_server
    choice = json.loads(complete(srv, logprobs=3, max_tokens=6)[2])["choices"][0]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert len(lp["token_logprobs"]) == len(lp["tokens"]) == len(lp["top_logprobs"])
    assert all(len(top) == 3 for top in lp["top_logprobs"])
    assert all(v <= 0 for v in lp["token_logprobs"])
    without = json.loads(complete(srv, max_tokens=6)[2])["choices"][0]
    assert without["text"] == choice["text"] and without["logprobs"] is None
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 2, "max_tokens": 5,
            "logprobs": True, "top_logprobs": 2}
    status, _, raw = post(srv.base_url + "/chat/completions", body)
    chat = json.loads(raw)["choices"][0]
    assert status == 200 and chat["message"]["role"] == "assistant"
    assert "".join(t["token"] for t in chat["logprobs"]["content"]) == chat["message"]["content"]
    assert all(len(t["top_logprobs"]) == 2 for t in chat["logprobs"]["content"])


def test_models_auth_unknown_model_and_bad_request(fake_openai_server):
    srv = fake_openai_server
    with urllib.request.urlopen(srv.base_url + "/models", timeout=10) as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "fake-model"
    srv.configure(api_key="k1", models=["good"])
    status, _, raw = complete(srv, model="good")
    assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    status, _, _ = post(srv.base_url + "/completions", {"model": "good", "prompt": "x"}, key="k1")
    assert status == 200
    status, _, raw = post(srv.base_url + "/completions", {"model": "bad", "prompt": "x"}, key="k1")
    assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    status, _, _ = post(srv.base_url + "/completions", {"model": "good", "prompt": ["not", "a", "string"]}, key="k1")
    assert status == 400
    assert srv.count(status=401) == 1 and srv.count(status=404) == 1 and srv.count(status=400) == 1


@pytest.mark.parametrize("fault,status", [("rate_limit", 429), ("unavailable", 503), ("server_error", 500)])
def test_status_faults(fake_openai_server, fault, status):
    srv = fake_openai_server
    srv.configure(faults={fault: 1.0}, retry_after=3)
    code, headers, _ = complete(srv)
    assert code == status
    if status != 500:
        assert headers["Retry-After"] == "3"
    assert srv.count(fault=fault) == 1


@pytest.mark.parametrize("fault", ["truncated", "non_json", "empty_choices", "bad_logprobs"])
def test_body_faults(fake_openai_server, fault):
    srv = fake_openai_server
    srv.configure(faults={fault: 1.0})
    code, _, raw = complete(srv, logprobs=2)
    assert code == 200
    if fault in ("truncated", "non_json"):
        with pytest.raises(ValueError):
            json.loads(raw)
        return
    data = json.loads(raw)
    if fault == "empty_choices":
        assert data["choices"] == []
    else:
        lp = data["choices"][0]["logprobs"]
        assert len(lp["tokens"]) != len(lp["token_logprobs"]) or not all(isinstance(v, float) for v in lp["token_logprobs"])


def test_reset_hang_and_slow_body(fake_openai_server):
    srv = fake_openai_server
    srv.configure(faults={"reset": 1.0})
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
        complete(srv)
    srv.configure(faults={"hang": 1.0})
    with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
        post(srv.base_url + "/completions", {"model": "m", "prompt": "x"}, timeout=0.3)
    srv.configure(faults={"slow_body": 1.0}, slow_body_ms=5)
    code, _, raw = complete(srv)
    assert code == 200 and json.loads(raw)["choices"][0]["text"] == expected_completion(
        "Once upon a time", seed=1, model="m", max_tokens=12)
    assert srv.count(fault="reset") == 1 and srv.count(fault="hang") == 1 and srv.count(fault="slow_body") == 1


def test_fault_rates_are_seeded_and_capped():
    def pattern(seed):
        with FakeOpenAIServer(faults={"server_error": 0.5}, fault_seed=seed) as srv:
            return [complete(srv, seed=i)[0] for i in range(12)]

    first = pattern(3)
    assert first == pattern(3)
    assert {500, 200} <= set(first)
    with FakeOpenAIServer(faults={"server_error": 1.0}, max_faults=2) as srv:
        assert [complete(srv)[0] for _ in range(4)] == [500, 500, 200, 200]


def test_retry_after_violations_are_detected(fake_openai_server):
    srv = fake_openai_server
    srv.configure(faults={"rate_limit": 1.0}, max_faults=1, retry_after=30)
    assert complete(srv, seed=5)[0] == 429
    assert complete(srv, seed=5)[0] == 200  # re-sent at once: far sooner than 30 s
    assert len(srv.retry_after_violations()) == 1
    srv.clear_log()
    srv.configure(faults={"rate_limit": 1.0}, max_faults=1, retry_after=0.05)
    assert complete(srv, seed=6)[0] == 429
    time.sleep(0.1)  # wait longer than Retry-After, as a client should
    assert complete(srv, seed=6)[0] == 200
    assert srv.retry_after_violations() == []
    assert [r.retry_after_ok for r in srv.records()] == [None, True]


def test_http_date_retry_after(fake_openai_server):
    srv = fake_openai_server
    srv.configure(faults={"rate_limit": 1.0}, retry_after=2, retry_after_format="http-date")
    _, headers, _ = complete(srv)
    assert headers["Retry-After"].endswith("GMT")


def test_stop_and_restart_on_the_same_port(fake_openai_server):
    srv = fake_openai_server
    port = srv.port
    assert complete(srv)[0] == 200
    srv.stop()
    assert not srv.running
    with pytest.raises((ConnectionError, urllib.error.URLError, OSError)):
        complete(srv)
    srv.start()
    assert srv.port == port and complete(srv)[0] == 200
    srv.restart()
    assert srv.port == port and complete(srv)[0] == 200


def test_request_log_fields(fake_openai_server):
    srv = fake_openai_server
    complete(srv, seed=9, temperature=0.7, top_p=0.9, stop=["\n"])
    (record,) = srv.records()
    assert record.path == "/v1/completions" and record.model == "m" and record.seed == 9 and record.status == 200
    assert record.prompt_hash == prompt_hash("Once upon a time")
    assert record.params == {"max_tokens": 12, "temperature": 0.7, "top_p": 0.9, "stop": ["\n"]}
    assert srv.max_in_flight == 1


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="unknown fault"):
        FakeOpenAIServer(faults={"explode": 0.1})
    with pytest.raises(UsageError, match="sum to at most 1"):
        FakeOpenAIServer(faults={"reset": 0.7, "hang": 0.7})
    with pytest.raises(UsageError, match="unknown fake server setting"):
        FakeOpenAIServer(latency=5)
    assert "rate_limit" in FAULTS


def test_process_mode_serves_and_stops():
    with start_fake_server_process(api_key="pk", models=["p"]) as proc:
        url = proc.base_url
        assert post(url + "/completions", {"model": "p", "prompt": "hi", "seed": 1}, key="pk")[0] == 200
        assert post(url + "/completions", {"model": "p", "prompt": "hi"})[0] == 401
        assert proc.stats()["by_status"] == {"200": 1, "401": 1}
    assert proc.process.poll() is not None


@pytest.mark.parametrize("fake_openai_server", [{"api_key": "param-key"}], indirect=True)
def test_fixture_accepts_settings(fake_openai_server):
    assert fake_openai_server.settings.api_key == "param-key"


class ShoutPlugin:
    """A plugin object defined in a test."""

    @staticmethod
    @hookimpl
    def register_features(register):
        register("test-kit-length", lambda options, ctx: None, "a feature from a test")


def test_register_plugin_fixture(register_plugin, registries):
    assert "test-kit-length" not in registries.features
    fresh = register_plugin(ShoutPlugin, name="kit-test")
    assert fresh.features.get("test-kit-length").plugin == "kit-test"
    assert "scripted" in fresh.mimics


def test_plugin_manager_is_fresh_per_test(plugin_manager):
    assert plugin_manager.get_plugin("kit-test") is None


async def test_scripted_mimic_fixture(scripted_mimic):
    cycle = scripted_mimic(outputs=["a", "b"])
    out = await cycle.generate([GenerationRequest("p", sample_index=i) for i in range(3)])
    assert [c.text for c in out] == ["a", "b", "a"]
    planted = scripted_mimic(distribution={"x": 0.5, "y": 0.5})
    draws = await planted.generate([GenerationRequest("p", seed=s) for s in range(40)])
    assert {c.text for c in draws} == {"x", "y"}
    again = await planted.generate([GenerationRequest("p", seed=s) for s in range(40)])
    assert [c.text for c in again] == [c.text for c in draws]
    fn = scripted_mimic(fn=lambda r: f"seed {r.seed}")
    assert (await fn.generate([GenerationRequest("p", seed=4)]))[0].text == "seed 4"
    with pytest.raises(UsageError):
        scripted_mimic(outputs=["a"], text="b")
