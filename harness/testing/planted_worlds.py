"""Planted worlds for the forcing-set bound check: one whose draws are exchangeable, one whose are not.

Both judge a text by whether it holds a marked word (``pattern``, by default bookworld's helping
sentence "... helps ..."): rho(x) = ``p_match`` when it does, ``p_other`` when not. With
``p_match = 1`` the marked texts are a planted forcing set X_F, known exactly.

- ``planted-judge`` (:class:`PlantedJudge`): each draw is an independent Bernoulli(rho(x)) keyed
  on its seed, so repeated draws are i.i.d. given x, as the essay's bound assumes. Reading the
  bound from draws the selection did not use then cannot fail beyond sampling noise.
- ``planted-warming-judge`` (:class:`WarmingJudge`): a judge that warms to a text as it rereads
  it. Its first ``harsh_reads`` readings of a text say yes with rho(x); every later reading says
  yes with ``p_lenient``. Draws are not exchangeable: ``reward@K`` selects on the harsh first
  readings (with K <= ``harsh_reads`` it keeps mostly marked texts), while the later, lenient
  readings say nearly every reward@1 item is forced (m near 1, bound near 0). The measured
  distance between reward@1 and reward@K then exceeds the bound, and the check must say so.

A reading's rank is its position among the draws of the same text within one ``draw`` call
(the harness draws an item's 1+K seeds in order in one call, :func:`harness.worlds.draws.world_matrix`),
taken modulo ``reads`` (set it to 1+K so two items with the same text each get their own
readings). The warming judge therefore needs every draw of an item in one call: run it without
the draw cache (``use_cache=False``), which would otherwise pass only the missing draws.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.hookspecs import hookimpl

DEFAULT_PATTERN = r"\bhelps\b"
_GOLDEN = 0x9E3779B97F4A7C15


def seeded_uniforms(seeds: Sequence[int] | np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per seed (splitmix64 finaliser, vectorised): the same seed, the same number."""
    with np.errstate(over="ignore"):
        z = np.asarray(seeds, dtype=np.int64).astype(np.uint64) + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def reading_ranks(texts: Sequence[str], reads: int | None = None) -> np.ndarray:
    """The rank of each draw among the draws of its text in this batch (0 = first reading), modulo ``reads``."""
    seen: dict[str, int] = {}
    ranks = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        ranks[i] = seen.get(text, 0)
        seen[text] = ranks[i] + 1
    return ranks % reads if reads else ranks


class MarkedJudge(ABC):
    """What both planted judges share: rho(x) from the marked word, and the async ``draw``."""

    def __init__(self, pattern: str = DEFAULT_PATTERN, p_match: float = 1.0, p_other: float = 0.3):
        for name, p in (("p_match", p_match), ("p_other", p_other)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        self.pattern = re.compile(pattern, re.I)
        self.p_match, self.p_other = float(p_match), float(p_other)

    def marked(self, texts: Sequence[str]) -> np.ndarray:
        """Whether each text holds the marked word."""
        return np.array([self.pattern.search(t or "") is not None for t in texts], dtype=bool)

    def rho(self, texts: Sequence[str]) -> np.ndarray:
        """Exact P(R = 1 | x)."""
        return np.where(self.marked(texts), self.p_match, self.p_other)

    @abstractmethod
    def draws(self, texts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """R for each (text, seed), synchronously (the vectorised core of :meth:`draw`)."""

    async def draw(self, texts: Sequence[str], seeds: Sequence[int]) -> list[bool]:
        """Draw R once per (text, seed)."""
        if len(texts) != len(seeds):
            raise ValueError(f"draw got {len(texts)} texts but {len(seeds)} seeds")
        return [bool(r) for r in self.draws(texts, seeds)]


class PlantedJudge(MarkedJudge):
    """World ``planted-judge``: R ~ Bernoulli(rho(x)) per (text, seed), i.i.d. given x."""

    def in_forcing_set(self, texts: Sequence[str]) -> np.ndarray:
        """Membership of X_F = {x : rho(x) = 1} (exact: rho depends on x alone)."""
        return self.rho(texts) >= 1.0

    def draws(self, texts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """R for each (text, seed), synchronously."""
        return seeded_uniforms(seeds) < self.rho(texts)


class WarmingJudge(MarkedJudge):
    """World ``planted-warming-judge``: harsh (rho(x)) for the first readings of a text, lenient after."""

    def __init__(self, pattern: str = DEFAULT_PATTERN, p_match: float = 1.0, p_other: float = 0.3,
                 harsh_reads: int = 4, p_lenient: float = 1.0, reads: int | None = None):
        super().__init__(pattern, p_match, p_other)
        if harsh_reads < 1 or not 0.0 <= p_lenient <= 1.0 or (reads is not None and reads < 1):
            raise ValueError("harsh_reads and reads must be >= 1 and p_lenient a probability in [0, 1]")
        self.harsh_reads, self.p_lenient, self.reads = int(harsh_reads), float(p_lenient), reads

    def draws(self, texts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """R for each (text, seed): rho(x) on a text's first ``harsh_reads`` readings in this batch, ``p_lenient`` after.

        No ``in_forcing_set``: P(R = 1 | x) depends on how often x was read, not on x alone.
        """
        p = np.where(reading_ranks(texts, self.reads) < self.harsh_reads, self.rho(texts), self.p_lenient)
        return seeded_uniforms(seeds) < p


def _check(options: Mapping[str, Any], known: set[str], world: str) -> dict[str, Any]:
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"world {world}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dict(options)


def planted_judge(options: Mapping[str, Any], ctx: Any = None) -> PlantedJudge:
    """Factory for ``planted-judge``: options ``pattern``, ``p_match`` (1.0), ``p_other`` (0.3)."""
    return PlantedJudge(**_check(options, {"pattern", "p_match", "p_other"}, "planted-judge"))


def warming_judge(options: Mapping[str, Any], ctx: Any = None) -> WarmingJudge:
    """Factory for ``planted-warming-judge``: as ``planted-judge`` plus ``harsh_reads``, ``p_lenient``, ``reads``."""
    known = {"pattern", "p_match", "p_other", "harsh_reads", "p_lenient", "reads"}
    return WarmingJudge(**_check(options, known, "planted-warming-judge"))


@hookimpl
def register_worlds(register):
    """Register the planted worlds (for tests: register this module as a plugin)."""
    register("planted-judge", planted_judge, "planted judge: R ~ Bernoulli(rho(x)), i.i.d. given x (exchangeable draws)")
    register("planted-warming-judge", warming_judge, "planted judge that grows lenient as it rereads a text (draws not exchangeable)")
