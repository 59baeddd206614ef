"""Planning draws: paired exemplars across pools, seeds, prompt layout, requests, and item cleanup."""

from __future__ import annotations

import polars as pl
import pytest

from harness.errors import DataError, TaskError
from harness.prompts import PlannedDraw, build_prompt, make_item, plan_draws, request_for
from harness.reference import ReferenceTable
from harness.seeding import derive_seed
from harness.taskspec import ComponentRef, FeatureRef, GenerationSpec, ProxySpec, RenderSpec, SamplingPlan, TaskSpec

TASK = TaskSpec(
    name="p", version=1, description="", reference=ComponentRef("csv", {}),
    render=RenderSpec(exemplar="{{ x }}", separator="\n##\n", preamble="Reviews:\n", open_prefix="Rating:",
                      prompt_prefix="Rating: {{ value }}\n", stop=("##",)),
    features=(FeatureRef("rating", "header_field", {"field": "Rating", "numeric": True}),),
    proxy=ProxySpec("rating", (5, 1.0)), latents=(), controls=(),
    plan=SamplingPlan(contexts=3, samples_per_context=4, exemplars=2, seed=0),
)
REFERENCE = pl.DataFrame({"ref_id": list(range(10)), "text": [f"Rating: {i % 5 + 1}\nitem {i}" for i in range(10)]})


def test_plan_shape_keys_and_seeds():
    draws = plan_draws(TASK, REFERENCE, seed=11, pools=["none", "prompt:5", "prompt:1"])
    assert len(draws) == 3 * 3 * 4 and all(isinstance(d, PlannedDraw) for d in draws)
    assert len({d.key for d in draws}) == len(draws)
    for d in draws:
        assert d.key == ("p", d.pool, d.n_exemplars, d.context_id, d.sample_index)
        assert d.seed == derive_seed(11, "p", d.pool, d.context_id, d.sample_index)
        assert d.n_exemplars == 2 and len(set(d.exemplar_ids)) == 2  # without replacement
    assert len({d.seed for d in draws}) == len(draws)
    assert plan_draws(TASK, REFERENCE, seed=11, pools=["none"]) == [d for d in draws if d.pool == "none"]


def test_pools_share_exemplars_per_context():
    draws = plan_draws(TASK, ReferenceTable(REFERENCE, "h"), seed=3, pools=["none", "prompt:5"], contexts=6)
    by = {(d.pool, d.context_id): d.exemplar_ids for d in draws}
    for c in range(6):
        assert by[("none", c)] == by[("prompt:5", c)]
    assert len({by[("none", c)] for c in range(6)}) > 1  # contexts differ
    assert all(d.prompt == draws[0].prompt for d in draws if d.pool == "none" and d.context_id == 0)


def test_prompt_layout_and_prefixes():
    none, five, one = (plan_draws(TASK, REFERENCE, seed=0, pools=[p], contexts=1, samples_per_context=1)[0]
                       for p in ("none", "prompt:5", "prompt:1"))
    texts = [REFERENCE["text"][i] for i in none.exemplar_ids]
    assert none.prompt == "Reviews:\n" + texts[0] + "\n##\n" + texts[1] + "\n##\n" + "Rating:"
    assert none.prefix == "Rating:" and five.prefix == "Rating: 5\n" and one.prefix == "Rating: 1.0\n"
    assert five.prompt == none.prompt[: -len("Rating:")] + "Rating: 5\n"
    assert none.prompt_hash != five.prompt_hash and len(none.prompt_hash) == 16


def test_zero_exemplars_gives_preamble_and_prefix():
    draws = plan_draws(TASK, REFERENCE, seed=0, pools=["none"], n_exemplars=0, contexts=2, samples_per_context=2)
    assert {d.prompt for d in draws} == {"Reviews:\nRating:"} and all(d.exemplar_ids == () for d in draws)
    assert build_prompt(TASK, [], "X") == "Reviews:\nX"


def test_exemplars_depend_on_the_context_size():
    small = plan_draws(TASK, REFERENCE, seed=0, pools=["none"], n_exemplars=2, contexts=1, samples_per_context=1)[0]
    large = plan_draws(TASK, REFERENCE, seed=0, pools=["none"], n_exemplars=4, contexts=1, samples_per_context=1)[0]
    assert len(large.exemplar_ids) == 4 and small.seed == large.seed


def test_plan_errors():
    with pytest.raises(TaskError, match="pool 'prompt:3' names no value of proxy.values"):
        plan_draws(TASK, REFERENCE, seed=0, pools=["prompt:3"])
    with pytest.raises(TaskError, match="unknown pool 'filter'"):
        plan_draws(TASK, REFERENCE, seed=0, pools=["filter"])
    with pytest.raises(DataError, match="needs 11 exemplars but the reference has only 10 rows"):
        plan_draws(TASK, REFERENCE, seed=0, pools=["none"], n_exemplars=11)
    with pytest.raises(TaskError, match="contexts must be an integer >= 1"):
        plan_draws(TASK, REFERENCE, seed=0, pools=["none"], contexts=0)


def test_request_for():
    draw = plan_draws(TASK, REFERENCE, seed=0, pools=["prompt:5"])[5]
    req = request_for(draw, GenerationSpec(max_tokens=33, temperature=0.7, top_p=0.9), ["##", "\nRating:"])
    assert req.prompt == draw.prompt and req.seed == draw.seed and req.sample_index == draw.sample_index == 1
    assert req.context_id == "prompt:5/2/1" and req.stop == ("##", "\nRating:")
    assert (req.max_tokens, req.temperature, req.top_p) == (33, 0.7, 0.9)


@pytest.mark.parametrize("completion, stop, expected", [
    (" 4\nGreat book.\n##\nRating: 2", ("##",), "Rating: 4\nGreat book."),
    (" 4\nGreat<pad> book.<eos>ignored", ("##",), "Rating: 4\nGreat book."),
    (" 4<start_of_turn>\nOk</s>more", (), "Rating: 4\nOk"),
    (" 3 fine<|im_start|> yes<|endoftext|> next doc", (), "Rating: 3 fine yes"),
    (" 2 meh   \n\n", (), "Rating: 2 meh"),
    (" 5 a STOP b ## c", ("##", "STOP"), "Rating: 5 a"),
    ("", ("##",), "Rating:"),
])
def test_make_item(completion, stop, expected):
    assert make_item("Rating:", completion, stop) == expected
