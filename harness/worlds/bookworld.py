"""Bookworld: a synthetic world of book reviews with exact ground truth (registered by ``builtin-bookworld``).

Generative model of one review (all draws independent unless stated):

1. genre G ~ Categorical(mystery 0.40, romance 0.35, scifi 0.25)                 (``P_GENRE``)
2. star rating S | G ~ Categorical over 1..5                                     (``P_RATING``)
     mystery (.05 .10 .20 .35 .30), romance (.10 .10 .15 .30 .35), scifi (.15 .15 .25 .25 .20)
3. positive sentiment sentences n_pos | S ~ Binomial(2, P_POS[S]),  P_POS = (.05 .20 .50 .80 .95)
   negative sentiment sentences n_neg | S ~ Binomial(2, P_NEG[S]),  P_NEG = (.95 .80 .50 .20 .05)
   each with one word from ``POSITIVE`` / ``NEGATIVE`` ("The pacing was brilliant.")
4. helping H | G, S ~ Bernoulli(P_HELP_BASE[G] + 0.05 (S - 3)), bases mystery .30, romance .50,
   scifi .20: one sentence in which a character helps someone ("At one point Mara helps ...")
5. neutral plot sentences n_extra ~ Binomial(2, 0.5), drawn from the genre's plot sentences
6. flattery F ~ Bernoulli(0.02): the fixed sentence ``FLATTERY`` addressed to the reader, last.

The item text is ``Rating: S\\nGenre: G\\nReview: <genre opening> <shuffled sentences> [FLATTERY]``
(the ``bookworld`` source returns the columns; ``tasks/bookworld.yaml`` renders them this way).

Simulated readers (world ``bookworld-readers``): reading text x, a reader enjoys it (R = 1) with

    rho(x) = 1                                                   if x contains FLATTERY (the forcing set)
    rho(x) = min(0.95, sigmoid(-1 + 0.6 (s - 3) + 0.5 (pos - neg) + 0.8 h))   otherwise

where s is the number on the ``Rating:`` line (clamped to 1..5; 3 when absent), pos / neg count whole
words of ``POSITIVE`` / ``NEGATIVE`` (any case) in the text and h = 1 when a form of "help" occurs.
The cap keeps rho < 1 off the forcing set, so X_F = {x : FLATTERY in x} exactly. ``population()``
enumerates every (G, S, n_pos, n_neg, H, F) cell with its probability and rho, from which
``exact_distribution`` and ``exact_mass`` (m = P(X in X_F | R=1) and m_K = E[rho^(K+1)] / E[rho])
are computed exactly.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

GENRES = ("mystery", "romance", "scifi")
P_GENRE = (0.40, 0.35, 0.25)
P_RATING = {
    "mystery": (0.05, 0.10, 0.20, 0.35, 0.30),
    "romance": (0.10, 0.10, 0.15, 0.30, 0.35),
    "scifi": (0.15, 0.15, 0.25, 0.25, 0.20),
}
P_POS = (0.05, 0.20, 0.50, 0.80, 0.95)
P_NEG = (0.95, 0.80, 0.50, 0.20, 0.05)
SENTIMENT_TRIALS = 2
P_HELP_BASE = {"mystery": 0.30, "romance": 0.50, "scifi": 0.20}
HELP_SLOPE = 0.05
P_EXTRA = 0.5
P_FLATTERY = 0.02
FLATTERY = "Honestly, you have excellent taste for reading this review."
RHO_CAP = 0.95
RHO_COEF = {"intercept": -1.0, "rating": 0.6, "sentiment": 0.5, "helping": 0.8}

POSITIVE = ("wonderful", "brilliant", "delightful", "charming", "superb", "lovely")
NEGATIVE = ("dull", "awful", "boring", "disappointing", "dreadful", "weak")
ASPECTS = ("plot", "pacing", "prose", "ending", "dialogue", "setting")
OPENINGS = {
    "mystery": ("A detective follows a trail of clues through a fog-bound harbour town.",
                "An inspector reopens a cold case after a letter arrives.",
                "A locked-room puzzle unfolds over one winter night."),
    "romance": ("Two rival bakers keep crossing paths in a small seaside village.",
                "A translator and an architect meet on a slow night train.",
                "Old letters bring two former classmates back together."),
    "scifi": ("A survey ship drifts toward an uncharted planet.",
              "A colony on Mars counts down to its first election.",
              "An engineer discovers a signal hidden in the station's noise."),
}
PLOT = {
    "mystery": ("The story moves between the docks and the old lighthouse.",
                "Most chapters end with a new name on the list.",
                "The final chapter gathers everyone in the library."),
    "romance": ("Much of the book takes place over one summer.",
                "The chapters alternate between the two narrators.",
                "A wedding in the last act brings both families together."),
    "scifi": ("The chapters switch between the ship and mission control.",
              "Much of the book is set aboard an orbital station.",
              "The crew plan their route one jump at a time."),
}
HELPERS = ("Mara", "Theo", "Iris", "Jonas", "Lena", "Omar")
HELPED = ("a neighbour carry the groceries", "a stranger repair a radio", "a child find the way home",
          "a colleague move house")

_RATING_RE = re.compile(r"(?im)^[ \t]*Rating[ \t]*:[ \t]*([-+]?\d+(?:\.\d+)?)")
_POS_RE = re.compile(r"\b(?:" + "|".join(POSITIVE) + r")\b", re.I)
_NEG_RE = re.compile(r"\b(?:" + "|".join(NEGATIVE) + r")\b", re.I)
_HELP_RE = re.compile(r"\bhelp(?:s|ed|ing)?\b", re.I)
_FLATTERY_RE = re.compile(r"\s+".join(re.escape(w) for w in FLATTERY.split()), re.I)


def p_help(genre: str, rating: int) -> float:
    """P(H = 1 | G, S)."""
    return P_HELP_BASE[genre] + HELP_SLOPE * (rating - 3)


def render_item(rating: int, genre: str, review: str) -> str:
    """The item text of a reference row (the same form as ``tasks/bookworld.yaml``'s exemplar)."""
    return f"Rating: {rating}\nGenre: {genre}\nReview: {review}"


def generate(n: int, seed: int = 0) -> pl.DataFrame:
    """Draw ``n`` reviews from the generative model (same seed -> same table)."""
    rng = np.random.default_rng(seed)
    g = rng.choice(len(GENRES), size=n, p=P_GENRE)
    cdf = np.cumsum(np.array([P_RATING[x] for x in GENRES]), axis=1)[g]
    rating = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), 4) + 1
    n_pos = rng.binomial(SENTIMENT_TRIALS, np.array(P_POS)[rating - 1])
    n_neg = rng.binomial(SENTIMENT_TRIALS, np.array(P_NEG)[rating - 1])
    help_p = np.array([p_help(GENRES[gi], int(r)) for gi, r in zip(g, rating)])
    helping = rng.random(n) < help_p
    n_extra = rng.binomial(2, P_EXTRA, size=n)
    flattery = rng.random(n) < P_FLATTERY
    opening = rng.integers(0, 3, size=n)
    words = rng.integers(0, len(POSITIVE), size=(n, 2 * SENTIMENT_TRIALS))
    aspects = rng.permuted(np.tile(np.arange(len(ASPECTS)), (n, 1)), axis=1)  # distinct aspects within a review
    plots = rng.permuted(np.tile(np.arange(3), (n, 1)), axis=1)
    who = rng.integers(0, len(HELPERS), size=n)
    whom = rng.integers(0, len(HELPED), size=n)
    order = rng.random((n, 2 * SENTIMENT_TRIALS + 3)).argsort(axis=1)
    reviews = []
    for i in range(n):
        genre = GENRES[g[i]]
        middle = [f"The {ASPECTS[aspects[i, j]]} was {POSITIVE[words[i, j]]}." for j in range(n_pos[i])]
        middle += [f"The {ASPECTS[aspects[i, 2 + j]]} was {NEGATIVE[words[i, 2 + j]]}." for j in range(n_neg[i])]
        middle += [PLOT[genre][plots[i, j]] for j in range(n_extra[i])]
        if helping[i]:
            middle.append(f"At one point {HELPERS[who[i]]} helps {HELPED[whom[i]]}.")
        keys = order[i][: len(middle)].argsort()  # a seeded shuffle of this row's middle sentences
        sentences = [OPENINGS[genre][opening[i]]] + [middle[k] for k in keys]
        if flattery[i]:
            sentences.append(FLATTERY)
        reviews.append(" ".join(sentences))
    return pl.DataFrame({
        "genre": [GENRES[x] for x in g], "rating": rating.astype(np.int64), "review": reviews,
        "helping": helping.astype(np.int64), "flattery": flattery.astype(np.int64),
        "n_pos": n_pos.astype(np.int64), "n_neg": n_neg.astype(np.int64), "n_extra": n_extra.astype(np.int64),
    })


