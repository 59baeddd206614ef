"""The openai backend (plugin mimic-harness-openai) against the fake server, through both transports."""

from __future__ import annotations

import traceback

import pytest

from harness.errors import ModelSpecError, PermanentBackendError, RateLimitedError, TransientBackendError
from harness.mimic import Capability, ChatMessage, GenerationRequest
from harness.modelspec import ModelSpec, parse_model_spec
from harness.protocols import BuildContext
from harness.testing import expected_completion

mimic_openai = pytest.importorskip("mimic_openai", reason="install plugins/mimic-openai")
from mimic_openai import create_openai  # noqa: E402
from mimic_openai.config import DEFAULT_BASE_URL, parse_config  # noqa: E402
from mimic_openai.wire import parse_retry_after  # noqa: E402

KEY = "sk-test-DO-NOT-LEAK-4f2a9c"
PROMPT = "Review: a quiet book about a lighthouse.\nRating: 4\n\nReview:"
TRANSPORTS = ["aiohttp", "sdk"]


def make(srv, transport="aiohttp", model="m", **options):
    return create_openai(ModelSpec("openai", model, {"base_url": srv.base_url, "transport": transport, **options}))


def reqs(n=4, **fields):
    return [GenerationRequest(fields.pop("prompt", PROMPT), seed=100 + i, sample_index=i, **{"max_tokens": 12, **fields})
            for i in range(n)]


