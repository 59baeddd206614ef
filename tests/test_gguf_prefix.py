"""The gguf backend's prefix cache: prompts that share a long prefix decode it once (plugins/mimic-gguf).

Texts are never compared across batch shapes or with and without sharing: llama.cpp on CPU does not
promise float-identical logits when the cache layout changes, so such a comparison would depend on
the CPU. The tests count decoded prompt tokens and check every completion's contract instead.
"""

from __future__ import annotations

import asyncio

import pytest

from harness.mimic import GenerationRequest
from harness.modelspec import parse_model_spec

from mimic_gguf.plugin import create_gguf, model_id_for

pytestmark = pytest.mark.slow

HEADER = "Reviews from a book club. Each has a star rating from 1 to 5 and a short review.\n\n"
EXEMPLARS = "".join(f"Rating: {1 + i % 5}\nReview: The plot was {'slow' if i % 2 else 'quick'} and the hero helped a friend.\n###\n"
                    for i in range(6))
CONTEXT = HEADER + EXEMPLARS
POOLS = ["Rating:", "Rating: 5\n", "Rating: 1\n"]  # the `none`, `prompt:5` and `prompt:1` endings of one context
STOPS = ("###", "\nRating:")


def run(coro):
    """Run one coroutine (tests are sync so the loaded models can be module-scoped)."""
    return asyncio.run(coro)


def pool_requests(ending: str, samples: int = 4, max_tokens: int = 10) -> list[GenerationRequest]:
    """One context's samples in one pool, as the runner sends them (one call per context and pool)."""
    return [GenerationRequest(prompt=CONTEXT + ending, max_tokens=max_tokens, seed=100 + s, stop=STOPS,
                              sample_index=s, context_id=ending) for s in range(samples)]


@pytest.fixture(scope="module")
def sharing():
    """The embedded base model at its defaults (prefix sharing on)."""
    mimic = create_gguf(parse_model_spec("gguf:default?n_threads=1"))
    yield mimic
    run(mimic.aclose())


@pytest.fixture(scope="module")
def separate():
    """The same model with prefix sharing off."""
    mimic = create_gguf(parse_model_spec("gguf:default?n_threads=1&prefix_sharing=0"))
    yield mimic
    run(mimic.aclose())


def check_completions(completions, requests) -> None:
    """Every completion keeps the request's contract: stops cut, token limit, a finish reason."""
    for c, r in zip(completions, requests, strict=True):
        assert c.finish_reason in {"stop", "length"}
        assert 1 <= c.completion_tokens <= r.max_tokens
        assert not any(s in c.text for s in r.stop), c.text
        if c.finish_reason == "length":
            assert c.completion_tokens == r.max_tokens


def decoded_by_pool_calls(mimic) -> tuple[int, list[int]]:
    """Prompt tokens decoded for the three pools of one context sent one call after another."""
    mimic.model.clear()  # start with nothing cached
    before = mimic.prompt_tokens_decoded
    lengths = []
    for ending in POOLS:
        requests = pool_requests(ending)
        check_completions(run(mimic.generate(requests)), requests)
        lengths.append(len(mimic.render_prompt(requests[0].prompt)))
    return mimic.prompt_tokens_decoded - before, lengths


def test_pools_of_one_context_decode_its_prefix_once(sharing, separate):
    shared, lengths = decoded_by_pool_calls(sharing)
    alone, _ = decoded_by_pool_calls(separate)
    assert alone == sum(lengths)  # every pool decodes its whole prompt
    # The first pool decodes its prompt; the others only the tokens after the common prefix.
    assert shared <= lengths[0] + 2 * 8, (shared, lengths)
    assert sharing.model_id == separate.model_id == model_id_for(parse_model_spec("gguf:default"))


def test_concurrent_pool_calls_share_the_prefix(sharing):
    sharing.model.clear()
    before = sharing.prompt_tokens_decoded
    calls = [pool_requests(ending) for ending in POOLS]

    async def together():
        return await asyncio.gather(*(sharing.generate(c) for c in calls))

    for completions, requests in zip(run(together()), calls):
        check_completions(completions, requests)
    n = len(sharing.render_prompt(calls[0][0].prompt))
    assert sharing.prompt_tokens_decoded - before <= n + 2 * 8


def test_a_prompt_sharing_nothing_still_works(sharing):
    run(sharing.generate(pool_requests(POOLS[0], samples=2)))  # something cached
    before = sharing.prompt_tokens_decoded
    requests = [GenerationRequest(prompt="def fibonacci(n):", max_tokens=8, seed=s) for s in range(3)]
    out = run(sharing.generate(requests))
    check_completions(out, requests)
    n = len(sharing.render_prompt(requests[0].prompt))
    assert n - 1 <= sharing.prompt_tokens_decoded - before <= n  # at most the BOS token is shared
    assert len({c.text for c in out}) >= 2


def test_a_full_cache_never_overflows_the_context():
    # A small context, more slots than its cells can serve at full length, prompts that share prefixes
    # and some that do not: admission must wait for cells (and evict idle prompts), never fail a decode.
    mimic = create_gguf(parse_model_spec("gguf:default?n_ctx=512&max_sequences=16&n_threads=1"))
    try:
        prompts = [CONTEXT[:200] + ending for ending in POOLS] + ["Once upon a time", "def main():", CONTEXT[:120] + "Rating:"]
        requests = [GenerationRequest(prompt=p, max_tokens=40, seed=7 * k + s, stop=STOPS)
                    for k, p in enumerate(prompts) for s in range(5)]
        out = run(mimic.generate(requests))
        check_completions(out, requests)
        cache = mimic._sampler.cache
        assert cache.cells <= mimic.context_window
        for entry in cache.entries:  # after the run only child entries pin their parents
            assert entry.pins == sum(1 for e in cache.entries if e.parent is entry)
        again = run(mimic.generate(requests[:5]))  # the cached prefixes still serve a later call
        check_completions(again, requests[:5])
    finally:
        run(mimic.aclose())


def test_seeds_still_target_their_draws(sharing):
    # Same seeds, same call twice: the second copies the cached prompt instead of decoding it, and
    # distinct seeds still give distinct draws (texts are not compared across the two calls).
    requests = pool_requests(POOLS[1], samples=6, max_tokens=8)
    first = run(sharing.generate(requests))
    second = run(sharing.generate(requests))
    for out in (first, second):
        check_completions(out, requests)
        # Two modes ("slow", "quick") hold about half the mass here, so only "more than one" is certain.
        assert len({c.text for c in out}) >= 2
        assert all(c.prompt_tokens == first[0].prompt_tokens for c in out)


def test_a_cancelled_call_stops_sampling(sharing, monkeypatch):
    # A runner's request timeout cancels the call: its requests must free their slots at the next
    # step instead of running to their token limit in front of everyone else's.
    rows = []
    decode = sharing.model.decode
    monkeypatch.setattr(sharing.model, "decode", lambda entries: (rows.append(len(entries)), decode(entries))[1])
    long = [GenerationRequest(prompt=CONTEXT + "Rating:", max_tokens=300, seed=s) for s in range(8)]

    async def cancel_then_ask():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sharing.generate(long), 0.3)
        return await sharing.generate(pool_requests(POOLS[2], samples=2, max_tokens=3))

    out = run(cancel_then_ask())
    check_completions(out, pool_requests(POOLS[2], samples=2, max_tokens=3))
    assert sum(rows) < 8 * 300 // 2, sum(rows)
