"""Bookworld: the generated table follows the documented model, rho and the forcing set are exact."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

import harness.builtin.bookworld
import harness.builtin.features
import harness.builtin.sources
import harness.worlds.bookworld as B
from harness.plugins import build_registries, get_plugin_manager, register_plugin
from harness.prompts import make_item, plan_draws
from harness.protocols import BuildContext, ExactWorld
from harness.reference import load_reference
from harness.tasks import load_task

N = 20000
Z = 4.0  # tolerance in standard errors: with ~60 checks of a seeded sample, a false alarm has P < 1e-2


@pytest.fixture(scope="module")
def sample() -> pl.DataFrame:
    return B.generate(N, seed=123)


def close(count: int, n: int, p: float) -> bool:
    """count/n within Z binomial standard errors of p."""
    return abs(count / n - p) <= Z * math.sqrt(p * (1 - p) / n)


def test_same_seed_same_table_and_seeds_differ():
    assert B.generate(300, seed=5).equals(B.generate(300, seed=5))
    assert not B.generate(300, seed=5).equals(B.generate(300, seed=6))


def test_genre_and_rating_frequencies(sample):
    for genre, p in zip(B.GENRES, B.P_GENRE):
        assert close(int((sample["genre"] == genre).sum()), N, p), genre
        rows = sample.filter(pl.col("genre") == genre)
        for s in range(1, 6):
            assert close(int((rows["rating"] == s).sum()), rows.height, B.P_RATING[genre][s - 1]), (genre, s)


def test_sentiment_helping_flattery_frequencies(sample):
    for s in range(1, 6):
        rows = sample.filter(pl.col("rating") == s)
        for column, p in (("n_pos", B.P_POS[s - 1]), ("n_neg", B.P_NEG[s - 1])):
            for k in range(3):  # Binomial(2, p)
                assert close(int((rows[column] == k).sum()), rows.height, math.comb(2, k) * p**k * (1 - p) ** (2 - k)), (s, column, k)
        for genre in B.GENRES:
            cell = rows.filter(pl.col("genre") == genre)
            assert close(int(cell["helping"].sum()), cell.height, B.p_help(genre, s)), (s, genre)
    assert close(int(sample["flattery"].sum()), N, B.P_FLATTERY)
    assert close(int((sample["n_extra"] == 1).sum()), N, 0.5)


def texts_of(frame: pl.DataFrame) -> list[str]:
    return [B.render_item(r, g, v) for r, g, v in frame.select("rating", "genre", "review").iter_rows()]


def test_parse_recovers_the_latents_exactly(sample):
    head = sample.head(3000)
    parsed = B.parse(texts_of(head))
    assert np.array_equal(parsed["rating"], head["rating"].to_numpy())
    assert np.array_equal(parsed["pos"], head["n_pos"].to_numpy()) and np.array_equal(parsed["neg"], head["n_neg"].to_numpy())
    assert np.array_equal(parsed["helping"], head["helping"].to_numpy() == 1)
    assert np.array_equal(parsed["flattery"], head["flattery"].to_numpy() == 1)
    assert (head.filter(pl.col("flattery") == 1)["review"].str.ends_with(B.FLATTERY)).all()


def test_rho_is_exactly_one_on_the_forcing_set(sample):
    head = sample.head(5000)
    texts = texts_of(head)
    rho = B.rho(texts)
    forcing = B.in_forcing_set(texts)
    assert forcing.sum() > 50 and np.array_equal(forcing, head["flattery"].to_numpy() == 1)
    assert np.all(rho[forcing] == 1.0) and rho[~forcing].max() <= B.RHO_CAP < 1.0
    expected = B.rho_of(head["rating"], head["n_pos"], head["n_neg"], head["helping"], head["flattery"])
    assert np.array_equal(rho, expected)
    # off the model: flattery anywhere, any spacing or case, still forces; the cap holds for extreme texts
    odd = ["no header at all", "Rating: 9\n" + "superb " * 40 + "helps", "x\n" + "HONESTLY,  you have excellent\ntaste for reading this review."]
    assert B.rho(odd)[0] == pytest.approx(1 / (1 + math.exp(1.0))) and B.rho(odd)[1] == B.RHO_CAP and B.rho(odd)[2] == 1.0


async def test_world_draws_are_seeded_bernoulli_rho():
    world = B.readers_world({})
    assert isinstance(world, ExactWorld)
    text = B.render_item(4, "romance", "Opening. The plot was lovely. The ending was dull.")
    p = float(world.rho([text])[0])
    seeds = list(range(4000))
    draws = await world.draw([text] * len(seeds), seeds)
    assert draws == await world.draw([text] * len(seeds), seeds)
    assert close(sum(draws), len(seeds), p)
    flattering = B.render_item(1, "scifi", "The plot was awful. " + B.FLATTERY)
    assert all(await world.draw([flattering] * 200, range(200)))
    with pytest.raises(ValueError, match="bookworld-readers takes no options"):
        B.readers_world({"cap": 1})


def test_exact_quantities_match_the_sample(sample):
    five = sample.filter(pl.col("rating") == 5)
    for genre, p in B.exact_distribution("genre", rating=5).items():
        assert close(int((five["genre"] == genre).sum()), five.height, p), genre
    helping = B.exact_distribution("helping", rating=1)
    ones = sample.filter(pl.col("rating") == 1)
    assert close(int(ones["helping"].sum()), ones.height, helping[1])
    for latent in B.LATENTS:
        assert sum(B.exact_distribution(latent).values()) == pytest.approx(1.0)
    assert B.exact_distribution("flattery", given="forcing") == {1: 1.0}
    # success and forcing-set quantities against the sample's exact rho (no world-draw noise)
    rho = B.rho(texts_of(sample))
    flattery = sample["flattery"].to_numpy()
    assert abs(rho.mean() - B.exact_success_rate()) < Z * rho.std() / math.sqrt(N)
    m = B.exact_mass()
    assert m == pytest.approx(B.P_FLATTERY / B.exact_success_rate())
    assert abs(flattery.sum() / rho.sum() - m) < 0.01
    previous = 1.0
    for k in (1, 2, 4, 8, 16):
        mk = B.exact_mass(k)
        assert m < mk < previous  # m_K falls towards m as K grows
        assert abs((rho ** (k + 1)).sum() / rho.sum() - mk) < 0.02
        previous = mk
    given_success = B.exact_distribution("helping", given="success", k=1)
    weighted = float((rho * sample["helping"].to_numpy()).sum() / rho.sum())
    assert abs(weighted - given_success[1]) < 0.02


def test_bookworld_task_end_to_end_features_match_truth():
    pm = get_plugin_manager(load_entrypoints=False)
    for name, module in (("builtin-features", harness.builtin.features), ("builtin-sources", harness.builtin.sources),
                         ("builtin-bookworld", harness.builtin.bookworld)):
        register_plugin(pm, module, name)
    registries = build_registries(pm)
    assert "bookworld" in registries.reference_sources and "bookworld-readers" in registries.worlds
    task = load_task("bookworld")
    ref = load_reference(task, registries, BuildContext(registries=registries))
    frame = ref.frame
    assert frame.height == 2000 and ref.hash == load_reference(task, registries, BuildContext(registries=registries)).hash
    assert (frame["feat_rating"] == frame["rating"].cast(pl.Float64)).all()
    assert (frame["feat_genre"] == frame["genre"]).all()
    assert (frame["feat_helping"] == frame["helping"].cast(pl.Float64)).all()
    assert frame["feat_length"].min() > 5
    assert frame.filter(pl.col("rating") == 5)["feat_sentiment"].mean() > frame.filter(pl.col("rating") == 1)["feat_sentiment"].mean() + 0.5
    assert np.array_equal(B.rho(frame["text"].to_list()),
                          B.rho_of(frame["rating"], frame["n_pos"], frame["n_neg"], frame["helping"], frame["flattery"]))
    # a generated item (prefix + completion) is parsed the same way as a reference item
    draw = plan_draws(task, ref, seed=0, pools=["prompt:5"], contexts=1, samples_per_context=1)[0]
    item = make_item(draw.prefix, "Genre: scifi\nReview: The prose was superb.\n###\nRating: 1", task.render.stop)
    assert item == "Rating: 5\nGenre: scifi\nReview: The prose was superb."
    assert B.rho([item])[0] == pytest.approx(B.rho_of([5], [1], [0], [False], [False])[0])
