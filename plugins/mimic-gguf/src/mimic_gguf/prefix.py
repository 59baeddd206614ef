"""Prompts kept in the KV cache after their draws finish, so a later prompt can start from their cells.

Each cached prompt (an *entry*) holds its tokens' cells under a sequence id of its own. A new prompt
copies the cells of its longest common token prefix with any entry (``llama_memory_seq_cp`` on
positions ``[0, p)``, no recompute) and decodes only the rest; it then becomes an entry itself,
whose parent is the entry it copied from. The entries form a prefix tree, as in SGLang's
RadixAttention: an entry owns only the cells it added (positions ``[p, n)``), so the cells in use
are the sum of the entries' own cells, and freeing a leaf frees exactly its own cells.

An entry is *pinned* while a group of requests samples from it or a child entry copied from it;
only unpinned (idle) entries are evicted, least recently used first, when a prompt needs their cells
or their sequence ids, or when idle entries hold more than an eighth of the context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimic_gguf.model import LoadedModel


@dataclass(eq=False)
class PrefixEntry:
    """One cached prompt: its tokens, the sequence ids holding them, and the cells it added."""

    tokens: tuple[int, ...]
    seq: int
    own: int
    parent: PrefixEntry | None
    logits: np.ndarray  # the logits after the prompt's last token (requests joining later draw from them)
    pins: int = 0
    used: int = 0  # when it was last matched or pinned (a counter, for least-recently-used eviction)


def common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    """Length of the common token prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """The entries of one :class:`LoadedModel`, in the sequence ids after its sampling slots.

    With ``share`` off a prompt matches only an entry of exactly its own tokens, and entries are
    freed as soon as they are unpinned: a prompt's cells are shared by the requests of one group
    only (how the backend worked before; kept so a benchmark can compare).
    """

    def __init__(self, model: LoadedModel, first_seq: int, n_entries: int, share: bool):
        self.model = model
        self.share = share
        # Two sequence ids per entry: llama.cpp reuses a sliding-window cell that a single sequence
        # holds once it falls out of that sequence's window (llama_kv_cache::find_slot), which would
        # take cells a prompt sharing a shorter prefix still needs. A second holder keeps them.
        self.free_seqs = [first_seq + 2 * k for k in range(n_entries - 1, -1, -1)]
        self.entries: list[PrefixEntry] = []
        self.cells = 0  # cells the entries hold
        # Idle entries (no group samples from them) kept at most this many cells: every decode step
        # attends over all occupied cells (masked per sequence), so idle prompts slow every step.
        # A run sends the pools of one context together, so a few prompts cover the reuse.
        self.idle_budget = model.n_ctx // 8
        self.clock = 0
        self.epoch = model.clears

    def forget_if_cleared(self) -> None:
        """Drop every entry if the model's cache was cleared under us (a loglikelihood call does)."""
        if self.model.clears != self.epoch:
            self.forget()

    def forget(self) -> None:
        """Drop every entry without touching the cache (after the cache was cleared)."""
        self.free_seqs += [e.seq for e in self.entries]
        self.entries, self.cells, self.epoch = [], 0, self.model.clears

    def match(self, tokens: list[int]) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``tokens`` and that length (0: none)."""
        best, length = None, 0
        for entry in self.entries:
            if not self.share and entry.tokens != tuple(tokens):
                continue
            p = common_prefix(entry.tokens, tokens)
            if p > length:
                best, length = entry, p
        return best, length

    def pin(self, entry: PrefixEntry) -> None:
        """Keep ``entry`` (and so its ancestors) resident until :meth:`unpin`."""
        self.clock += 1
        entry.pins += 1
        entry.used = self.clock

    def unpin(self, entry: PrefixEntry) -> None:
        """Release one pin; without sharing, an unpinned entry is freed at once."""
        entry.pins -= 1
        if not self.share and entry.pins == 0:
            self._evict(entry)
        elif entry.pins == 0:
            while sum(e.own for e in self.entries if e.pins == 0) > self.idle_budget and self._evict_one():
                pass

    def can_add(self) -> bool:
        """True if :meth:`add` has a sequence id for a new entry (free, or an unpinned entry's)."""
        return bool(self.free_seqs) or any(e.pins == 0 for e in self.entries)

    def add(self, tokens: list[int], source_seq: int, parent: PrefixEntry | None, shared: int, logits: np.ndarray) -> PrefixEntry:
        """Cache the prompt that sequence ``source_seq`` holds (``shared`` cells copied from ``parent``).

        Returns the new entry, pinned once (check :meth:`can_add` first).
        """
        if not self.free_seqs:
            self._evict_one()
        seq = self.free_seqs.pop()
        self.model.copy_sequence(source_seq, seq)
        self.model.copy_sequence(source_seq, seq + 1)
        entry = PrefixEntry(tuple(tokens), seq, len(tokens) - shared, parent, logits)
        if parent is not None:
            self.pin(parent)
        self.entries.append(entry)
        self.cells += entry.own
        self.pin(entry)
        return entry

    def make_room(self, cells: int) -> bool:
        """Evict unpinned entries (least recently used first) until the entries hold at most ``cells``."""
        while self.cells > cells:
            if not self._evict_one():
                return False
        return True

    def _evict_one(self) -> bool:
        candidates = [e for e in self.entries if e.pins == 0]
        if not candidates:
            return False
        self._evict(min(candidates, key=lambda e: e.used))
        return True

    def _evict(self, entry: PrefixEntry) -> None:
        self.model.drop_sequence(entry.seq)
        self.model.drop_sequence(entry.seq + 1)
        self.entries.remove(entry)
        self.free_seqs.append(entry.seq)
        self.cells -= entry.own
        if entry.parent is not None:
            self.unpin(entry.parent)