@pytest.fixture
async def closing():
    """Collect mimics to close after the test."""
    mimics = []
    yield mimics.append
    for m in mimics:
        await m.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_completions_match_server_and_seeds(fake_openai_server, transport, closing):
    mimic = make(fake_openai_server, transport)
    closing(mimic)
    requests = reqs(4)
    out = await mimic.generate(requests)
    assert [c.text for c in out] == [expected_completion(PROMPT, seed=r.seed, model="m", max_tokens=12) for r in requests]
    assert len({c.text for c in out}) == 4  # distinct seeds, distinct samples
    assert [c.text for c in await mimic.generate(requests)] == [c.text for c in out]  # same seed, same sample
    records = fake_openai_server.records()
    assert len(records) == 8 and {r.path for r in records} == {"/v1/completions"}  # one HTTP request each
    assert sorted(r.seed for r in records[:4]) == [100, 101, 102, 103]
    assert records[0].params == {"max_tokens": 12, "temperature": 1.0, "top_p": 1.0, "n": 1}
    for c in out:
        assert c.finish_reason in ("stop", "length") and c.completion_tokens == len(c.text.split())
        assert c.prompt_tokens == len(PROMPT.split()) and c.logprobs is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chat_mode(fake_openai_server, transport, closing):
    mimic = make(fake_openai_server, transport, mode="chat")
    closing(mimic)
    assert Capability.CHAT in mimic.capabilities and Capability.COMPLETION not in mimic.capabilities
    messages = (ChatMessage("system", "You write reviews."), ChatMessage("user", "Write one."))
    out = await mimic.generate([GenerationRequest(messages, seed=5, max_tokens=9), GenerationRequest("plain", seed=5, max_tokens=9)])
    payload = [{"role": "system", "content": "You write reviews."}, {"role": "user", "content": "Write one."}]
    assert out[0].text == expected_completion(payload, seed=5, model="m", max_tokens=9)
    assert out[1].text == expected_completion([{"role": "user", "content": "plain"}], seed=5, model="m", max_tokens=9)
    assert {r.path for r in fake_openai_server.records()} == {"/v1/chat/completions"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sampling_params_stop_and_max_tokens(fake_openai_server, transport, closing):
    mimic = make(fake_openai_server, transport)
    closing(mimic)
    seed = next(s for s in range(200) if "\n" in expected_completion(PROMPT, seed=s, model="m", max_tokens=64))
    request = GenerationRequest(PROMPT, seed=seed, max_tokens=64, stop=("\n",), temperature=0.8, top_p=0.95)
    (out,) = await mimic.generate([request])
    assert "\n" not in out.text and out.finish_reason == "stop"
    assert out.text == expected_completion(PROMPT, seed=seed, model="m", max_tokens=64, stop=["\n"], temperature=0.8)
    assert fake_openai_server.records()[0].params == {"max_tokens": 64, "temperature": 0.8, "top_p": 0.95, "stop": ["\n"], "n": 1}
    (short,) = await mimic.generate([GenerationRequest(PROMPT, seed=1, max_tokens=2)])
    assert short.completion_tokens <= 2
    greedy = await mimic.generate([GenerationRequest(PROMPT, seed=s, max_tokens=8, temperature=0.0) for s in range(3)])
    assert len({c.text for c in greedy}) == 1  # temperature reached the server


@pytest.mark.parametrize("mode", ["completions", "chat"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_logprobs(fake_openai_server, transport, mode, closing):
    mimic = make(fake_openai_server, transport, mode=mode)
    closing(mimic)
    assert Capability.LOGPROBS in mimic.capabilities and Capability.SEEDED in mimic.capabilities
    (out,) = await mimic.generate([GenerationRequest(PROMPT, seed=3, max_tokens=6, top_logprobs=3)])
    assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens
    assert "".join(t.token for t in out.logprobs) == out.text
    for t in out.logprobs:
        assert t.logprob <= 0 and len(t.top) == 3 and t.top[t.token] == t.logprob


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_failure_is_permanent_and_never_shows_the_key(fake_openai_server, transport, closing, monkeypatch):
    fake_openai_server.configure(api_key="the-right-key")
    monkeypatch.setenv("MY_TEST_KEY", KEY)
    mimic = make(fake_openai_server, transport, api_key_env="MY_TEST_KEY")
    closing(mimic)
    with pytest.raises(PermanentBackendError) as info:
        await mimic.generate(reqs(2))
    err = info.value
    assert "HTTP 401" in err.one_line() and "MY_TEST_KEY" in err.one_line() and "\n" not in err.one_line()
    texts = [err.one_line(), str(err), repr(err), "".join(traceback.format_exception(err)),
             mimic.model_id, repr(mimic), repr(mimic.config), str(mimic.config.api_key)]
    assert not any(KEY in t for t in texts)
    fake_openai_server.configure(api_key=KEY)
    assert len(await mimic.generate(reqs(2))) == 2


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_model_and_bad_request_are_permanent(fake_openai_server, transport, closing):
    fake_openai_server.configure(models=["only-this"])
    mimic = make(fake_openai_server, transport)
    closing(mimic)
    with pytest.raises(PermanentBackendError, match="HTTP 404"):
        await mimic.generate(reqs(1))
    fake_openai_server.configure(models=None)
    with pytest.raises(PermanentBackendError, match="HTTP 400"):
        await mimic.generate([GenerationRequest(PROMPT, max_tokens=-1)])
    with pytest.raises(PermanentBackendError, match="completions mode") as info:
        await mimic.generate([GenerationRequest((ChatMessage("user", "hi"),))])
    assert "mode=chat" in info.value.one_line()


@pytest.mark.parametrize("fault,retry_format", [("rate_limit", "seconds"), ("unavailable", "seconds"), ("rate_limit", "http-date")])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rate_limits_carry_retry_after(fake_openai_server, transport, fault, retry_format, closing):
    fake_openai_server.configure(faults={fault: 1.0}, retry_after=7, retry_after_format=retry_format)
    mimic = make(fake_openai_server, transport)
    closing(mimic)
    with pytest.raises(RateLimitedError) as info:
        await mimic.generate(reqs(1))
    assert info.value.retry_after is not None
    if retry_format == "seconds":
        assert info.value.retry_after == 7
    else:
        assert 5 <= info.value.retry_after <= 8  # HTTP dates have whole seconds


@pytest.mark.parametrize("fault", ["server_error", "reset", "truncated", "non_json", "empty_choices", "bad_logprobs"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_faults_are_transient(fake_openai_server, transport, fault, closing):
    fake_openai_server.configure(faults={fault: 1.0})
    mimic = make(fake_openai_server, transport)
    closing(mimic)
    with pytest.raises(TransientBackendError) as info:
        await mimic.generate(reqs(1, top_logprobs=2))
    assert not isinstance(info.value, (RateLimitedError, PermanentBackendError))
    assert "\n" not in info.value.one_line()
    fake_openai_server.configure(faults={})
    assert len(await mimic.generate(reqs(1, top_logprobs=2))) == 1  # the same client recovers


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_timeouts_and_slow_bodies(fake_openai_server, transport, closing):
    mimic = make(fake_openai_server, transport, timeout=0.3)
    closing(mimic)
    fake_openai_server.configure(faults={"hang": 1.0})
    with pytest.raises(TransientBackendError, match="no response within 0.3s"):
        await mimic.generate(reqs(1))
    fake_openai_server.configure(faults={"slow_body": 1.0}, slow_body_ms=200)  # 8 chunks: 1.6 s in all
    with pytest.raises(TransientBackendError, match="no response"):
        await mimic.generate(reqs(1))
    fake_openai_server.configure(faults={"slow_body": 1.0}, slow_body_ms=1)
    (out,) = await mimic.generate(reqs(1))
    assert out.text == expected_completion(PROMPT, seed=100, model="m", max_tokens=12)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_dies_and_comes_back(fake_openai_server, transport, closing):
    mimic = make(fake_openai_server, transport)
    closing(mimic)
    assert len(await mimic.generate(reqs(2))) == 2
    fake_openai_server.stop()
    with pytest.raises(TransientBackendError, match="connection failed"):
        await mimic.generate(reqs(2))
    fake_openai_server.start()
    assert len(await mimic.generate(reqs(2))) == 2


async def test_partial_results_and_worst_error(fake_openai_server, closing):
    fake_openai_server.configure(faults={"server_error": 1.0}, max_faults=1)
    mimic = make(fake_openai_server, concurrency=1)  # one at a time, so the first request gets the fault
    closing(mimic)
    with pytest.raises(TransientBackendError) as info:
        await mimic.generate(reqs(4))
    assert info.value.failed == 1
    assert info.value.partial[0] is None and all(c is not None for c in info.value.partial[1:])
    fake_openai_server.configure(faults={"server_error": 0.5, "rate_limit": 0.5}, max_faults=None, retry_after=2)
    with pytest.raises(RateLimitedError):  # rate limits outrank other transient errors
        await mimic.generate(reqs(16))


async def test_concurrency_caps_requests_in_flight(fake_openai_server, closing):
    fake_openai_server.configure(latency_ms=20)
    mimic = make(fake_openai_server, concurrency=3)
    closing(mimic)
    assert len(await mimic.generate(reqs(12))) == 12
    assert fake_openai_server.max_in_flight == 3


async def test_pool_follows_the_runs_concurrency_unless_the_spec_sets_one(fake_openai_server, closing, registries):
    fake_openai_server.configure(latency_ms=20)
    ctx = BuildContext(registries=registries, concurrency=2)
    spec = ModelSpec("openai", "m", {"base_url": fake_openai_server.base_url})
    mimic = create_openai(spec, ctx)
    with_option = create_openai(ModelSpec("openai", "m", {**spec.options, "concurrency": 5}), ctx)
    without_run = create_openai(spec)
    for m in (mimic, with_option, without_run):
        closing(m)
    assert len(await mimic.generate(reqs(8))) == 8
    assert fake_openai_server.max_in_flight == 2
    assert with_option.config.concurrency == 5
    assert without_run.config.concurrency == 64  # no run, no option: the default


def test_config_defaults_env_and_errors(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ModelSpecError, match="OPENAI_API_KEY is not set") as info:
        parse_config(parse_model_spec("openai:gpt-4o-mini"))
    assert DEFAULT_BASE_URL in info.value.one_line()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    config = parse_config(parse_model_spec("openai:gpt-4o-mini"))
    assert config.base_url == DEFAULT_BASE_URL and config.transport == "aiohttp" and config.mode == "completions"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert parse_config(parse_model_spec("openai:m")).base_url == "http://127.0.0.1:9/v1"
    local = parse_config(parse_model_spec("openai:m?base_url=http://localhost:8000/v1&api_key_env=NOPE_NOT_SET"))
    assert local.api_key is None  # loopback servers need no key
    with pytest.raises(ModelSpecError, match="NOPE_NOT_SET"):
        parse_config(parse_model_spec("openai:m?base_url=https://example.invalid/v1&api_key_env=NOPE_NOT_SET"))
    from_file = parse_config(ModelSpec("openai", "m", {"base_url": "https://example.invalid/v1", "api_key": "cfg-key"}))
    assert from_file.api_key.reveal() == "cfg-key" and "cfg-key" not in repr(from_file)
    for bad in ("mode=edit", "transport=curl", "concurrency=0", "timeout=-1", "colour=blue", "base_url=ftp://x"):
        with pytest.raises(ModelSpecError):
            parse_config(parse_model_spec(f"openai:m?{bad}"))


def test_model_id_depends_on_server_and_mode_only(monkeypatch):
    monkeypatch.setenv("K", KEY)

    def mid(query):
        return create_openai(parse_model_spec(f"openai:m?{query}")).model_id

    base = "base_url=http://127.0.0.1:1/v1"
    assert mid(base) == mid(f"{base}&concurrency=8&timeout=5&transport=sdk&api_key_env=K")
    assert mid(base) != mid(f"{base}&mode=chat") != mid("base_url=http://127.0.0.1:2/v1")
    assert mid(base).startswith("openai:m#") and KEY not in mid(f"{base}&api_key_env=K")
    with pytest.raises(ModelSpecError, match="contains credentials") as info:
        create_openai(parse_model_spec("openai:m?base_url=http://user:hunter2@127.0.0.1:1/v1"))
    assert "hunter2" not in info.value.one_line()


def test_retry_after_parsing():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    assert parse_retry_after({"Retry-After": "20", "retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "-4"}) is None
    assert parse_retry_after({}) is None


def test_cli_sample_through_the_plugin(fake_openai_server, capsys, monkeypatch):
    from harness.cli import main

    monkeypatch.setenv("MIMIC_PLUGINS", "openai")  # the entry point is all it needs

    code = main(["sample", f"openai:m?base_url={fake_openai_server.base_url}", "Hello", "-n", "2", "--max-tokens", "5", "--json"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and fake_openai_server.count(status=200) == 2


async def test_many_concurrent_requests_stay_correct(fake_openai_server, closing):
    fake_openai_server.configure(latency_ms=2)  # so requests overlap on the server
    mimic = make(fake_openai_server, concurrency=64)
    closing(mimic)
    requests = [GenerationRequest(f"{PROMPT} #{i % 7}", seed=i, sample_index=i, max_tokens=8) for i in range(500)]
    out = await mimic.generate(requests)
    assert [c.text for c in out] == [expected_completion(r.prompt, seed=r.seed, model="m", max_tokens=8) for r in requests]
    assert fake_openai_server.count(status=200) == 500
    assert 1 < fake_openai_server.max_in_flight <= 64
