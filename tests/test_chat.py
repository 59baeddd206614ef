"""Chat models as mimics: the chat rendering of every task, the item parser, the rendering a model gets,
and bookworld runs on the scripted chat mimic (parsed items, format adherence, control success measured)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from harness.chat.parse import ItemFormat, item_format, parse_item, template_heads
from harness.chat.messages import chat_messages
from harness.chat.renderings import (
    CHAT,
    CHAT_PREFILL,
    COMPLETION,
    backend_spec,
    choose_rendering,
    forced_rendering,
    run_model_id,
)
from harness.errors import ModelSpecError, TaskError
from harness.mimic import Capability
from harness.modelspec import ModelSpec, parse_model_spec
from harness.prompts import build_prompt, make_item, plan_draws, pool_prefix, pool_value, request_for
from harness.records import read_manifest
from harness.run import RunConfig, run
from harness.scripted import REFUSAL, create_scripted
from harness.tasks import load_task, parse_task

BOOK_FORMAT = ItemFormat(("Rating:", "Genre:", "Review:"), "###", False)
ITEM = "Rating: 4\nGenre: mystery\nReview: A slow but clever mystery."


# -- the chat rendering of every built-in task ------------------------------------------------------
@pytest.mark.parametrize("name, pool, condition", [
    ("bookworld", "prompt:5", "Its first line must be: Rating: 5"),
    ("reviews", "prompt:1", "Its first line must be: Rating: 1"),
    ("python-functions", "prompt:1", "The function must have a docstring, and the example's first line must be: # docstring: yes"),
])
def test_default_chat_rendering_of_each_builtin_task(name, pool, condition):
    task = load_task(name)
    examples = ["EXAMPLE ONE", "EXAMPLE TWO"]
    open_pool = chat_messages(task, examples, pool_prefix(task, "none"))
    assert [m.role for m in open_pool] == ["system", "user"]
    assert open_pool[0].content.startswith("You continue a collection of examples.")
    user = open_pool[1].content
    assert task.render.separator.join(examples) in user and "Here are 2 examples:" in user
    assert "Write one more example in exactly this format.\nReply with the example only." in user
    assert "must" not in user  # the open pool states no condition
    prompted = chat_messages(task, examples, pool_prefix(task, pool), pool_value(task, pool))
    assert f"Write one more example in exactly this format.\n{condition}\nReply with the example only." in prompted[1].content
    prefilled = chat_messages(task, examples, pool_prefix(task, pool), pool_value(task, pool), prefill=True)
    assert prefilled[-1].role == "assistant" and prefilled[-1].content == pool_prefix(task, pool)
    assert prefilled[:2] == prompted


def test_render_chat_templates_from_yaml_and_their_one_line_errors():
    data = yaml.safe_load(Path(load_task("bookworld").source_path).read_text())
    data["render"]["chat"] = {"system": "You write book reviews.", "user": "{{ examples }}\n\nAnother one. {{ condition }}",
                              "condition": "Give it {{ value }} stars."}
    task = parse_task(data, "x.yaml")
    messages = chat_messages(task, ["A", "B"], pool_prefix(task, "prompt:5"), 5)
    assert messages[0].content == "You write book reviews."
    assert messages[1].content == "A\n###\nB\n\nAnother one. Give it 5 stars."
    for chat, field in (({"sytem": "x"}, "render.chat.sytem"), ({"user": "No examples here."}, "render.chat.user"),
                        ({"condition": "{{ rating }}"}, "render.chat.condition"), ("text", "render.chat")):
        data["render"]["chat"] = chat
        with pytest.raises(TaskError) as err:
            parse_task(data, "x.yaml")
        assert f"field `{field}`" in err.value.one_line() and "\n" not in err.value.one_line()


# -- the parser -------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer, item", [
    (ITEM, ITEM),
    ("Sure! Here is another review:\n\n" + ITEM + "\n\nI hope this helps!", ITEM),
    ("Here you go:\n```\n" + ITEM + "\n```\nAnything else?", ITEM),
    ("```text\n" + ITEM + "\n```", ITEM),
    (ITEM + "\n###\nRating: 2\nGenre: romance\nReview: Meh.", ITEM),
    (ITEM + "\nRating: 2\nGenre: romance\nReview: Meh.", ITEM),
    ("**Rating:** 4\n**Genre:** mystery\n**Review:** A slow but clever mystery.", ITEM),
    ("Rating: 4\nGenre: mystery\nReview: Line one.\nLine two.\n\nThat was it.", "Rating: 4\nGenre: mystery\nReview: Line one.\nLine two."),
    ("Rating: 3 is what I would give.\n\n" + ITEM, ITEM),  # a first try without the other heads is skipped
    (REFUSAL, None),
    ("Rating: 4\nReview: no genre line", None),
    ("Here is a review: it was great.", None),
    ("", None),
])
def test_parse_item_finds_the_first_block_in_the_template_format(answer, item):
    assert parse_item(answer, BOOK_FORMAT) == item


def test_item_format_comes_from_the_exemplar_template():
    assert template_heads(load_task("bookworld").render.exemplar) == ("Rating:", "Genre:", "Review:")
    assert template_heads(load_task("python-functions").render.exemplar) == ("# docstring:",)
    code = item_format(load_task("python-functions"), ["# docstring: no\ndef f():\n    x = 1\n\n    return x"])
    assert code.blank_lines_inside and code.separator_line == "# ----"
    answer = "Sure:\n```python\n# docstring: no\ndef g(a):\n    b = a\n\n    return b\n```\nThis returns a."
    assert parse_item(answer, code) == "# docstring: no\ndef g(a):\n    b = a\n\n    return b"
    assert parse_item("```\nplain text\n```", ItemFormat(())) == "plain text"


# -- which rendering a model gets -------------------------------------------------------------------
def test_rendering_follows_capabilities_and_can_be_forced():
    comp, chat, prefill = Capability.COMPLETION, Capability.CHAT, Capability.ASSISTANT_PREFILL
    assert choose_rendering({comp, chat}) == COMPLETION
    assert choose_rendering(set()) == COMPLETION
    assert choose_rendering({chat}) == CHAT
    assert choose_rendering({chat, prefill}) == CHAT_PREFILL
    assert choose_rendering({comp, chat}, CHAT) == CHAT
    assert choose_rendering({chat, prefill}, CHAT) == CHAT
    for caps, forced in (({chat}, COMPLETION), ({comp}, CHAT), ({chat}, CHAT_PREFILL)):
        with pytest.raises(ModelSpecError, match=re.escape(f"cannot take rendering={forced}")):
            choose_rendering(caps, forced)
    spec = parse_model_spec("openai:m?mode=chat&rendering=chat+prefill")  # a URL's + arrives as a space
    assert forced_rendering(spec) == CHAT_PREFILL
    assert backend_spec(spec).options == {"mode": "chat"}
    assert run_model_id("openai:m#abc", spec) == "openai:m#abc?rendering=chat+prefill"
    plain = ModelSpec("openai", "m", {"mode": "chat"})
    assert run_model_id("openai:m#abc", plain) == "openai:m#abc" and backend_spec(plain) is plain
    with pytest.raises(ModelSpecError, match="rendering='html' is unknown"):
        forced_rendering(ModelSpec("x", "y", {"rendering": "html"}))


def test_completion_rendering_sends_the_same_requests_as_before():
    """The document path is unchanged: same prompt, stops and cache key as before chat renderings existed."""
    from harness.plugins import build_registries, get_plugin_manager
    from harness.protocols import BuildContext
    from harness.reference import load_reference

    registries = build_registries(get_plugin_manager())
    task = load_task("bookworld", registries)
    reference = load_reference(task, registries, BuildContext(registries=registries))
    draws = plan_draws(task, reference, seed=0, pools=["none", "prompt:5", "prompt:1"])
    first = draws[0]
    texts = reference.frame["text"].to_list()
    assert first.rendering == COMPLETION
    assert first.prompt == build_prompt(task, [texts[i] for i in first.exemplar_ids], first.prefix)
    request = request_for(first, task.generation, task.render.stop)
    assert request.stop == task.render.stop
    # pinned from the harness before this change: old runs' cached completions stay reachable
    assert request.cache_key("m") == "a951beccb9da0dd809795071e2397878b560186ac292f1af0347a6ff02eed2f3"
    chat = plan_draws(task, reference, seed=0, pools=["prompt:5"], rendering=CHAT)
    assert chat[0].rendering == CHAT and [m.role for m in chat[0].prompt] == ["system", "user"]
    assert request_for(chat[0], task.generation, task.render.stop).stop == ()  # the parser, not a stop, ends the item


# -- the scripted chat mimic on bookworld -----------------------------------------------------------
P5, REFUSALS, CHATTY = 0.3, 0.2, 0.4
RATINGS = {5: P5, 4: 0.25, 3: 0.2, 2: 0.15, 1: 0.1}


def planted_items() -> list[dict]:
    """Bookworld-format items with a rating distribution that ignores the condition."""
    out = []
    for rating, p in RATINGS.items():
        for genre in ("mystery", "romance"):
            out.append({"text": f"Rating: {rating}\nGenre: {genre}\nReview: A {genre} I rated {rating}. Mara helps a friend.",
                        "p": p / 2})
    return out


def chat_run(tmp_path, **options):
    spec = ModelSpec("scripted", "chat", {"distribution": planted_items(), **options})
    task = dataclasses.replace(load_task("bookworld"), context_sizes=())  # no sync curve: a fast run
    config = RunConfig(model=spec, task=task, out_dir=tmp_path, use_cache=False, contexts=20, samples_per_context=10,
                       progress="off", summary_to="off", n_boot=20, estimators=("control_success", "format_adherence"))
    result = run(config, _registries())
    return result, pl.read_parquet(result.run_dir / "draws.parquet"), read_manifest(result.run_dir)


def _registries():
    from harness.plugins import build_registries, get_plugin_manager

    return build_registries(get_plugin_manager())


def near(point: float, p: float, n: int) -> bool:
    """Within 4 binomial standard errors."""
    return abs(point - p) <= 4 * math.sqrt(p * (1 - p) / n)


def test_bookworld_on_the_scripted_chat_mimic_parses_items_and_measures_control(tmp_path):
    result, draws, manifest = chat_run(tmp_path, chatty=CHATTY, refusals=REFUSALS)
    assert result.status == "complete" and draws.height == 600
    assert set(draws["rendering"]) == {CHAT} and manifest.plan["rendering"] == CHAT
    unparsed = draws.filter(~pl.col("item_parsed"))
    assert set(unparsed["completion"]) == {REFUSAL}
    assert unparsed["text"].null_count() == unparsed.height and unparsed["feat_rating"].null_count() == unparsed.height
    assert unparsed["world_draws"].null_count() == unparsed.height
    parsed = draws.filter(pl.col("item_parsed"))
    assert parsed["feat_rating"].null_count() == 0 and all(t.startswith("Rating: ") for t in parsed["text"])
    chatty = parsed.filter(pl.col("completion").str.starts_with("Sure!"))
    assert chatty.height > 0 and not any("Sure" in t or "```" in t for t in chatty["text"])

    est = result.estimates
    adherence = est.filter(pl.col("estimator") == "format_adherence")
    assert set(adherence["condition"]) == {"none", "prompt:5", "prompt:1"}
    for r in adherence.iter_rows(named=True):
        assert near(r["point"], 1 - REFUSALS, r["n"]) and r["lower"] <= 1 - REFUSALS <= r["upper"], r
        assert json.loads(r["note"])["unparsed"] == round((1 - r["point"]) * r["n"])
    success = est.filter((pl.col("estimator") == "control_success") & (pl.col("condition") == "prompt:5")).row(0, named=True)
    # the mimic ignores the condition: success is its base rate of 5s among all answers (a refusal fails), not 1
    assert success["method"] != "by-construction" and "by_construction" not in json.loads(success["note"]).get("flags", [])
    assert near(success["point"], (1 - REFUSALS) * P5, success["n"]) and success["upper"] < 0.6


def test_prefill_continues_the_prefix_and_items_are_built_as_for_completions(tmp_path):
    result, draws, manifest = chat_run(tmp_path, prefill=True)
    assert set(draws["rendering"]) == {CHAT_PREFILL} and manifest.plan["rendering"] == CHAT_PREFILL
    assert draws["item_parsed"].all()
    five = draws.filter(pl.col("pool") == "prompt:5")
    assert (five["feat_rating"] == 5).all()
    stop = load_task("bookworld").render.stop
    assert five["text"].to_list() == [make_item("Rating: 5\n", c, stop) for c in five["completion"]]
    est = result.estimates
    assert est.filter(pl.col("estimator") == "format_adherence").height == 0  # an item exists by construction
    success = est.filter((pl.col("estimator") == "control_success") & (pl.col("condition") == "prompt:5")).row(0, named=True)
    assert success["method"] == "by-construction"


def test_completion_capable_scripted_run_records_completion_rendering(tmp_path):
    spec = ModelSpec("scripted", "planted", {"distribution": {" 4\nGenre: mystery\nReview: Fine.": 1.0}})
    task = dataclasses.replace(load_task("bookworld"), context_sizes=())
    config = RunConfig(model=spec, task=task, out_dir=tmp_path, use_cache=False, contexts=2, samples_per_context=2,
                       progress="off", summary_to="off", n_boot=20, estimators=("control_success", "format_adherence"))
    result = run(config, _registries())
    draws = pl.read_parquet(result.run_dir / "draws.parquet")
    assert set(draws["rendering"]) == {COMPLETION} and draws["item_parsed"].all()
    assert read_manifest(result.run_dir).plan["rendering"] == COMPLETION
    none = draws.filter(pl.col("pool") == "none")
    assert none["text"].to_list() == ["Rating: 4\nGenre: mystery\nReview: Fine."] * none.height
    assert result.model_id == spec.model_id  # no forced rendering: the model id is unchanged
    assert result.estimates.filter(pl.col("estimator") == "format_adherence").height == 0


def test_forcing_a_rendering_changes_the_model_id_and_is_checked(tmp_path):
    spec = ModelSpec("scripted", "fixed", {"text": " 4\nGenre: mystery\nReview: Fine.", "rendering": "chat"})
    mimic = create_scripted(backend_spec(spec))
    assert "rendering" not in mimic.model_id
    task = dataclasses.replace(load_task("bookworld"), context_sizes=())
    config = RunConfig(model=spec, task=task, out_dir=tmp_path, use_cache=False, contexts=2, samples_per_context=2,
                       progress="off", summary_to="off", n_boot=20, estimators=("format_adherence",))
    result = run(config, _registries())
    assert result.model_id.endswith("?rendering=chat")
    draws = pl.read_parquet(result.run_dir / "draws.parquet")
    assert set(draws["rendering"]) == {CHAT} and not draws["item_parsed"].any()  # " 4\n..." is no block
    rows = result.estimates.filter(pl.col("estimator") == "format_adherence")
    assert set(rows["point"]) == {0.0}
    chat_only = ModelSpec("scripted", "chat", {"distribution": planted_items(), "rendering": "completion"})
    with pytest.raises(ModelSpecError, match=re.escape("cannot take rendering=completion")):
        run(dataclasses.replace(config, model=chat_only), _registries())
