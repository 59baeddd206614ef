"""Seeded token draws from a logits row, in vectorised numpy.

llama.cpp's ``llama_sampler_sample`` copies the whole vocabulary into a candidate array and runs a
scalar softmax over it for every token, on one core while the other idles: 2.71 ms a draw on Gemma
3's 262,144-token vocabulary. This draws from the same distribution as llama.cpp's chain
``temp -> top_p -> dist`` (the probabilities are ``exp(logit / T - max)``, summed in double
precision as llama.cpp sums them) with a few SIMD passes over the row: 0.40 ms
(``benchmarks/gguf_throughput.py`` prints both, and the whole effect).

The draw is inverse-CDF sampling: a uniform ``u`` from the request's own generator, scaled by the
total mass, located first among blocks of 256 tokens (their sums) and then inside one block, so
only one block's cumulative sum is ever formed. Each request's generator is a PCG64 seeded with its
seed, so a seed reproduces its draw whenever the logits are the same.
"""

from __future__ import annotations

import numpy as np

_BLOCK = 256  # tokens per block of the two-level search
_NUCLEUS_CANDIDATES = 256  # top tokens sorted first when looking for the nucleus (as llama.cpp's top-p)


class TokenSampler:
    """The draws of one request: temperature, then nucleus (top-p), then a seeded draw.

    Temperature 0 is greedy (the first largest logit, as ``llama_sampler_init_greedy``). The
    nucleus is the smallest set of most probable tokens whose probability reaches ``top_p``
    (at least one token), as ``llama_sampler_init_top_p(top_p, 1)`` keeps it.
    """

    def __init__(self, temperature: float, top_p: float, seed: int):
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def sample(self, logits: np.ndarray, scratch: np.ndarray | None = None) -> int:
        """One token from ``logits`` (a float row over the vocabulary; not modified).

        ``scratch`` is a float32 buffer at least as long as the row, reused across calls to spare
        an allocation per token.
        """
        if self.temperature == 0:
            return int(np.argmax(logits))
        n = logits.shape[0]
        weights = scratch[:n] if scratch is not None else np.empty(n, dtype=np.float32)
        if self.temperature != 1.0:
            np.divide(logits, np.float32(self.temperature), out=weights, casting="unsafe")
        else:
            weights[:] = logits
        np.subtract(weights, weights.max(), out=weights)
        np.exp(weights, out=weights)  # exp(logit - max): the unnormalised probabilities, max 1
        if self.top_p < 1.0:
            return self._nucleus(weights)
        return self._draw(weights)

    def _draw(self, weights: np.ndarray) -> int:
        """Index drawn in proportion to ``weights`` (non-negative, some positive)."""
        n = weights.shape[0]
        starts = np.arange(0, n, _BLOCK)
        block_cumsum = np.cumsum(np.add.reduceat(weights, starts, dtype=np.float64))
        u = self.rng.random() * block_cumsum[-1]
        block = min(int(np.searchsorted(block_cumsum, u, side="right")), len(starts) - 1)
        lo = block * _BLOCK
        inside = weights[lo : lo + _BLOCK]
        cumsum = np.cumsum(inside, dtype=np.float64)
        cumsum += block_cumsum[block - 1] if block else 0.0
        i = int(np.searchsorted(cumsum, u, side="right"))
        if i >= len(inside):  # u past the block's own sum by rounding: its last token with weight
            i = int(np.flatnonzero(inside)[-1])
        return lo + i

    def _nucleus(self, weights: np.ndarray) -> int:
        """Draw inside the nucleus: the most probable tokens until their share reaches ``top_p``."""
        total = float(weights.sum(dtype=np.float64))
        target = self.top_p * total
        n = weights.shape[0]
        order = None
        if n > _NUCLEUS_CANDIDATES:
            top = np.argpartition(-weights, _NUCLEUS_CANDIDATES - 1)[:_NUCLEUS_CANDIDATES]
            top = top[np.argsort(-weights[top], kind="stable")]
            if float(weights[top].sum(dtype=np.float64)) >= target:
                order = top
        if order is None:  # a flat distribution: the nucleus is wider than the candidates
            order = np.argsort(-weights, kind="stable")
        cumsum = np.cumsum(weights[order], dtype=np.float64)
        keep = min(int(np.searchsorted(cumsum, target, side="left")) + 1, len(order))
        kept = order[:keep]
        return int(kept[self._draw(np.ascontiguousarray(weights[kept]))])
