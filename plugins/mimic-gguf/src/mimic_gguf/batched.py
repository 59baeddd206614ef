"""Batched sampling with shared prefill.

Requests whose prompts tokenize identically form a group. A group's prompt is decoded once into
one sequence of a unified KV cache and copied (cells are shared, not recomputed) to one sequence
per request; then every step decodes the last token of every live sequence in one
``llama_decode`` call, and each sequence draws its next token from its own C-side sampler chain
seeded with the request's seed. A group joins the running batch as soon as enough sequence slots
and KV cells are free (continuous batching), so short draws do not leave the batch half empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import llama_cpp as C
import numpy as np

from harness import Completion, GenerationRequest, PermanentBackendError, TokenLogprob

from mimic_gguf.model import LoadedModel, log_softmax
from mimic_gguf.text import SpecialStripper, find_stop

_DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED means "random" to llama.cpp: never pass it


def check_request(req: GenerationRequest) -> None:
    """Reject sampling parameters llama.cpp cannot honour, with a fix."""
    if req.max_tokens < 1:
        raise PermanentBackendError(f"max_tokens must be at least 1, got {req.max_tokens}", "ask for 1 or more tokens")
    if req.temperature < 0:
        raise PermanentBackendError(f"temperature must be >= 0, got {req.temperature}", "use 0 (greedy) or a positive value")
    if not 0 < req.top_p <= 1:
        raise PermanentBackendError(f"top_p must be in (0, 1], got {req.top_p}", "use e.g. top_p 1.0 or 0.95")
    if req.top_logprobs < 0:
        raise PermanentBackendError(f"top_logprobs must be >= 0, got {req.top_logprobs}", "use 0 (none) or a positive count")


def check_prompt(n_tokens: int, n_ctx: int) -> None:
    """Reject a prompt that leaves no room in the context for even one generated token."""
    if n_tokens >= n_ctx:
        raise PermanentBackendError(
            f"prompt has {n_tokens} tokens but the context holds {n_ctx}",
            f"load the model with a larger n_ctx option (e.g. ?n_ctx={2 * n_ctx}) or shorten the prompt",
        )


def make_sampler(req: GenerationRequest):
    """A sampler chain for one request: temperature, then nucleus, then a draw seeded by the request.

    Temperature comes before top-p (as in Hugging Face and OpenAI), so the nucleus is taken from
    the tempered distribution.
    """
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    if req.temperature == 0:
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_greedy())
        return chain
    if req.temperature != 1.0:
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_temp(req.temperature))
    if req.top_p < 1.0:
        C.llama_sampler_chain_add(chain, C.llama_sampler_init_top_p(req.top_p, 1))
    seed = req.seed & 0xFFFFFFFF
    C.llama_sampler_chain_add(chain, C.llama_sampler_init_dist(seed if seed != _DEFAULT_SEED else 0))
    return chain


@dataclass(eq=False)
class _Sequence:
    """The state of one request being sampled."""

    index: int
    request: GenerationRequest
    slot: int
    pos: int
    limit: int
    prompt_tokens: int
    sampler: object = None
    tokens: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # byte offset where each token's text begins
    data: bytearray = field(default_factory=bytearray)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    cut: int | None = None  # character index of the first stop string
    checked: int = 0  # characters already searched for stop strings


@dataclass
class _Chunk:
    """Requests of one group that share one prefill (at most ``max_sequences`` of them)."""

    tokens: list[int]
    members: list[int]  # request indices
    cells: int  # KV cells the chunk may use: prompt + every member's token limit


class Feed:
    """Where a running batch takes more requests and reports finished ones (this one: neither)."""

    def take(self) -> list[tuple[list[GenerationRequest], list[list[int]]]]:
        """Requests (checked) and their prompt tokens to add to the running batch."""
        return []

    def finished(self, index: int, completion: Completion) -> None:
        """Request ``index`` (counted over the batch's requests, taken ones after the first) is done."""


class BatchedSampler:
    """Samples completions for many requests on one :class:`LoadedModel`."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.feed = Feed()  # the mimic sets its own while it serves calls
        self.strip = SpecialStripper(model.special_strings)

    # -- planning -----------------------------------------------------------------------------
    def _limit(self, req: GenerationRequest, n_prompt: int) -> int:
        # A sequence cannot run past the context: cap it there and report "length".
        return max(1, min(req.max_tokens, self.model.n_ctx - n_prompt))

    def plan(self, requests: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> list[_Chunk]:
        """Group requests by prompt and split each group into chunks that fit the context alone."""
        n_ctx, max_seqs = self.model.n_ctx, self.model.config.max_sequences
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, tokens in enumerate(prompts):
            check_prompt(len(tokens), n_ctx)
            groups.setdefault(tuple(tokens), []).append(i)
        chunks: list[_Chunk] = []
        for key, members in groups.items():
            n_prompt, current, cells = len(key), [], len(key)
            for i in members:
                need = self._limit(requests[i], n_prompt)
                if current and (len(current) == max_seqs or cells + need > n_ctx):
                    chunks.append(_Chunk(list(key), current, cells))
                    current, cells = [], n_prompt
                current.append(i)
                cells += need
            chunks.append(_Chunk(list(key), current, cells))
        return chunks

    # -- sampling -----------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], prompts: Sequence[list[int]]) -> list[Completion]:
        """One completion per request, in order; ``prompts`` are the requests' prompt tokens.

        While it runs, :attr:`feed` may hand it more requests (they join the batch as slots free up)
        and hears of every request as it finishes; only the first requests' completions are returned.
        """
        for req in requests:
            check_request(req)
        requests, prompts = list(requests), list(prompts)
        n = len(requests)
        results: list[Completion | None] = [None] * n
        for index, completion in self._run(requests, prompts):
            if index < n:
                results[index] = completion
        return results  # type: ignore[return-value]

    def _take_more(self, queue: deque, requests: list[GenerationRequest], prompts: list[list[int]]) -> None:
        """Queue the chunks of whatever the feed hands over, numbered after the requests so far."""
        for more_requests, more_prompts in self.feed.take():
            base = len(requests)
            requests += more_requests
            prompts += more_prompts
            for chunk in self.plan(more_requests, more_prompts):
                chunk.members = [base + i for i in chunk.members]
                queue.append(chunk)

    def _run(self, requests: list[GenerationRequest], prompts: list[list[int]]) -> list[tuple[int, Completion]]:
        """Continuous batching: a chunk joins the running batch as soon as its slots and cells are free.

        Cells are reserved per chunk (prompt plus every member's token limit) until its last member
        finishes, so an admitted chunk can never run out of KV space. Between steps the feed may add
        requests (``requests`` and ``prompts`` grow); each finished one is reported to it at once.
        """
        model = self.model
        model.clear()
        queue = deque(self.plan(requests, prompts))
        free_slots = list(range(model.config.max_sequences - 1, -1, -1))
        reserved = 0
        owners: dict[int, list] = {}  # request index -> [chunk cells, members still live] (shared per chunk)
        done: list[tuple[int, Completion]] = []
        live: list[_Sequence] = []

        def retire(seq: _Sequence) -> None:
            nonlocal reserved
            model.drop_sequence(seq.slot)
            free_slots.append(seq.slot)
            C.llama_sampler_free(seq.sampler)
            seq.sampler = None
            owner = owners.pop(seq.index)
            owner[1] -= 1
            if owner[1] == 0:
                reserved -= owner[0]
            completion = self._completion(seq)
            done.append((seq.index, completion))
            self.feed.finished(seq.index, completion)

        try:
            while True:
                self._take_more(queue, requests, prompts)
                while queue and len(queue[0].members) <= len(free_slots) and reserved + queue[0].cells <= model.n_ctx:
                    chunk = queue.popleft()
                    reserved += chunk.cells
                    owner = [chunk.cells, len(chunk.members)]
                    admitted = self._admit(chunk, requests, [free_slots.pop() for _ in chunk.members])
                    for seq in admitted:
                        owners[seq.index] = owner
                    live += [seq for seq in admitted if not seq.finish]
                    for seq in admitted:
                        if seq.finish:  # ended on its first token
                            retire(seq)
                if not live:
                    if queue:
                        continue
                    break
                model.decode([(seq.tokens[-1], seq.pos, seq.slot, True) for seq in live])
                still = []
                for j, seq in enumerate(live):
                    seq.pos += 1
                    self._step(seq, j)
                    if seq.finish:
                        retire(seq)
                    else:
                        still.append(seq)
                live = still
        finally:
            for seq in live:
                if seq.sampler is not None:
                    C.llama_sampler_free(seq.sampler)
                    seq.sampler = None
        return done

    def _admit(self, chunk: _Chunk, requests: Sequence[GenerationRequest], slots: list[int]) -> list[_Sequence]:
        """Prefill a chunk's prompt once, share it with every member, and draw their first tokens."""
        model = self.model
        n_prompt = len(chunk.tokens)
        model.prefill(chunk.tokens, slots[0])
        seqs = []
        for i, slot in zip(chunk.members, slots):
            req = requests[i]
            seq = _Sequence(i, req, slot, n_prompt, self._limit(req, n_prompt), n_prompt)
            seq.sampler = make_sampler(req)
            seqs.append(seq)
            if slot != slots[0]:
                model.copy_sequence(slots[0], slot)
            self._step(seq, -1)  # from the prompt's last logits
        return seqs

    def _step(self, seq: _Sequence, batch_index: int) -> None:
        """Draw one token for ``seq`` from batch entry ``batch_index`` and update its state."""
        model = self.model
        token = C.llama_sampler_sample(seq.sampler, model.ctx, batch_index)
        if seq.request.top_logprobs > 0:
            seq.logprobs.append(self._token_logprob(model.logits_row(batch_index), token, seq.request.top_logprobs))
        seq.tokens.append(token)
        seq.starts.append(len(seq.data))
        if model.is_eog(token):
            seq.finish = "stop"
            return
        seq.data += model.piece(token)
        stops = seq.request.stop
        if stops:
            text = seq.data.decode("utf-8", errors="ignore")
            longest = max(len(s) for s in stops)
            hit = find_stop(text, stops, max(0, seq.checked - longest + 1))
            seq.checked = len(text)
            if hit >= 0:
                seq.cut, seq.finish = hit, "stop"
                return
        if len(seq.tokens) >= seq.limit:
            seq.finish = "length"

    def _token_logprob(self, logits: np.ndarray, token: int, k: int) -> TokenLogprob:
        """The sampled token's logprob and the top-``k`` alternatives, at temperature 1."""
        logprobs = log_softmax(logits)
        k = min(k, logprobs.shape[0])
        top_ids = np.argpartition(-logprobs, k - 1)[:k]
        top_ids = top_ids[np.argsort(-logprobs[top_ids], kind="stable")]
        top: dict[str, float] = {}
        for tid in top_ids:
            top.setdefault(self.model.token_text(int(tid)), float(logprobs[tid]))
        return TokenLogprob(self.model.token_text(token), float(logprobs[token]), top)

    def _completion(self, seq: _Sequence) -> Completion:
        text = seq.data.decode("utf-8", errors="ignore")
        logprobs = seq.logprobs
        if seq.cut is not None:
            text = text[: seq.cut]
            kept_bytes = len(text.encode("utf-8"))
            logprobs = logprobs[: sum(1 for start in seq.starts if start < kept_bytes)]
        return Completion(
            text=self.strip(text),
            finish_reason=seq.finish or "length",
            prompt_tokens=seq.prompt_tokens,
            completion_tokens=len(seq.tokens),
            logprobs=tuple(logprobs) if seq.request.top_logprobs > 0 else None,
        )
