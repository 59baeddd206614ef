"""The exact route (harness.run.fieldprobs): header prompts, both scoring routes, the genre-after-rating chain,
agreement with sampling on planted mimics, and (slow) on the embedded Gemma model."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import polars as pl
import pytest

import harness.worlds.bookworld as B
from harness.scripted import ScriptedMimic
from harness.run.fieldprobs import (FIELD_PROBS_SCHEMA, context_field_probs, field_distributions, field_prompts,
                                header_layout)
from harness.mimic import Capability, Completion, TokenLogprob
from harness.prompts import make_item, plan_draws, request_for
from harness.protocols import EstimationInputs
from harness.stats.sync import sync_estimates
from harness.taskspec import GenerationSpec
from harness.tasks import load_task

P_GENRE_GIVEN = {r: np.array([0.5, 0.3, 0.2]) if r <= 3 else np.array([0.2, 0.5, 0.3]) for r in range(1, 6)}


def bookworld_reference(n: int = 400, seed: int = 0) -> pl.DataFrame:
    """Bookworld rows rendered as tasks/bookworld.yaml renders them, with ref_id and the two header features."""
    frame = B.generate(n, seed=seed).with_row_index("ref_id").with_columns(pl.col("ref_id").cast(pl.Int64))
    texts = [B.render_item(r, g, v) for r, g, v in frame.select("rating", "genre", "review").iter_rows()]
    return frame.with_columns(text=pl.Series(texts), feat_rating=pl.col("rating").cast(pl.Float64), feat_genre=pl.col("genre"))


@pytest.fixture(scope="module")
def task():
    return load_task("bookworld")


def rating_probs(prompt: str) -> np.ndarray:
    """Planted P(rating | context): the exemplars' ratings with add-one smoothing (a partly synchronised mimic)."""
    counts = np.ones(5)
    for r in re.findall(r"(?m)^Rating: (\d)\n", prompt):
        counts[int(r) - 1] += 1
    return counts / counts.sum()


class PlantedMimic(ScriptedMimic):
    """Samples ``" r\\nGenre: g\\nReview: ..."`` from the planted distributions; optionally exposes them exactly."""

    def __init__(self, exact: str | None):
        super().__init__("scripted:planted-fields", self.choose)
        caps = {Capability.COMPLETION, Capability.SEEDED}
        if exact == "loglikelihood":
            caps.add(Capability.LOGLIKELIHOOD)
        elif exact == "logprobs":
            caps.add(Capability.LOGPROBS)
        self.capabilities = frozenset(caps)

    @staticmethod
    def choose(req) -> str:
        rng = np.random.default_rng(req.seed)
        r = int(rng.choice(5, p=rating_probs(req.prompt))) + 1
        g = B.GENRES[int(rng.choice(3, p=P_GENRE_GIVEN[r]))]
        return f" {r}\nGenre: {g}\nReview: A book."

    @staticmethod
    def next_text(prompt: str) -> dict[str, float]:
        """Exact P(continuation | prompt) for the header continuations the route asks about."""
        if prompt.endswith("Rating:"):
            return {f" {r}": p for r, p in zip(range(1, 6), rating_probs(prompt))}
        rating = re.search(r"Rating: (\d)\nGenre:$", prompt)
        if rating:
            return {f" {g}": p for g, p in zip(B.GENRES, P_GENRE_GIVEN[int(rating.group(1))])}
        raise AssertionError(f"unexpected prompt end {prompt[-30:]!r}")

    async def loglikelihood(self, pairs):
        """log P(continuation | context) for the planted header continuations."""
        return [math.log(p) if (p := self.next_text(c).get(x)) else -math.inf for c, x in pairs]

    async def generate(self, requests):
        """Samples, or (top_logprobs) one token spelled as Gemma does: a lone space, then "4" or "sc" + "ifi"."""
        if not requests[0].top_logprobs:
            return await super().generate(requests)
        out = []
        for req in requests:
            prompt, top = req.prompt, {}
            head = prompt.rstrip(" sc")
            done = prompt[len(head):]
            texts = {t: p for t, p in self.next_text(head).items() if t.startswith(done)}
            texts = {t: p / sum(texts.values()) for t, p in texts.items()}  # P(next token | what is already written)
            for text, p in texts.items():
                rest = text[len(done):]
                token = " " if rest.startswith(" ") else ("sc" if rest.startswith("sc") and rest != "sc" else rest)
                top[token] = np.logaddexp(top.get(token, -np.inf), np.log(p))
            token = max(top, key=top.get)
            out.append(Completion(token, "length", logprobs=(TokenLogprob(token, top[token], top),)))
        return out


