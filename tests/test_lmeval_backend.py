"""The ``lm-eval`` backend plugin (plugins/mimic-lmeval).

Part 1 drives lm-eval's ``local-completions`` / ``local-chat-completions`` models against the
loopback fake OpenAI server, whose output is a pure function of (prompt, seed, model, max_tokens,
stop), so every draw can be checked against :func:`expected_completion` and the server's request log.
Part 2 loads a tiny random GPT-2 that the test builds and saves itself through ``lm-eval:hf``
(skipped when torch/transformers/accelerate are not installed).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

pytest.importorskip("lm_eval")

from harness.errors import (  # noqa: E402
    ModelSpecError,
    PermanentBackendError,
    RateLimitedError,
    TransientBackendError,
)
from harness.mimic import Capability, ChatMessage, GenerationRequest  # noqa: E402
from harness.modelspec import parse_model_spec  # noqa: E402
from harness.testing.fake_payloads import expected_completion, generate  # noqa: E402
from harness.testing.fake_server import FakeOpenAIServer  # noqa: E402
# Not importorskip: without `pip install -e plugins/mimic-lmeval` this file must fail, not skip.
from mimic_lmeval.backend import create_lmeval_mimic, lm_eval_args, public_model_id  # noqa: E402

MODEL = "fake"
SECRET = "sk-test-0123456789abcdef"


@pytest.fixture
def server():
    """A fresh fake OpenAI server (its request log starts empty)."""
    with FakeOpenAIServer() as srv:
        yield srv


def completions_mimic(srv: FakeOpenAIServer, extra: str = "", model: str = MODEL):
    """``lm-eval:local-completions`` pointed at the fake server, no tokenizer."""
    spec = parse_model_spec(
        f"lm-eval:local-completions?base_url={srv.base_url}/completions&model={model}&tokenizer_backend=none{extra}"
    )
    return create_lmeval_mimic(spec)


def run(coro):
    """Run one coroutine to completion (tests here are sync so fixtures can be module-scoped)."""
    return asyncio.run(coro)


# --------------------------------------------------------------------------------------------
# Part 1: API models against the fake server


def test_registered_under_lm_eval(monkeypatch):
    from harness.factories import create_mimic
    from harness.plugins import build_registries, get_plugin_manager

    monkeypatch.setenv("MIMIC_PLUGINS", "lm-eval")  # only this plugin: others may be mid-edit
    registries = build_registries(get_plugin_manager())
    assert registries.mimics.get("lm-eval").plugin == "lm-eval"
    with pytest.raises(ModelSpecError, match="no model named 'nosuchmodel'.*hf.*local-completions"):
        create_mimic(parse_model_spec("lm-eval:nosuchmodel"), registries)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_distinct_seeds_reach_server_and_results_keep_request_order(server, concurrency):
    mimic = completions_mimic(server, f"&num_concurrent={concurrency}")
    prompts = ["Once upon a time", "The cat sat", "In the beginning"]
    requests = [
        GenerationRequest(prompt=prompts[i % 3], max_tokens=12, seed=1000 + 37 * i, sample_index=i // 3,
                          context_id=f"ctx{i % 3}")
        for i in range(12)
    ]
    out = run(mimic.generate(requests))

    sent = sorted(r.seed for r in server.records())
    assert sent == sorted(r.seed for r in requests)  # every draw's own seed, once; lm-eval's 1234 never
    assert all(r.status == 200 for r in server.records())
    for req, completion in zip(requests, out, strict=True):  # i-th result belongs to i-th request
        assert completion.text == expected_completion(req.prompt, seed=req.seed, model=MODEL, max_tokens=12)
    same_prompt = [c.text for req, c in zip(requests, out) if req.prompt == prompts[0]]
    assert len(set(same_prompt)) == len(same_prompt)  # sampled draws of one context stay distinct


def test_stop_max_tokens_and_usage_come_from_the_server(server):
    mimic = completions_mimic(server, "&num_concurrent=4")
    stop = ("\n", " the")
    requests = [GenerationRequest(prompt="Tell me", max_tokens=6, seed=s, stop=stop) for s in range(40)]
    out = run(mimic.generate(requests))
    reasons = set()
    for req, c in zip(requests, out):
        truth = generate(req.prompt, seed=req.seed, model=MODEL, max_tokens=6, stop=stop)
        assert c.text == truth.text and not any(s in c.text for s in stop)
        assert c.finish_reason == truth.finish_reason
        assert c.completion_tokens == len(truth.tokens) <= 6
        assert c.prompt_tokens == 2
        reasons.add(c.finish_reason)
    assert reasons == {"stop", "length"}  # both endings occur in 40 draws, each reported as the server said


def test_temperature_zero_is_greedy_and_sent_as_zero(server):
    mimic = completions_mimic(server)
    requests = [GenerationRequest(prompt="Greedy", max_tokens=8, temperature=0.0, seed=s) for s in (1, 2, 3)]
    texts = [c.text for c in run(mimic.generate(requests))]
    assert texts == [expected_completion("Greedy", seed=None, model=MODEL, max_tokens=8, temperature=0.0)] * 3


def test_chat_model_takes_messages_and_plain_prompts(server):
    spec = parse_model_spec(
        f"lm-eval:local-chat-completions?base_url={server.base_url}/chat/completions&model={MODEL}&num_concurrent=2"
    )
    mimic = create_lmeval_mimic(spec)
    assert {Capability.COMPLETION, Capability.CHAT} <= mimic.capabilities
    assert Capability.LOGLIKELIHOOD not in mimic.capabilities
    chat = GenerationRequest(prompt=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")), max_tokens=7, seed=5)
    plain = GenerationRequest(prompt="Hello", max_tokens=7, seed=6)
    out = run(mimic.generate([chat, plain]))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert out[0].text == expected_completion(messages, seed=5, model=MODEL, max_tokens=7)
    assert out[1].text == expected_completion([{"role": "user", "content": "Hello"}], seed=6, model=MODEL, max_tokens=7)
    assert sorted(r.seed for r in server.records()) == [5, 6]


def test_no_tokenizer_means_no_loglikelihood(server):
    mimic = completions_mimic(server)
    assert mimic.capabilities == {Capability.COMPLETION, Capability.SEEDED}
    assert mimic.context_window is None  # lm-eval's 2048 default is not the server's window
    with pytest.raises(PermanentBackendError, match="cannot score"):
        run(mimic.loglikelihood([("a", " b")]))
    with pytest.raises(PermanentBackendError, match="logprobs"):
        run(mimic.generate([GenerationRequest(prompt="x", top_logprobs=3)]))


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("rate_limit", RateLimitedError),
        ("unavailable", RateLimitedError),
        ("server_error", TransientBackendError),
        ("reset", TransientBackendError),
        ("non_json", TransientBackendError),
        ("truncated", TransientBackendError),
        ("empty_choices", TransientBackendError),
    ],
)
def test_server_faults_map_to_harness_errors(server, fault, expected, concurrency):
    server.configure(faults={fault: 1.0}, retry_after=2.5)
    mimic = completions_mimic(server, f"&num_concurrent={concurrency}")
    with pytest.raises(expected) as info:
        run(mimic.generate([GenerationRequest(prompt="p", max_tokens=4, seed=1)]))
    assert "\n" not in info.value.one_line() and info.value.hint
    if expected is RateLimitedError:
        assert info.value.retry_after == pytest.approx(2.5)
    assert server.count() == 1  # one attempt: the harness, not lm-eval, decides on retries


@pytest.mark.parametrize("concurrency", [1, 4])
def test_unknown_model_and_bad_endpoint_are_permanent(concurrency):
    with FakeOpenAIServer(models=["served"]) as srv:
        with pytest.raises(PermanentBackendError, match="HTTP 404"):
            run(completions_mimic(srv, f"&num_concurrent={concurrency}", model="other").generate([GenerationRequest(prompt="p")]))
        spec = parse_model_spec(f"lm-eval:local-completions?base_url={srv.base_url}/nowhere&model=served"
                                f"&tokenizer_backend=none&num_concurrent={concurrency}")
        with pytest.raises(PermanentBackendError, match="not found"):
            run(create_lmeval_mimic(spec).generate([GenerationRequest(prompt="p")]))


def test_unreachable_server_is_transient():
    with socket.socket() as sock:  # a port nothing listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = parse_model_spec(f"lm-eval:local-completions?base_url=http://127.0.0.1:{port}/v1/completions"
                            f"&model=m&tokenizer_backend=none")
    with pytest.raises(TransientBackendError, match="cannot reach"):
        run(create_lmeval_mimic(spec).generate([GenerationRequest(prompt="p")]))


def test_hanging_server_times_out_as_transient(server):
    server.configure(faults={"hang": 1.0}, hang_s=5.0)
    mimic = completions_mimic(server, "&timeout=1")
    with pytest.raises(TransientBackendError, match="timed out"):
        run(mimic.generate([GenerationRequest(prompt="p", seed=2)]))


def test_api_key_is_sent_and_never_leaks(monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LMEVAL_TEST_KEY", SECRET)
    monkeypatch.setenv("LMEVAL_WRONG_KEY", "sk-wrong-9876543210")
    with FakeOpenAIServer(api_key=SECRET) as srv:
        good = completions_mimic(srv, "&api_key_env=LMEVAL_TEST_KEY")
        assert run(good.generate([GenerationRequest(prompt="p", seed=9, max_tokens=3)]))[0].text == \
            expected_completion("p", seed=9, model=MODEL, max_tokens=3)
        for concurrency in (1, 4):
            bad = completions_mimic(srv, f"&api_key_env=LMEVAL_WRONG_KEY&num_concurrent={concurrency}")
            with pytest.raises(PermanentBackendError, match="HTTP 401") as info:
                run(bad.generate([GenerationRequest(prompt="p")]))
            assert "sk-wrong" not in info.value.one_line()
        direct = completions_mimic(srv, f"&api_key={SECRET}")
        assert SECRET not in direct.model_id and SECRET not in repr(direct)
    seen = caplog.text + capsys.readouterr().err  # lm-eval logs aiohttp errors with their headers
    assert "sk-wrong" not in seen and SECRET not in seen
    assert good.model_id == public_model_id(parse_model_spec(f"lm-eval:local-completions?base_url={srv.base_url}"
                                                             f"/completions&model={MODEL}&tokenizer_backend=none"))


def test_closed_mimic_refuses_work(server):
    mimic = completions_mimic(server)
    run(mimic.aclose())
    run(mimic.aclose())  # idempotent
    with pytest.raises(PermanentBackendError, match="closed"):
        run(mimic.generate([GenerationRequest(prompt="p")]))
    assert server.count() == 0


def test_model_args_are_parsed_like_lm_eval_cli():
    spec = parse_model_spec("lm-eval:local-completions?num_concurrent=8&tokenizer_backend=none&max_length='123'"
                            "&api_key_env=X&truncate=true&temperature_hint=0.5")
    args = lm_eval_args(spec.options)
    assert args == {"num_concurrent": 8, "tokenizer_backend": None, "max_length": "123", "truncate": True,
                    "temperature_hint": 0.5}
    # Concurrency and retries change how draws are fetched, not which: same model_id, same cache.
    one = parse_model_spec("lm-eval:local-completions?base_url=http://h/v1/completions&model=m&num_concurrent=1")
    many = parse_model_spec("lm-eval:local-completions?base_url=http://h/v1/completions&model=m&num_concurrent=8&max_retries=5")
    other = parse_model_spec("lm-eval:local-completions?base_url=http://h/v1/completions&model=m2")
    assert public_model_id(one) == public_model_id(many) != public_model_id(other)


def test_missing_backend_package_is_a_spec_error():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ModelSpecError, match="needs the Python package 'vllm'"):
        create_lmeval_mimic(parse_model_spec("lm-eval:vllm?pretrained=/nonexistent"))


def test_gguf_model_is_greedy_only():
    # lm-eval's gguf model hard-codes temperature 0 and sends no seed or max_tokens: refuse to sample.
    mimic = create_lmeval_mimic(parse_model_spec("lm-eval:gguf?base_url=http://127.0.0.1:9"))
    assert Capability.LOGLIKELIHOOD in mimic.capabilities and Capability.SEEDED not in mimic.capabilities
    with pytest.raises(PermanentBackendError, match="greedily"):
        run(mimic.generate([GenerationRequest(prompt="p", temperature=1.0)]))


# --------------------------------------------------------------------------------------------
# Part 2: lm-eval's hf model on a tiny GPT-2 the test builds (real loading path, CPU)

WORDS = "the cat sat on a mat . a dog ran to the park and the bird sang in a tree .".split()


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """Directory with a 2-layer random GPT-2 and a word-level tokenizer, saved with save_pretrained."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")  # lm-eval's hf model imports it
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "<eos>": 1}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", bos_token="<eos>",
                                                unk_token="<unk>", pad_token="<eos>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=1, eos_token_id=1)
    path = tmp_path_factory.mktemp("tiny-gpt2")
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_mimic(tiny_gpt2):
    """``lm-eval:hf`` loading the tiny model from disk on CPU."""
    import torch

    # A 2-layer model gains nothing from intra-op threads, and on shared cores their spin-waits
    # make it several times slower; restored afterwards for other tests in the session.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mimic = create_lmeval_mimic(parse_model_spec(f"lm-eval:hf?pretrained={tiny_gpt2}&device=cpu&dtype=float32"))
    yield mimic
    run(mimic.aclose())
    torch.set_num_threads(threads)


