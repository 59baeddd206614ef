"""Exact log-likelihoods: log P(continuation | context) summed over the continuation's tokens.

Batch-invariant by construction: a pair's score is a function of its own tokens only, never of
the pairs it was sent with. llama.cpp's CPU kernels give a row slightly different logits in
batches of different shapes (the repacked quantized matmuls take other code paths for a few rows
than for one), so scoring never shares a decode between pairs:

- a context is decoded alone into sequence 0 of a cleared cache (cells 0..n-1, the same
  ``n_batch`` chunks every time); its last logits score every continuation's first token;
- each continuation is then decoded alone into sequence 0 right after the context (its cells
  first emptied of the previous continuation's), one ``llama_decode`` per ``n_batch`` tokens.

Scored alone, in any order, in any grouping or mixed with other contexts' pairs, a pair gives the
same number (``tests/test_gguf_backend.py`` checks it to 1e-6). Pairs with the same context still
share its prefill, so reading P(``Rating: k``) for k = 1..5 costs one context decode plus one
small decode per multi-token candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness import PermanentBackendError

from mimic_gguf.model import LoadedModel, log_softmax

SEQUENCE = 0  # every scoring decode uses one sequence id, so the KV layout never depends on others


class LoglikelihoodScorer:
    """Scores (context, continuation) pairs on one :class:`LoadedModel`."""

    def __init__(self, model: LoadedModel):
        self.model = model

    def continuation_tokens(self, context: str, context_tokens: list[int], continuation: str) -> list[int]:
        """The continuation's tokens as they follow the context.

        Tokenizing the joined text keeps the tokenizer's own split at the boundary (as lm-eval
        does); when the joint tokenization changes the context's tokens, the continuation is
        tokenized on its own instead.
        """
        if not continuation:
            return []
        whole = self.model.tokenize(context + continuation, add_bos=True)
        n = len(context_tokens)
        if len(whole) > n and whole[:n] == context_tokens:
            return whole[n:]
        return self.model.tokenize(continuation, add_bos=False)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """log P(continuation | context) for each pair, in order (0.0 for an empty continuation)."""
        model = self.model
        results = [0.0] * len(pairs)
        by_context: dict[str, list[int]] = {}
        for i, (context, _) in enumerate(pairs):
            by_context.setdefault(context, []).append(i)
        for context, members in by_context.items():
            context_tokens = model.prefix_tokens(context)
            conts = {i: self.continuation_tokens(context, context_tokens, pairs[i][1]) for i in members}
            for i, tokens in conts.items():
                if len(context_tokens) + len(tokens) > model.n_ctx:
                    raise PermanentBackendError(
                        f"loglikelihood pair {i} needs {len(context_tokens) + len(tokens)} tokens but the context holds {model.n_ctx}",
                        f"load the model with a larger n_ctx option (e.g. ?n_ctx={2 * model.n_ctx})",
                    )
            scored = [i for i in members if conts[i]]
            if not scored:
                continue
            first = self._prefill_context(context_tokens)
            for i in scored:
                results[i] = self._score_continuation(len(context_tokens), first, conts[i])
        return results

    def _prefill_context(self, context_tokens: list[int]) -> np.ndarray:
        """Decode the context alone into a cleared cache; the log-probabilities of its next token."""
        model = self.model
        model.clear()
        model.prefill(context_tokens, SEQUENCE)
        return log_softmax(model.logits_row(-1))

    def _score_continuation(self, n_context: int, first: np.ndarray, tokens: list[int]) -> float:
        """Sum of log P(token | everything before it), the first read from the context's own logits."""
        model = self.model
        total = float(first[tokens[0]])
        if len(tokens) == 1:
            return total
        # The cache holds the context (and maybe a previous continuation): keep the context only.
        model.drop_positions(SEQUENCE, n_context)
        inputs = tokens[:-1]  # token t predicts token t + 1; the last one predicts nothing we score
        step = model.config.n_batch
        for lo in range(0, len(inputs), step):
            chunk = inputs[lo : lo + step]
            model.decode([(token, n_context + lo + j, SEQUENCE, True) for j, token in enumerate(chunk)])
            for j in range(len(chunk)):
                total += float(log_softmax(model.logits_row(j))[tokens[lo + j + 1]])
        return total
