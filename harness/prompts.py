"""Plan draws: pools x contexts x samples, each context a seeded draw of k exemplars.

The exemplars of context c depend only on (seed, task, k, c), not on the pool, so every pool at the
same context id sees the same exemplars: comparisons between pools are paired. A prompt is
``preamble`` + exemplars joined by ``separator`` + ``separator`` + prefix, where the prefix is
``open_prefix`` for the ``none`` pool and ``prompt_prefix`` rendered with ``value`` for
``prompt:<v>``; with k = 0 it is ``preamble`` + prefix. That is the ``completion`` rendering; the chat
renderings put the same exemplars and prefix into a conversation (:mod:`harness.chat.messages`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from harness.chat.messages import chat_messages
from harness.chat.renderings import CHAT, CHAT_PREFILL, COMPLETION, RENDERINGS
from harness.errors import DataError, TaskError
from harness.mimic import ChatMessage, GenerationRequest
from harness.records import DrawKey
from harness.seeding import derive_seed
from harness.taskspec import GenerationSpec, TaskSpec
from harness.tasks import template_env
from harness.values import target_label

# End-of-text markers: the model has finished the document, so the item ends there.
END_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<eos>", "</s>", "<end_of_turn>")
# Any other special token (chat-turn markers, padding, BOS) carries no text and is removed.
SPECIAL_RE = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>|<(?:eos|bos|pad|unk|mask|start_of_turn|end_of_turn)>")


@dataclass(frozen=True)
class PlannedDraw:
    """One draw to generate: its key, seed, exemplars, the prompt (a document, or chat messages) and the item prefix."""

    task: str
    pool: str
    context_id: int
    sample_index: int
    seed: int
    n_exemplars: int
    exemplar_ids: tuple[int, ...]
    prompt: str | tuple[ChatMessage, ...]
    prefix: str
    rendering: str = COMPLETION  # completion | chat | chat+prefill (harness.chat.renderings)

    @property
    def key(self) -> DrawKey:
        """The draw key ``(task, pool, n_exemplars, context_id, sample_index)``."""
        return DrawKey(self.task, self.pool, self.n_exemplars, self.context_id, self.sample_index)

    @property
    def prompt_hash(self) -> str:
        """sha256 of the prompt (chat messages: of their JSON), first 16 hex (the draws table's ``prompt_hash``)."""
        text = self.prompt if isinstance(self.prompt, str) else json.dumps(
            [[m.role, m.content] for m in self.prompt], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def pool_prefix(task: TaskSpec, pool: str) -> str:
    """The item prefix of a pool: ``open_prefix`` for ``none``, ``prompt_prefix`` with the target for ``prompt:<v>``."""
    env = template_env()
    if pool == "none":
        return env.from_string(task.render.open_prefix).render()
    return env.from_string(task.render.prompt_prefix).render(value=pool_value(task, pool))


def pool_value(task: TaskSpec, pool: str) -> Any:
    """The proxy target of a ``prompt:<v>`` pool (None for ``none``)."""
    if pool == "none":
        return None
    if pool.startswith("prompt:"):
        label = pool.split(":", 1)[1]
        for value in task.proxy.values:
            if target_label(value) == label:
                return value
        known = ", ".join(f"prompt:{target_label(v)}" for v in task.proxy.values)
        raise TaskError(f"task {task.name}: pool {pool!r} names no value of proxy.values (known: none, {known})",
                        "add the value to proxy.values or use a listed pool")
    raise TaskError(f"task {task.name}: unknown pool {pool!r}", "pools are `none` or `prompt:<value>`")


def context_exemplars(n_reference: int, seed: int, task: str, n_exemplars: int, context_id: int) -> np.ndarray:
    """Row positions of the k exemplars of one context (without replacement; shared by all pools)."""
    rng = np.random.default_rng(derive_seed(seed, task, "context", n_exemplars, context_id))
    return rng.choice(n_reference, size=n_exemplars, replace=False)


def build_prompt(task: TaskSpec, exemplars: Sequence[str], prefix: str) -> str:
    """preamble + exemplars joined by separator + separator + prefix (no separators without exemplars)."""
    preamble = template_env().from_string(task.render.preamble).render()
    sep = task.render.separator
    body = sep.join(exemplars) + sep if exemplars else ""
    return preamble + body + prefix


def _frame(reference: Any) -> pl.DataFrame:
    frame = getattr(reference, "frame", reference)
    if not isinstance(frame, pl.DataFrame) or "text" not in frame.columns or "ref_id" not in frame.columns:
        raise TypeError("reference must be a ReferenceTable or a DataFrame with `ref_id` and `text` columns")
    return frame


def context_prompt(task: TaskSpec, exemplars: Sequence[str], pool: str, prefix: str,
                   rendering: str = COMPLETION) -> tuple[str | tuple[ChatMessage, ...], str]:
    """A context's prompt in a rendering, and the rendering its draws record (a chat+prefill context with an
    empty prefix has nothing to prefill: it is plain chat)."""
    if rendering == COMPLETION:
        return build_prompt(task, exemplars, prefix), COMPLETION
    if rendering not in RENDERINGS:
        raise TaskError(f"unknown rendering {rendering!r}", f"use one of {', '.join(RENDERINGS)}")
    prefill = rendering == CHAT_PREFILL and bool(prefix)
    return chat_messages(task, exemplars, prefix, pool_value(task, pool), prefill), CHAT_PREFILL if prefill else CHAT


def plan_draws(task: TaskSpec, reference: Any, *, seed: int, pools: Sequence[str], n_exemplars: int | None = None,
               contexts: int | None = None, samples_per_context: int | None = None,
               rendering: str = COMPLETION) -> list[PlannedDraw]:
    """Every draw of the plan, ordered pool, context, sample (defaults come from ``task.plan``), in ``rendering``."""
    frame = _frame(reference)
    k = task.plan.exemplars if n_exemplars is None else n_exemplars
    n_contexts = task.plan.contexts if contexts is None else contexts
    n_samples = task.plan.samples_per_context if samples_per_context is None else samples_per_context
    for name, value, low in (("n_exemplars", k, 0), ("contexts", n_contexts, 1), ("samples_per_context", n_samples, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TaskError(f"task {task.name}: {name} must be an integer >= {low}, got {value!r}", f"pass {name} >= {low}")
    if k > frame.height:
        raise DataError(f"task {task.name}: a context needs {k} exemplars but the reference has only {frame.height} rows",
                        "lower plan.exemplars or load more reference rows")
    texts, ids = frame["text"].to_list(), frame["ref_id"].to_list()
    prefixes = {pool: pool_prefix(task, pool) for pool in pools}
    draws = []
    for pool in pools:
        for c in range(n_contexts):
            rows = context_exemplars(frame.height, seed, task.name, k, c)
            prompt, drawn_as = context_prompt(task, [texts[int(r)] for r in rows], pool, prefixes[pool], rendering)
            exemplar_ids = tuple(int(ids[int(r)]) for r in rows)
            for s in range(n_samples):
                draws.append(PlannedDraw(task.name, pool, c, s, derive_seed(seed, task.name, pool, c, s), k,
                                         exemplar_ids, prompt, prefixes[pool], drawn_as))
    return draws


def request_for(draw: PlannedDraw, generation: GenerationSpec, stop: Sequence[str]) -> GenerationRequest:
    """The mimic request of a draw; draws of one context share ``context_id`` so they batch together.

    A ``chat`` draw sends no stop strings: the answer may open with chatter, and a stop such as
    ``\nRating:`` would cut it before the item; the item is parsed from the whole answer instead.
    """
    stops = () if draw.rendering == CHAT else tuple(stop)
    return GenerationRequest(prompt=draw.prompt, max_tokens=generation.max_tokens, temperature=generation.temperature,
                             top_p=generation.top_p, stop=stops, seed=draw.seed, sample_index=draw.sample_index,
                             context_id=f"{draw.pool}/{draw.n_exemplars}/{draw.context_id}")


def make_item(prefix: str, completion: str, stop: Sequence[str]) -> str:
    """prefix + completion cut at the first stop string or end-of-text token, special tokens removed, right-trimmed."""
    cut = min((i for i in (completion.find(s) for s in (*stop, *END_TOKENS) if s) if i >= 0), default=len(completion))
    return SPECIAL_RE.sub("", prefix + completion[:cut]).rstrip()