def test_hf_capabilities(hf_mimic):
    assert hf_mimic.capabilities == {Capability.COMPLETION, Capability.LOGLIKELIHOOD, Capability.SEEDED}
    assert hf_mimic.context_window == 64
    assert hf_mimic.model_id.startswith("lm-eval:hf#")


def test_hf_draws_are_seeded_distinct_and_in_order(hf_mimic):
    prompts = ["the cat sat on", "a dog ran to", "the bird sang in"]
    requests = [GenerationRequest(prompt=prompts[i % 3], max_tokens=8, seed=500 + i) for i in range(9)]
    out = run(hf_mimic.generate(requests))
    assert len({c.text for c in out}) >= 7  # distinct seeds give distinct samples (vocab of 19, 8 tokens)
    again = run(hf_mimic.generate(requests[::-1]))[::-1]  # another batch order, same seeds
    assert [c.text for c in again] == [c.text for c in out]  # each draw depends on its own seed only
    alone = run(hf_mimic.generate([requests[4]]))
    assert alone[0] == out[4]


def test_hf_stop_and_max_tokens(hf_mimic, tiny_gpt2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    stop = ("park", "tree")
    requests = [GenerationRequest(prompt="the cat sat on", max_tokens=6, seed=s, stop=stop) for s in range(24)]
    out = run(hf_mimic.generate(requests))
    for c in out:
        assert not any(s in c.text for s in stop)
        assert len(tokenizer(c.text, add_special_tokens=False).input_ids) <= 6
        assert c.completion_tokens <= 6 and c.prompt_tokens == 4
        if c.finish_reason == "length":
            assert c.completion_tokens == 6
    assert {c.finish_reason for c in out} == {"stop", "length"}


def test_hf_temperature_zero_ignores_seed(hf_mimic):
    requests = [GenerationRequest(prompt="a dog ran to", max_tokens=5, temperature=0.0, seed=s) for s in (1, 2)]
    first, second = run(hf_mimic.generate(requests))
    assert first.text == second.text


def test_hf_loglikelihood_matches_the_model(hf_mimic, tiny_gpt2):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2).eval()
    pairs = [("the cat", " sat on a mat"), ("a dog ran to", " the park")]
    got = run(hf_mimic.loglikelihood(pairs))
    for (context, continuation), value in zip(pairs, got, strict=True):
        ctx = tokenizer(context, add_special_tokens=False).input_ids
        cont = tokenizer(continuation, add_special_tokens=False).input_ids
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0], dim=-1)
        expected = sum(float(logprobs[len(ctx) - 1 + j, tok]) for j, tok in enumerate(cont))
        assert value == pytest.approx(expected, abs=1e-4)


def test_api_model_with_local_tokenizer_counts_and_scores(tiny_gpt2):
    # A tokenizer makes lm-eval able to score continuations, so LOGLIKELIHOOD is declared. (The fake
    # server does not echo prompt logprobs, so the scores themselves are checked on hf above.)
    with FakeOpenAIServer() as srv:
        mimic = completions_mimic(srv, f"&tokenizer={tiny_gpt2}&tokenizer_backend=huggingface"
                                       f"&tokenized_requests=false&num_concurrent=4", model=MODEL)
        assert Capability.LOGLIKELIHOOD in mimic.capabilities
        requests = [GenerationRequest(prompt="the cat sat on", max_tokens=5, seed=s) for s in range(8)]
        out = run(mimic.generate(requests))
        assert [c.text for c in out] == [expected_completion("the cat sat on", seed=s, model=MODEL, max_tokens=5)
                                         for s in range(8)]
        assert sorted(r.seed for r in srv.records()) == list(range(8))