def test_header_layout_and_prompts(task):
    ref = bookworld_reference()
    layout = header_layout(task, ref)
    assert layout.fields == ("Rating", "Genre") and layout.leads == (" ", " ")
    assert layout.pieces == ("Rating:", "\nGenre:")
    assert layout.values == (("1", "2", "3", "4", "5"), ("mystery", "romance", "scifi"))
    planned = plan_draws(task, ref, seed=0, pools=["none", "prompt:5"], n_exemplars=2, contexts=3, samples_per_context=2)
    rating = field_prompts(task, ref, planned, "Rating")
    none_prompts = {d.context_id: d.prompt for d in planned if d.pool == "none"}
    assert [p.key for p in rating] == [("none", 2, c) for c in range(3)]
    assert all(p.prompt == none_prompts[p.context_id] for p in rating)  # the none prompt already ends at "Rating:"
    genre = field_prompts(task, ref, planned, "Genre", given={"Rating": "4"})
    assert all(p.prompt == none_prompts[p.context_id] + " 4\nGenre:" for p in genre)
    with pytest.raises(ValueError, match="Rating"):
        field_prompts(task, ref, planned, "Genre")


@pytest.mark.parametrize("route", ["loglikelihood", "logprobs"])
async def test_exact_routes_recover_planted_distributions(task, route):
    ref = bookworld_reference()
    planned = plan_draws(task, ref, seed=1, pools=["none"], n_exemplars=4, contexts=4, samples_per_context=1)
    table = await context_field_probs(PlantedMimic(route), task, ref, planned)
    assert table.schema == pl.Schema(FIELD_PROBS_SCHEMA) and set(table["method"]) == {route}
    for d in planned:
        rows = table.filter(pl.col("context_id") == d.context_id)
        p_rating = rating_probs(d.prompt)
        got = rows.filter(pl.col("field") == "Rating").sort("value")["logprob"].exp().to_numpy()
        np.testing.assert_allclose(got, p_rating, atol=1e-9)
        mixed = sum(p * P_GENRE_GIVEN[r] for r, p in zip(range(1, 6), p_rating))  # P(g) = sum_r P(r) P(g | r)
        got = rows.filter(pl.col("field") == "Genre").sort("value")["logprob"].exp().to_numpy()
        np.testing.assert_allclose(got, mixed, atol=1e-9)


async def test_without_capability_the_table_is_empty(task):
    ref = bookworld_reference()
    planned = plan_draws(task, ref, seed=1, pools=["none"], n_exemplars=1, contexts=2, samples_per_context=1)
    mimic = PlantedMimic(None)
    assert (await context_field_probs(mimic, task, ref, planned)).height == 0
    prompts = [(p.pool, p.n_exemplars, p.context_id, p.prompt) for p in field_prompts(task, ref, planned, "Rating")]
    assert (await field_distributions(mimic, prompts, "Rating", ["1", "2"])).height == 0
    got = await field_distributions(PlantedMimic("loglikelihood"), prompts, "Rating", ["4", "5"])
    assert got.height == 4 and np.allclose(got.group_by("context_id").agg(pl.col("logprob").exp().sum())["logprob"], 1.0)


