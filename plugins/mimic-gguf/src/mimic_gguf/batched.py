"""Batched sampling with shared prefill.

Requests whose prompts tokenize identically form a group. A group's prompt is decoded once into
one sequence of a unified KV cache and copied (cells are shared, not recomputed) to one sequence
per request; then every step decodes the last token of every live sequence in one
``llama_decode`` call, and each sequence draws its next token from that step's logits with its own
sampler (``sampling.py``), seeded with the request's seed. A group joins the running batch as soon
as enough sequence slots and KV cells are free (continuous batching), so short draws do not leave
the batch half empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness import Completion, GenerationRequest, PermanentBackendError, TokenLogprob

from mimic_gguf.model import LoadedModel, log_softmax
from mimic_gguf.prefix import PrefixCache, PrefixEntry
from mimic_gguf.sampling import TokenSampler
from mimic_gguf.text import SpecialStripper, find_stop


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


def make_sampler(req: GenerationRequest) -> TokenSampler:
    """The draws of one request: temperature, then nucleus, then a draw seeded by the request.

    Temperature comes before top-p (as in Hugging Face and OpenAI), so the nucleus is taken from
    the tempered distribution.
    """
    return TokenSampler(req.temperature, req.top_p, req.seed & 0xFFFFFFFFFFFFFFFF)


@dataclass(eq=False)
class _Sequence:
    """The state of one request being sampled."""

    index: int
    request: GenerationRequest
    slot: int
    pos: int  # position of ``feed``, the token the next decode step reads
    limit: int
    prompt_tokens: int
    group: _Group
    sampler: TokenSampler
    feed: int = -1
    tokens: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # byte offset where each token's text begins
    data: bytearray = field(default_factory=bytearray)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: str | None = None
    cut: int | None = None  # character index of the first stop string
    checked: int = 0  # characters already searched for stop strings


@dataclass(eq=False)
class _Group:
    """Requests with one prompt: decoded once into a prefix entry, then admitted as slots free up."""

    tokens: list[int]
    pending: deque[int]  # request indices not yet admitted
    entry: PrefixEntry | None = None  # the cached prompt (pinned while the group runs)
    live: int = 0


@dataclass
class _State:
    """One batched run: what waits, what samples, which slots and cells are free."""

    queue: deque[_Group]
    free_slots: list[int]
    reserved: int = 0  # cells the live sequences may still fill (their token limits)
    live: list[_Sequence] = field(default_factory=list)
    done: list[tuple[int, Completion]] = field(default_factory=list)


class Feed:
    """Where a running batch takes more requests and reports finished ones (this one: neither)."""

    def take(self) -> list[tuple[list[GenerationRequest], list[list[int]]]]:
        """Requests (checked) and their prompt tokens to add to the running batch."""
        return []

    def finished(self, index: int, completion: Completion) -> None:
        """Request ``index`` (counted over the batch's requests, taken ones after the first) is done."""

    def abandoned(self, index: int) -> bool:
        """True once nobody waits for request ``index`` (its caller timed out or was cancelled)."""
        return False


class BatchedSampler:
    """Samples completions for many requests on one :class:`LoadedModel`."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.feed = Feed()  # the mimic sets its own while it serves calls
        self.strip = SpecialStripper(model.special_strings)
        config = model.config
        self.cache = PrefixCache(model, config.max_sequences, config.prefix_entries, config.prefix_sharing)
        self.prompt_tokens_decoded = 0  # prompt tokens run through the model (shared prefixes are not)
        self.scratch = np.empty(model.n_vocab, dtype=np.float32)  # the samplers' working row

    # -- planning -----------------------------------------------------------------------------
    def _limit(self, req: GenerationRequest, n_prompt: int) -> int:
        # A sequence cannot run past the context: cap it there and report "length".
        return max(1, min(req.max_tokens, self.model.n_ctx - n_prompt))

    def plan(self, prompts: Sequence[list[int]], base: int = 0) -> list[_Group]:
        """Group requests (numbered from ``base``) by prompt, in order of first appearance."""
        groups: dict[tuple[int, ...], _Group] = {}
        for i, tokens in enumerate(prompts):
            check_prompt(len(tokens), self.model.n_ctx)
            key = tuple(tokens)
            if key not in groups:
                groups[key] = _Group(list(tokens), deque())
            groups[key].pending.append(base + i)
        return list(groups.values())

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
        """Queue the groups of whatever the feed hands over, numbered after the requests so far."""
        for more_requests, more_prompts in self.feed.take():
            base = len(requests)
            requests += more_requests
            prompts += more_prompts
            queue.extend(self.plan(more_prompts, base))

    def _run(self, requests: list[GenerationRequest], prompts: list[list[int]]) -> list[tuple[int, Completion]]:
        """Continuous batching: requests join the running batch one by one as slots and cells free up.

        Cells are reserved per sequence (its token limit) and per cached prompt, so an admitted
        sequence can never run out of KV space. Between steps the feed may add requests
        (``requests`` and ``prompts`` grow); each finished one is reported to it at once.
        """
        model = self.model
        self.cache.forget_if_cleared()
        for slot in range(model.config.max_sequences):  # anything a failed run left behind
            model.drop_sequence(slot)
        state = _State(deque(self.plan(prompts)), list(range(model.config.max_sequences - 1, -1, -1)))
        try:
            while True:
                self._take_more(state.queue, requests, prompts)
                self._admit(state, requests)
                self._drop_abandoned(state)
                if not state.live:
                    if state.queue:
                        continue
                    break
                model.decode([(seq.feed, seq.pos, seq.slot, True) for seq in state.live])
                still = []
                for j, seq in enumerate(state.live):
                    seq.pos += 1
                    self._step(seq, j)
                    if seq.finish:
                        self._retire(seq, state)
                    else:
                        still.append(seq)
                state.live = still
        except BaseException:
            model.clear()  # the cache's entries are forgotten at the next run
            raise
        return state.done

    def _drop_abandoned(self, state: _State) -> None:
        """Stop sampling for requests nobody waits for any more, so they free their slots and cells."""
        for seq in [seq for seq in state.live if self.feed.abandoned(seq.index)]:
            state.live.remove(seq)
            seq.finish = "length"
            self._retire(seq, state)
        for group in state.queue:
            kept = deque(i for i in group.pending if not self.feed.abandoned(i))
            if len(kept) < len(group.pending):
                group.pending = kept
                if not kept and group.live == 0 and group.entry is not None:
                    self.cache.unpin(group.entry)
        state.queue = deque(group for group in state.queue if group.pending)

    def _retire(self, seq: _Sequence, state: _State) -> None:
        """Free a finished sequence's slot and cells, and report its completion."""
        self.model.drop_sequence(seq.slot)
        state.free_slots.append(seq.slot)
        state.reserved -= seq.limit
        group = seq.group
        group.live -= 1
        if group.live == 0 and not group.pending and group.entry is not None:
            self.cache.unpin(group.entry)
        completion = self._completion(seq)
        state.done.append((seq.index, completion))
        self.feed.finished(seq.index, completion)

    def _admit(self, state: _State, requests: Sequence[GenerationRequest]) -> None:
        """Admit waiting requests, in order, while sequence slots and cells are free."""
        while state.queue and state.free_slots:
            group = state.queue[0]
            admitted = self._join(group, state, requests) if group.entry is not None else self._start(group, state, requests)
            if not group.pending:
                state.queue.popleft()
            elif not admitted:
                return

    def _fit(self, state: _State, limits: list[int], prompt_cells: int) -> int:
        """How many of ``limits`` fit beside ``prompt_cells`` new prompt cells, evicting idle entries if needed."""
        n_ctx, cache = self.model.n_ctx, self.cache
        limits = limits[: len(state.free_slots)]
        wanted = prompt_cells + sum(limits)
        cache.make_room(max(0, n_ctx - state.reserved - wanted))
        room = n_ctx - state.reserved - cache.cells - prompt_cells
        k = 0
        while k < len(limits) and limits[k] <= room:
            room -= limits[k]
            k += 1
        return k

    def _start(self, group: _Group, state: _State, requests: Sequence[GenerationRequest]) -> int:
        """Decode a group's prompt (after the longest prefix already cached), cache it, admit members."""
        model, cache, tokens = self.model, self.cache, group.tokens
        n = len(tokens)
        entry, shared = cache.match(tokens)
        if entry is not None and shared == n:  # the same prompt is cached: join it
            cache.pin(entry)
            group.entry = entry
            return self._join(group, state, requests)
        limits = [self._limit(requests[i], n) for i in group.pending]
        if entry is not None:
            cache.pin(entry)  # kept while this group copies from it
        k = self._fit(state, limits, n - shared) if cache.can_add() else 0
        if k == 0 and entry is not None and not state.live:
            # The matched entry's cells leave no room, and nothing running will free any: start afresh.
            cache.unpin(entry)
            entry, shared = None, 0
            k = self._fit(state, limits, n) if cache.can_add() else 0
        if k == 0:
            if entry is not None:
                cache.unpin(entry)
            if not state.live:
                raise PermanentBackendError(f"no room in the KV cache for a {n}-token prompt", "raise the n_ctx option")
            return 0
        slots = [state.free_slots.pop() for _ in range(k)]
        if entry is not None:
            model.copy_positions(entry.seq, slots[0], shared)
        model.prefill(tokens[shared:], slots[0], shared)
        self.prompt_tokens_decoded += n - shared
        group.entry = cache.add(tokens, slots[0], entry, shared, model.logits_row(-1, np.float32))
        if entry is not None:
            cache.unpin(entry)
        for slot in slots[1:]:
            model.copy_sequence(slots[0], slot)
        for slot in slots:
            seq = self._sequence(group, requests, slot, n)
            self._step(seq, -1)  # from the prompt's last logits
            self._enter(seq, state)
        return k

    def _join(self, group: _Group, state: _State, requests: Sequence[GenerationRequest]) -> int:
        """Admit members of a group whose prompt is cached: copy its cells, draw from its stored last logits.

        The first token comes from the very logits the prompt's own decode produced, so it does not
        depend on whether the prompt was decoded in this call or an earlier one.
        """
        entry = group.entry
        assert entry is not None
        n = len(group.tokens)
        k = self._fit(state, [self._limit(requests[i], n) for i in group.pending], 0)
        for _ in range(k):
            seq = self._sequence(group, requests, state.free_slots.pop(), n)
            self.model.copy_positions(entry.seq, seq.slot, n)
            self._step(seq, -1, entry.logits)
            self._enter(seq, state)
        return k

    def _sequence(self, group: _Group, requests: Sequence[GenerationRequest], slot: int, pos: int) -> _Sequence:
        """The next pending member of ``group`` as a sequence in ``slot``, its sampler made."""
        i = group.pending.popleft()
        req = requests[i]
        n = len(group.tokens)
        seq = _Sequence(i, req, slot, pos, self._limit(req, n), n, group, make_sampler(req))
        group.live += 1
        return seq

    def _enter(self, seq: _Sequence, state: _State) -> None:
        """Count an admitted sequence's cells and put it in the batch (or retire it if already done)."""
        state.reserved += seq.limit
        if seq.finish:  # ended on its first token
            self._retire(seq, state)
        else:
            state.live.append(seq)

    def _step(self, seq: _Sequence, batch_index: int, logits: np.ndarray | None = None) -> None:
        """Draw one token for ``seq`` from batch entry ``batch_index`` (or stored ``logits``) and update its state."""
        model = self.model
        row = model.logits_view(batch_index) if logits is None else logits
        token = seq.sampler.sample(row, self.scratch)
        if seq.request.top_logprobs > 0:
            row = row.astype(np.float64)
            seq.logprobs.append(self._token_logprob(row, token, seq.request.top_logprobs))
        seq.tokens.append(token)
        seq.feed = token
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