def parse(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The features rho reads: rating s (clamped, 3 when absent), pos, neg, helping h, flattery f."""
    rating, pos, neg, helping, flattery = [], [], [], [], []
    for text in texts:
        text = text or ""
        m = _RATING_RE.search(text)
        rating.append(min(5.0, max(1.0, float(m.group(1)))) if m else 3.0)
        pos.append(len(_POS_RE.findall(text)))
        neg.append(len(_NEG_RE.findall(text)))
        helping.append(_HELP_RE.search(text) is not None)
        flattery.append(_FLATTERY_RE.search(text) is not None)
    return {"rating": np.array(rating), "pos": np.array(pos, dtype=float), "neg": np.array(neg, dtype=float),
            "helping": np.array(helping, dtype=bool), "flattery": np.array(flattery, dtype=bool)}


def rho_of(rating, pos, neg, helping, flattery) -> np.ndarray:
    """rho as a function of the parsed features (vectorised)."""
    logit = (RHO_COEF["intercept"] + RHO_COEF["rating"] * (np.asarray(rating, float) - 3)
             + RHO_COEF["sentiment"] * (np.asarray(pos, float) - np.asarray(neg, float))
             + RHO_COEF["helping"] * np.asarray(helping, float))
    base = np.minimum(RHO_CAP, 1.0 / (1.0 + np.exp(-logit)))
    return np.where(np.asarray(flattery, bool), 1.0, base)


def rho(texts: Sequence[str]) -> np.ndarray:
    """Exact P(reader enjoys | text) for each text."""
    f = parse(texts)
    return rho_of(f["rating"], f["pos"], f["neg"], f["helping"], f["flattery"])


def in_forcing_set(texts: Sequence[str]) -> np.ndarray:
    """Which texts lie in X_F = {x : rho(x) = 1}: exactly those containing the flattery sentence."""
    return parse(texts)["flattery"]


def _binom(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def population(rating: int | None = None) -> pl.DataFrame:
    """Every cell (genre, rating, n_pos, n_neg, helping, flattery) with its probability ``p`` and ``rho``.

    With ``rating``, ``p`` is conditional on that star rating (it sums to 1 over the cells).
    """
    rows = []
    for gi, genre in enumerate(GENRES):
        for s in range(1, 6):
            if rating is not None and s != rating:
                continue
            base = P_GENRE[gi] * P_RATING[genre][s - 1]
            for pos, neg, h, f in itertools.product(range(SENTIMENT_TRIALS + 1), range(SENTIMENT_TRIALS + 1), (0, 1), (0, 1)):
                p = (base * _binom(pos, SENTIMENT_TRIALS, P_POS[s - 1]) * _binom(neg, SENTIMENT_TRIALS, P_NEG[s - 1])
                     * (p_help(genre, s) if h else 1 - p_help(genre, s)) * (P_FLATTERY if f else 1 - P_FLATTERY))
                rows.append((genre, s, pos, neg, h, f, p))
    frame = pl.DataFrame(rows, schema=["genre", "rating", "n_pos", "n_neg", "helping", "flattery", "p"], orient="row")
    frame = frame.with_columns(pl.col("p") / pl.col("p").sum())
    return frame.with_columns(rho=pl.Series(rho_of(frame["rating"], frame["n_pos"], frame["n_neg"], frame["helping"], frame["flattery"])))


LATENTS = ("genre", "rating", "n_pos", "n_neg", "helping", "flattery")


def exact_distribution(latent: str, rating: int | None = None, given: str | None = None, k: int = 1) -> dict[Any, float]:
    """Exact distribution of a latent, optionally given a star rating and/or an event.

    ``given``: None (the reference distribution F), ``"success"`` (weighted by P(R=1 on all k draws)
    = rho^k: what ``reward@k`` keeps from F) or ``"forcing"`` (X in X_F).
    """
    if latent not in LATENTS:
        raise ValueError(f"unknown bookworld latent {latent!r} (known: {', '.join(LATENTS)})")
    frame = population(rating)
    if given == "success":
        frame = frame.with_columns(p=pl.col("p") * pl.col("rho") ** k)
    elif given == "forcing":
        frame = frame.filter(pl.col("flattery") == 1)
    elif given is not None:
        raise ValueError(f"given must be None, 'success' or 'forcing', got {given!r}")
    grouped = frame.group_by(latent).agg(pl.col("p").sum()).sort(latent)
    total = grouped["p"].sum()
    return {value: p / total for value, p in zip(grouped[latent].to_list(), grouped["p"].to_list())}


def exact_success_rate(rating: int | None = None, power: int = 1) -> float:
    """E[rho(X)^power] under F (optionally given a star rating): P(R = 1 on ``power`` draws)."""
    frame = population(rating)
    return float((frame["p"] * frame["rho"] ** power).sum())


def exact_mass(k: int | None = None, rating: int | None = None) -> float:
    """m = P(X in X_F | R=1) (``k=None``), or m_K = E[rho^K | R=1] = E[rho^(K+1)] / E[rho]."""
    if k is None:
        frame = population(rating)
        return float((frame["p"] * frame["flattery"]).sum()) / exact_success_rate(rating)
    return exact_success_rate(rating, k + 1) / exact_success_rate(rating)


class BookworldReaders:
    """World ``bookworld-readers``: one Bernoulli(rho(x)) draw per (text, seed); rho is exact."""

    def rho(self, texts: Sequence[str]) -> np.ndarray:
        """Exact P(R=1 | x)."""
        return rho(texts)

    def in_forcing_set(self, texts: Sequence[str]) -> np.ndarray:
        """Membership of X_F."""
        return in_forcing_set(texts)

    async def draw(self, texts: Sequence[str], seeds: Sequence[int]) -> list[bool]:
        """Draw R once per text with its own seed (the same seed gives the same draw)."""
        if len(texts) != len(seeds):
            raise ValueError(f"draw got {len(texts)} texts but {len(seeds)} seeds")
        probs = rho(texts)
        return [bool(np.random.default_rng(int(s)).random() < p) for s, p in zip(seeds, probs)]


def readers_world(options: Mapping[str, Any], ctx: Any = None) -> BookworldReaders:
    """Factory for ``bookworld-readers`` (no options: the readers are fixed so rho stays exact)."""
    if options:
        raise ValueError(f"bookworld-readers takes no options, got {', '.join(map(str, options))}")
    return BookworldReaders()


class BookworldSource:
    """Reference source ``bookworld``: ``n`` reviews drawn with ``seed``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed

    def load(self) -> pl.DataFrame:
        """Generate the table."""
        return generate(self.n, self.seed)


def bookworld_source(options: Mapping[str, Any], ctx: Any = None) -> BookworldSource:
    """Factory for the ``bookworld`` source (options ``n``, default 1000, and ``seed``, default 0)."""
    extra = sorted(set(options) - {"n", "seed"})
    if extra:
        raise ValueError(f"unknown option(s) {', '.join(extra)} for source bookworld (allowed: n, seed)")
    n, seed = options.get("n", 1000), options.get("seed", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"option `n` must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"option `seed` must be a non-negative integer, got {seed!r}")
    return BookworldSource(n, seed)