async def test_exact_and_sampled_sync_estimates_agree(task):
    """The sync_curve rows from exact field probabilities fall inside the sampled rows' intervals."""
    ref = bookworld_reference(600)
    sizes, rows = (0, 2, 6), []
    mimic = PlantedMimic("loglikelihood")
    planned = [d for n in sizes for d in plan_draws(task, ref, seed=3, pools=["none"], n_exemplars=n, contexts=60,
                                                    samples_per_context=6)]
    completions = await mimic.generate([request_for(d, GenerationSpec(max_tokens=99), ()) for d in planned])
    items = [make_item(d.prefix, c.text, ()) for d, c in zip(planned, completions)]
    draws = pl.DataFrame({
        "pool": "none", "n_exemplars": [d.n_exemplars for d in planned], "context_id": [d.context_id for d in planned],
        "sample_index": [d.sample_index for d in planned], "exemplar_ids": [list(d.exemplar_ids) for d in planned],
        "feat_rating": [float(re.search(r"Rating: (\d)", t).group(1)) for t in items],
        "feat_genre": [re.search(r"Genre: (\w+)", t).group(1) for t in items],
    })
    spec = dataclasses.replace(task, latents=("genre",), context_sizes=sizes)
    exact = await context_field_probs(mimic, task, ref, planned)
    sampled = sync_estimates(EstimationInputs(spec, ref, draws, [], seed=0, n_boot=400))
    exact_rows = sync_estimates(EstimationInputs(spec, ref, draws, [], seed=0, n_boot=400, tables={"field_probs": exact}))
    by_key = {(r.estimator, r.condition, r.feature): r for r in sampled}
    checked = 0
    for r in exact_rows:
        if r.estimator.startswith("sync_context"):
            s = by_key[(r.estimator, r.condition, r.feature)]
            assert r.note["method"] == "exact-logprobs" and s.note["method"] == "sampled"
            assert s.lower <= r.point <= s.upper, (r, s)
            if r.condition == "sync@0":
                # no exemplars: every context is the same prompt, so exact probabilities give every context the
                # same value; the sample shows no variance, and no (zero-width) interval is reported
                assert np.isnan(r.lower) and r.note["flags"] == ["no_variance"], r
            else:
                assert r.upper - r.lower < s.upper - s.lower  # exact probabilities remove the within-context noise
            checked += 1
    assert checked == 2 * (len(sizes) + len(sizes) - 1)


@pytest.mark.slow
async def test_gguf_logprob_and_sampled_rating_distribution_agree(task):
    """gguf:default: P(Rating = 1..5 | context) from loglikelihood and from top logprobs match 64 samples per context."""
    from harness.factories import create_mimic
    from harness.modelspec import parse_model_spec
    from harness.plugins import build_registries

    ref = bookworld_reference(300)
    mimic = create_mimic(parse_model_spec("gguf:default"), build_registries())
    try:
        planned = plan_draws(task, ref, seed=0, pools=["none"], n_exemplars=2, contexts=3, samples_per_context=64)
        values = [str(v) for v in range(1, 6)]
        prompts = field_prompts(task, ref, planned, "Rating")
        by_route = {route: await field_distributions(mimic, prompts, "Rating", values, route=route)
                    for route in ("loglikelihood", "logprobs")}
        completions = await mimic.generate([request_for(d, GenerationSpec(max_tokens=3), ()) for d in planned])
    finally:
        await mimic.aclose()
    rng = np.random.default_rng(0)
    for c in range(3):
        ratings = [float(m.group(1)) for d, comp in zip(planned, completions) if d.context_id == c
                   and (m := re.match(r"Rating:[ \t]*(\d+(?:\.\d+)?)", make_item(d.prefix, comp.text, ())))]
        counts = np.array([ratings.count(float(v)) for v in values])
        m = int(counts.sum())
        assert m >= 48, f"context {c}: only {m} of 64 samples wrote a rating 1..5"
        for route, table in by_route.items():
            p = table.filter(pl.col("context_id") == c).sort("value")["logprob"].exp().to_numpy()
            # TV between the sample and p, against its 99.9% quantile when sampling m draws from p itself.
            null = 0.5 * np.abs(rng.multinomial(m, p, size=20000) / m - p).sum(axis=1)
            tv = 0.5 * np.abs(counts / m - p).sum()
            assert tv <= np.quantile(null, 0.999), (route, c, counts.tolist(), np.round(p, 3).tolist())
        lik, top = (by_route[r].filter(pl.col("context_id") == c).sort("value")["logprob"].exp().to_numpy() for r in by_route)
        assert 0.5 * np.abs(lik - top).sum() < 0.05  # the two exact routes agree with each other
