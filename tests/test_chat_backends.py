"""Chat models through real backends: the fake OpenAI server in chat mode (with and without vLLM-style
assistant prefill, and a server that rejects it), chat-mode logprobs, field probabilities for a
``chat+prefill`` run, and the gguf backend through SmolLM2's chat template."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math

import polars as pl
import pytest

from harness.chat.renderings import CHAT, CHAT_PREFILL
from harness.errors import PermanentBackendError
from harness.mimic import Capability, ChatMessage, Completion, GenerationRequest, TokenLogprob
from harness.modelspec import parse_model_spec
from harness.prompts import make_item, plan_draws
from harness.records import FIELD_PROBS_FILE, read_manifest
from harness.run import RunConfig, run
from harness.run.fieldprobs import context_field_probs
from harness.tasks import load_task
from harness.testing import FakeOpenAIServer

ITEM = "Rating: 4\nGenre: mystery\nReview: A slow but clever mystery."
REFUSAL = "I'm sorry, but I can't help with that."
ANSWERS = (ITEM, "Sure! Here is another review:\n\n" + ITEM.replace("4", "2") + "\n\nI hope this helps!", REFUSAL)


def _registries():
    from harness.plugins import build_registries, get_plugin_manager

    return build_registries(get_plugin_manager())


def _task(sync: bool = False):
    task = load_task("bookworld")
    return task if sync else dataclasses.replace(task, context_sizes=())


def _run(tmp_path, spec: str, task=None, **overrides):
    options = dict(out_dir=tmp_path, use_cache=False, contexts=4, samples_per_context=3, progress="off",
                   summary_to="off", n_boot=20, estimators=("control_success", "format_adherence"))
    config = RunConfig(model=parse_model_spec(spec), task=task or _task(), **(options | overrides))
    result = run(config, _registries())
    return result, pl.read_parquet(result.run_dir / "draws.parquet")


# -- the fake OpenAI server in chat mode -------------------------------------------------------------
def test_chat_without_prefill_parses_items_from_answers_and_counts_failures(tmp_path):
    with FakeOpenAIServer(chat_answers=ANSWERS) as srv:
        result, draws = _run(tmp_path, f"openai:fake-model?base_url={srv.base_url}&mode=chat")
        params = [r.params for r in srv.records() if r.status == 200]
    assert result.status == "complete" and draws.height == 36
    assert set(draws["rendering"]) == {CHAT} and read_manifest(result.run_dir).plan["rendering"] == CHAT
    assert params and not any("continue_final_message" in p for p in params)  # no prefill was asked for
    parsed = draws.filter(pl.col("item_parsed"))
    assert set(parsed["text"]) <= {ITEM, ITEM.replace("4", "2")} and parsed.height > 0
    assert set(draws.filter(~pl.col("item_parsed"))["completion"]) == {REFUSAL}
    adherence = result.estimates.filter(pl.col("estimator") == "format_adherence")
    assert set(adherence["condition"]) == {"none", "prompt:5", "prompt:1"}
    for row in adherence.iter_rows(named=True):
        pool = draws.filter(pl.col("pool") == row["condition"])
        assert row["point"] == pytest.approx(pool["item_parsed"].mean())
        assert json.loads(row["note"])["unparsed"] == pool.height - pool["item_parsed"].sum()
    # the proxy is measured on the parsed items, which never say 5: control success is not 1 by construction
    five = result.estimates.filter((pl.col("estimator") == "control_success") & (pl.col("condition") == "prompt:5")).row(0, named=True)
    assert five["point"] == 0.0 and five["method"] != "by-construction"


def test_chat_prefill_continues_the_prefix_on_a_vllm_style_server(tmp_path):
    with FakeOpenAIServer(chat_answers=ANSWERS) as srv:  # canned answers are not used to continue a message
        spec = f"openai:fake-model?base_url={srv.base_url}&mode=chat&prefill=true"
        result, draws = _run(tmp_path, spec)
        params = [r.params for r in srv.records() if r.status == 200]
    assert result.status == "complete" and result.model_id != _run_id_without_prefill(srv.base_url)
    assert set(draws["rendering"]) == {CHAT_PREFILL} and read_manifest(result.run_dir).plan["rendering"] == CHAT_PREFILL
    assert draws["item_parsed"].all()
    assert all(p["continue_final_message"] is True and p["add_generation_prompt"] is False for p in params)
    stop = _task().render.stop
    for row in draws.iter_rows(named=True):
        prefix = "Rating:" if row["pool"] == "none" else f"Rating: {row['pool'].split(':')[1]}\n"
        assert not row["completion"].startswith(prefix.strip())  # the answer continues, it does not repeat
        assert row["text"] == make_item(prefix, row["completion"], stop)
    assert (draws.filter(pl.col("pool") == "prompt:5")["feat_rating"] == 5).all()


def _run_id_without_prefill(base_url: str) -> str:
    from mimic_openai import create_openai

    return create_openai(parse_model_spec(f"openai:fake-model?base_url={base_url}&mode=chat")).model_id


def test_forcing_prefill_on_a_server_without_it_is_one_line(tmp_path):
    with FakeOpenAIServer(prefill=False) as srv:
        with pytest.raises(PermanentBackendError) as err:
            _run(tmp_path, f"openai:fake-model?base_url={srv.base_url}&mode=chat&prefill=true", max_attempts=2)
        rejected = srv.count(status=400)
    line = err.value.one_line()
    assert rejected >= 1 and "\n" not in line
    assert "HTTP 400" in line and "continue_final_message" in line and "drop prefill=true" in line
    # without the option the backend declares no prefill, so the same server serves plain chat
    from mimic_openai import create_openai

    plain = create_openai(parse_model_spec(f"openai:fake-model?base_url={srv.base_url}&mode=chat"))
    assert Capability.ASSISTANT_PREFILL not in plain.capabilities


def test_prefill_option_is_checked_and_chat_logprobs_are_parsed():
    from harness.errors import ModelSpecError
    from mimic_openai import create_openai

    with pytest.raises(ModelSpecError, match="prefill=true needs mode=chat"):
        create_openai(parse_model_spec("openai:m?base_url=http://127.0.0.1:9/v1&prefill=true"))
    with pytest.raises(ModelSpecError, match="not true or false"):
        create_openai(parse_model_spec("openai:m?base_url=http://127.0.0.1:9/v1&mode=chat&prefill=maybe"))
    with FakeOpenAIServer() as srv:
        mimic = create_openai(parse_model_spec(f"openai:fake-model?base_url={srv.base_url}&mode=chat&prefill=true"))
        assert {Capability.CHAT, Capability.ASSISTANT_PREFILL, Capability.LOGPROBS} <= mimic.capabilities
        prompt = (ChatMessage("user", "Write a review."), ChatMessage("assistant", "Rating:"))
        out = asyncio.run(_generate(mimic, GenerationRequest(prompt=prompt, max_tokens=3, top_logprobs=5, seed=1)))
    assert len(out.logprobs) == len(out.text.split()) and all(len(t.top) == 5 for t in out.logprobs)
    assert all(t.token in t.top and t.logprob <= 0 for t in out.logprobs)


async def _generate(mimic, request):
    try:
        return (await mimic.generate([request]))[0]
    finally:
        await mimic.aclose()


# -- field probabilities for a chat+prefill run --------------------------------------------------------
class PrefillLogprobsMimic:
    """A chat mimic with prefill and logprobs: after ``...Rating:`` its top tokens are `` 4``, `` 5`` and a lone space."""

    model_id = "test:prefill-logprobs"
    context_window = None
    capabilities = frozenset({Capability.CHAT, Capability.ASSISTANT_PREFILL, Capability.LOGPROBS, Capability.LOGLIKELIHOOD})

    def __init__(self):
        self.prompts = []

    async def generate(self, requests):
        out = []
        for r in requests:
            self.prompts.append(r.prompt)
            tail = r.prompt[-1].content
            top = {" 4": -0.5, " 5": -1.5, " ": -2.0} if tail.endswith("Rating:") else {"3": -0.1, "x": -3.0}
            token = max(top, key=top.get)
            out.append(Completion(token, "length", logprobs=(TokenLogprob(token, top[token], top),)))
        return out

    async def loglikelihood(self, pairs):
        raise AssertionError("conversations are scored on the logprobs route")

    async def aclose(self):
        pass


def test_field_probs_of_a_chat_prefill_run_end_the_prefill_at_the_field():
    from harness.plugins import build_registries, get_plugin_manager
    from harness.protocols import BuildContext
    from harness.reference import load_reference

    registries = build_registries(get_plugin_manager())
    task = load_task("bookworld", registries)
    reference = load_reference(task, registries, BuildContext(registries=registries)).frame
    planned = plan_draws(task, reference, seed=0, pools=["none"], n_exemplars=2, contexts=2, samples_per_context=1,
                         rendering=CHAT_PREFILL)
    assert planned[0].prompt[-1] == ChatMessage("assistant", "Rating:")
    mimic = PrefillLogprobsMimic()
    table = asyncio.run(context_field_probs(mimic, task, reference, planned, fields=["Rating"]))
    assert set(table["method"]) == {"logprobs"} and set(table["context_id"]) == {0, 1}
    probs = {r["value"]: r["logprob"] for r in table.filter(pl.col("context_id") == 0).iter_rows(named=True)}
    # " 4" directly, " 5" directly, and " 3" through the lone space then "3": all normalised together
    raw = {"4": -0.5, "5": -1.5, "3": -2.0 - 0.1}
    total = float(pl.Series(list(raw.values())).exp().sum())
    for value, lp in raw.items():
        assert probs[value] == pytest.approx(lp - math.log(total))
    assert {p[-1].content for p in mimic.prompts} == {"Rating:", "Rating: "}  # the walk extends the assistant message
    assert all(p[:-1] == planned[0].prompt[:-1] or p[:-1] == planned[1].prompt[:-1] for p in mimic.prompts)
    plain = plan_draws(task, reference, seed=0, pools=["none"], n_exemplars=2, contexts=1, samples_per_context=1, rendering=CHAT)
    assert plain[0].rendering == CHAT and plain[0].prompt[-1].role == "user"  # nowhere to put the header: sampled


# -- the gguf backend through SmolLM2's chat template ------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("rendering", [CHAT_PREFILL, CHAT])
def test_gguf_smollm2_bookworld_in_chat_renderings(tmp_path, rendering):
    """SmolLM2 through its own chat template. Which answers parse depends on the sampled text, so only the
    bookkeeping is asserted for plain chat (the 135M model at temperature 1 often answers off format)."""
    spec = f"gguf:smollm2?n_threads=2&rendering={rendering}"
    if rendering == CHAT_PREFILL:
        task, samples = dataclasses.replace(_task(sync=True), context_sizes=(0,)), 3
    else:  # no stop strings in plain chat: answers run long, so fewer and shorter ones keep the test quick
        task, samples = _task(), 2
        task = dataclasses.replace(task, generation=dataclasses.replace(task.generation, max_tokens=40))
    result, draws = _run(tmp_path, spec, task=task, contexts=None, samples_per_context=None, samples=samples, n_exemplars=2)
    assert result.status == "complete" and set(draws["rendering"]) == {rendering}
    assert read_manifest(result.run_dir).plan["rendering"] == rendering
    parsed = draws.filter(pl.col("item_parsed"))
    assert all(t.startswith("Rating:") and "Genre:" in t and "Review:" in t for t in parsed["text"]) or rendering == CHAT_PREFILL
    if rendering == CHAT_PREFILL:
        assert draws["item_parsed"].all() and all(t.startswith("Rating:") for t in draws["text"])
        assert (draws.filter(pl.col("pool") == "prompt:5")["text"].str.starts_with("Rating: 5\n")).all()
        assert not any("<|im_start|>" in c or "<|im_end|>" in c for c in draws["text"])
        probs = pl.read_parquet(result.run_dir / FIELD_PROBS_FILE)  # the exact route through the open assistant turn
        assert set(probs["method"]) == {"logprobs"} and probs["logprob"].exp().sum() > 0
    else:
        unparsed = draws.filter(~pl.col("item_parsed"))
        assert unparsed["text"].null_count() == unparsed.height and unparsed["feat_rating"].null_count() == unparsed.height
        adherence = result.estimates.filter(pl.col("estimator") == "format_adherence")
        assert set(adherence["condition"]) == {"none", "prompt:5", "prompt:1"}
        for row in adherence.iter_rows(named=True):
            pool = draws.filter(pl.col("pool") == row["condition"])
            assert row["n"] == pool.height and row["point"] == pytest.approx(pool["item_parsed"].mean())
