"""Exact log-likelihoods: log P(continuation | context) summed over the continuation's tokens.

Pairs with the same context share one prefill: the context is decoded once into sequence 0 and
copied to one sequence per continuation, and all continuations are then decoded together. Reading
P(``Rating: k``) for k = 1..5 therefore costs one context decode and one small batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.errors import PermanentBackendError

from mimic_gguf.model import LoadedModel, log_softmax


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
            for wave in self._waves(len(context_tokens), [i for i in members if conts[i]], conts):
                for i, total in zip(wave, self._score_wave(context_tokens, [conts[i] for i in wave])):
                    results[i] = total
        return results

    def _waves(self, n_context: int, members: list[int], conts: dict[int, list[int]]) -> list[list[int]]:
        waves: list[list[int]] = []
        cells = n_context
        for i in members:
            need = len(conts[i])
            if waves and len(waves[-1]) < self.model.config.max_sequences and cells + need <= self.model.n_ctx:
                waves[-1].append(i)
                cells += need
            else:
                waves.append([i])
                cells = n_context + need
        return waves

    def _score_wave(self, context_tokens: list[int], conts: list[list[int]]) -> list[float]:
        model = self.model
        model.clear()
        model.prefill(context_tokens, 0)
        first = log_softmax(model.logits_row(-1))
        totals = [float(first[tokens[0]]) for tokens in conts]
        for seq in range(1, len(conts)):
            model.copy_sequence(0, seq)
        n = len(context_tokens)
        # Entry (token, position, sequence) predicts `target` for continuation `owner`.
        entries, targets = [], []
        for seq, tokens in enumerate(conts):
            for t in range(len(tokens) - 1):
                entries.append((tokens[t], n + t, seq, True))
                targets.append((seq, tokens[t + 1]))
        step = model.batch_capacity
        for lo in range(0, len(entries), step):
            model.decode(entries[lo : lo + step])
            for k, (seq, target) in enumerate(targets[lo : lo + step]):
                totals[seq] += float(log_softmax(model.logits_row(k))[target])
        return totals
