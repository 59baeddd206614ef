"""The gguf backend's numpy sampler (plugins/mimic-gguf ``sampling.py``) draws what llama.cpp's chain draws.

Rows are synthetic (no model), so every probability is known exactly. Seeds are fixed, so each
check is deterministic; the bounds are chi-square quantiles far in the tail, so a last-ulp
difference in ``exp`` between CPUs cannot move a verdict.
"""

from __future__ import annotations

import ctypes

import llama_cpp as C
import numpy as np
import pytest

from mimic_gguf.sampling import TokenSampler

VOCAB = 1000  # not a multiple of the 256-token block: the last block is short


def logits_row(seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    """A peaked but long-tailed float32 row, like a language model's."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(vocab) * 2.5).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x.astype(np.float64) - x.max())
    return z / z.sum()


def frequencies(draw, n: int, vocab: int = VOCAB) -> np.ndarray:
    return np.bincount([draw() for _ in range(n)], minlength=vocab) / n


def chi_square(freq: np.ndarray, probs: np.ndarray, n: int) -> tuple[float, int]:
    """Pearson's statistic over the tokens with expected count >= 5 (the rest pooled), and its df."""
    expected, observed = probs * n, freq * n
    big = expected >= 5
    e = np.append(expected[big], expected[~big].sum())
    o = np.append(observed[big], observed[~big].sum())
    keep = e > 0
    return float(((o[keep] - e[keep]) ** 2 / e[keep]).sum()), int(keep.sum()) - 1


def chi_square_bound(df: int) -> float:
    # Wilson-Hilferty approximation to the chi-square 1 - 1e-6 quantile (z = 4.75).
    z = 4.75
    return df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_draws_follow_the_tempered_softmax(temperature):
    row, n = logits_row(), 20_000
    sampler = TokenSampler(temperature, 1.0, seed=11)
    freq = frequencies(lambda: sampler.sample(row), n)
    stat, df = chi_square(freq, softmax(row / temperature), n)
    assert stat < chi_square_bound(df), (stat, df)


def test_nucleus_keeps_exactly_the_top_p_set():
    row, top_p, n = logits_row(1), 0.6, 20_000
    probs = softmax(row)
    order = np.argsort(-probs, kind="stable")
    keep = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1  # first index reaching top_p, inclusive
    nucleus = order[:keep]
    sampler = TokenSampler(1.0, top_p, seed=5)
    freq = frequencies(lambda: sampler.sample(row), n)
    assert set(np.flatnonzero(freq)) <= set(nucleus.tolist())
    inside = np.zeros(VOCAB)
    inside[nucleus] = probs[nucleus] / probs[nucleus].sum()
    stat, df = chi_square(freq, inside, n)
    assert stat < chi_square_bound(df), (stat, df)


def test_a_flat_row_takes_the_nucleus_past_the_sorted_candidates():
    # 300 equal tokens: top_p 0.95 needs 285 of them, more than the 256 sorted first.
    row = np.zeros(300, dtype=np.float32)
    sampler = TokenSampler(1.0, 0.95, seed=2)
    draws = {sampler.sample(row) for _ in range(5_000)}
    assert len(draws) == 285


def test_greedy_vanishing_nucleus_and_zero_weights():
    row = logits_row(2)
    best = int(np.argmax(row))
    assert {TokenSampler(0.0, 1.0, seed=s).sample(row) for s in range(5)} == {best}
    assert {TokenSampler(1.0, 1e-6, seed=s).sample(row) for s in range(5)} == {best}
    masked = np.full(VOCAB, -np.inf, dtype=np.float32)
    masked[[3, 700, 999]] = [0.0, 1.0, 2.0]  # only three tokens can be drawn, one in the short last block
    sampler = TokenSampler(1.0, 1.0, seed=3)
    drawn = np.bincount([sampler.sample(masked) for _ in range(6_000)], minlength=VOCAB)
    assert set(np.flatnonzero(drawn)) == {3, 700, 999}
    assert drawn[999] > drawn[700] > drawn[3]


def test_a_seed_reproduces_its_draws_and_the_row_is_untouched():
    row = logits_row(3)
    before = row.copy()
    scratch = np.empty(VOCAB + 10, dtype=np.float32)
    a, b = TokenSampler(1.3, 0.9, seed=42), TokenSampler(1.3, 0.9, seed=42)
    seq_a = [a.sample(row, scratch) for _ in range(50)]
    seq_b = [b.sample(row) for _ in range(50)]
    assert seq_a == seq_b  # with and without a scratch buffer
    assert len(set(seq_a)) > 1
    np.testing.assert_array_equal(row, before)


def llama_cpp_chain_draws(row: np.ndarray, temperature: float, top_p: float, n: int) -> np.ndarray:
    """Token frequencies of llama.cpp's own ``temp -> top_p -> dist`` chain on ``row``."""
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(temperature))
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(top_p, 1))
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(1234))
    dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
    counts = np.zeros(row.shape[0])
    try:
        for _ in range(n):
            data = np.empty(row.shape[0], dtype=dtype)
            data["id"], data["logit"], data["p"] = np.arange(row.shape[0]), row, 0.0
            array = C.llama_token_data_array(data.ctypes.data_as(ctypes.POINTER(C.llama_token_data)), len(data), -1, False)
            C.llama_sampler_apply(chain, ctypes.byref(array))
            counts[data[array.selected]["id"]] += 1
    finally:
        C.llama_sampler_free(chain)
    return counts / n


def test_same_distribution_as_llama_cpp_chain():
    # Two-sample chi-square between our draws and llama.cpp's on one row, tempered and truncated.
    row, n = logits_row(4), 20_000
    ours = frequencies(lambda s=TokenSampler(0.8, 0.9, seed=9): s.sample(row), n)
    theirs = llama_cpp_chain_draws(row, 0.8, 0.9, n)
    assert set(np.flatnonzero(ours)) <= set(np.flatnonzero(softmax(row / 0.8) > 0))
    counts = np.stack([ours * n, theirs * n])
    big = counts.sum(axis=0) >= 10
    table = np.column_stack([counts[:, big], counts[:, ~big].sum(axis=1)])
    table = table[:, table.sum(axis=0) > 0]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    df = table.shape[1] - 1
    assert stat < chi_square_bound(df), (stat, df)
    # And the supports agree: no token in one nucleus that the other never draws among the likely ones.
    likely = softmax(row / 0.8) > 0.01
    assert (ours[likely] > 0).tolist() == (theirs[likely] > 0).tolist()
