"""The field-probabilities phase: a mimic's exact predictive distribution of a header field per context.

This is the exact route of the synchronisation curve. :func:`field_probs_phase` runs it for a
session through the run's one call path (:meth:`harness.run.calls.ModelCalls.measuring`), so its
requests are cached, budgeted and counted like draws.

Writes the ``field_probs`` table (``docs/contracts.md``): for each ``none``-pool context and header
field (``Rating``, ``Genre``: the ``field`` option of a task's ``header_field`` features), the
log-probability of each candidate value, normalised over the candidates.

- **Prompts** (:func:`field_prompts`): the context's prompt without the pool prefix, plus the item's
  header up to and including ``Field:``, laid out as the exemplars render it (:func:`header_layout`
  reads a rendered reference item: the text before each field, and the whitespace ``lead``
  between ``Field:`` and its value). The continuation of a candidate is ``lead + value``, so it
  tokenizes as the model would write it (``Rating:`` + `` 5``). Candidates are the distinct raw
  values the reference items write (at most ``MAX_VALUES``).
- **Later fields** (``Genre`` after ``Rating``) depend on the earlier ones:
  :func:`context_field_probs` enumerates the earlier fields' candidates, weights each header by
  their exact joint probability and mixes, P(g) = sum_r P(r) P(g | r). Headers under
  ``MIN_WEIGHT`` of a context's mass are dropped and at most ``MAX_PREFIXES`` kept (renormalised).
- **Routes** (:func:`field_distributions`): with ``Capability.LOGLIKELIHOOD``, the exact
  log P(lead + value | prompt) of each candidate (``method: loglikelihood``); else with
  ``Capability.LOGPROBS``, generate calls with ``max_tokens=1, top_logprobs=20``, walking down
  the tokens that spell a candidate: a token equal to the rest of a candidate ends it, a token
  that is a proper prefix of it (the lone space of `` 5`` in Gemma's vocabulary, `` sc`` of
  `` scifi``) is appended to the prompt and the next token read, up to ``MAX_DEPTH`` tokens
  (``method: logprobs``). It is an approximation: spellings through tokens outside a step's top
  20 count as 0. Else the table is empty and the estimator samples.
- **Chat models** (the run's rendering, :mod:`harness.chat.renderings`): a ``chat+prefill`` draw's
  prompt is a conversation whose last message is the assistant's, holding the pool's prefix; its field
  prompt is the same conversation with that message holding the header up to ``Field:``, so the
  backend continues the item exactly where a completion prompt would. Such prompts are scored on the
  logprobs route only (``loglikelihood`` pairs are text, not conversations); walking down a
  candidate's tokens extends the assistant message. A plain ``chat`` run has no place to put the
  header (the answer starts wherever the model likes): no table, and the synchronisation estimates
  say ``sampled`` in their ``method``.
- P(value) is the probability that the field's text *starts with* the value, under the
  tokenizer's own split of ``lead + value`` (loglikelihood) or the top-20 paths (logprobs). A
  model that writes a value outside the candidates (`` five``) is left out by the normalisation,
  as the feature extractor leaves it out (null) when sampled.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from harness.chat.renderings import CHAT_PREFILL, COMPLETION
from harness.errors import BudgetExceeded, TaskError
from harness.mimic import Capability, ChatMessage, GenerationRequest, Mimic
from harness.prompts import PlannedDraw
from harness.records import FIELD_PROBS_FILE
from harness.run.calls import ModelCalls
from harness.run.load import Loaded
from harness.run.session import RunSession

FIELD_PROBS_SCHEMA = {"pool": pl.Utf8, "n_exemplars": pl.Int64, "context_id": pl.Int64, "field": pl.Utf8,
                      "value": pl.Utf8, "logprob": pl.Float64, "method": pl.Utf8}
MAX_VALUES = 20  # a header field with more distinct values is not a small categorical: not scored
MAX_PREFIXES = 64  # enumerated headers per context for a later field
MIN_WEIGHT = 1e-4  # headers lighter than this share of a context's mass are not scored
TOP_LOGPROBS = 20
MAX_DEPTH = 4  # tokens walked per candidate on the logprobs route


@dataclass(frozen=True)
class FieldPrompt:
    """One prompt that ends just before a header field's value, for one context (and earlier values)."""

    pool: str
    n_exemplars: int
    context_id: int
    prompt: str | tuple[ChatMessage, ...]  # a document, or a conversation ending in the assistant's open message
    logweight: float = 0.0  # log P(earlier header values) when the header before the field was enumerated
    given: tuple[tuple[str, str], ...] = ()  # the earlier (field, value) pairs written in the header

    @property
    def key(self) -> tuple[str, int, int]:
        """(pool, n_exemplars, context_id)."""
        return (self.pool, self.n_exemplars, self.context_id)


@dataclass(frozen=True)
class HeaderLayout:
    """How an item's header renders: fields in order, the text before each, leads and candidate values."""

    fields: tuple[str, ...]
    pieces: tuple[str, ...]  # pieces[i]: text after value i-1 (item start for i = 0) through "<field i>:"
    leads: tuple[str, ...]  # whitespace between "<field i>:" and its value
    values: tuple[tuple[str, ...], ...]  # candidate raw values per field, as the exemplars write them


def _line_re(field: str) -> re.Pattern:
    # The header_field extractor's rule: the first line starting with "<field>:" (any case).
    return re.compile(rf"(?im)^[ \t]*{re.escape(field)}[ \t]*:(?P<lead>[ \t]*)(?P<value>[^\n]*?)[ \t\r]*$")


def header_fields(task) -> list[str]:
    """The header field names of the task's ``header_field`` features (declaration order)."""
    return [str(ref.options["field"]) for ref in task.features if ref.type == "header_field" and "field" in ref.options]


def _value_key(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def header_layout(task, reference: pl.DataFrame) -> HeaderLayout:
    """Read the header layout from the first rendered reference item that has every header field."""
    fields = header_fields(task)
    texts = reference.get_column("text").to_list()
    sample = next((t for t in texts if t and all(_line_re(f).search(t) for f in fields)), None)
    if not fields or sample is None:
        raise TaskError(f"task {task.name}: no reference item has all header fields ({', '.join(fields) or 'none'})",
                        "the exact route needs header_field features whose lines every rendered item has")
    matches = sorted(((_line_re(f).search(sample), f) for f in fields), key=lambda mf: mf[0].start())
    pieces, leads, values, end = [], [], [], 0
    for m, f in matches:
        pieces.append(sample[end : m.start("lead")])
        leads.append(m.group("lead"))
        end = m.end("value")
        found = {v.group("value") for t in texts if t and (v := _line_re(f).search(t)) and v.group("value")}
        values.append(tuple(sorted(found, key=_value_key)))
    return HeaderLayout(tuple(f for _, f in matches), tuple(pieces), tuple(leads), tuple(values))


def header_text(layout: HeaderLayout, field: str, given: Mapping[str, str]) -> str:
    """The header up to and including ``<field>:``, with ``given`` values for the fields before it."""
    j = layout.fields.index(field)
    missing = [f for f in layout.fields[:j] if f not in given]
    if missing:
        raise ValueError(f"field {field} comes after {', '.join(missing)}: pass their values in `given`")
    return "".join(layout.pieces[i] + layout.leads[i] + str(given[layout.fields[i]]) for i in range(j)) + layout.pieces[j]


Prompt = str | tuple[ChatMessage, ...]


def extend_prompt(prompt: Prompt, text: str) -> Prompt:
    """``prompt`` with ``text`` appended: to the document, or to the conversation's last (assistant) message."""
    if isinstance(prompt, str):
        return prompt + text
    last = prompt[-1]
    return (*prompt[:-1], ChatMessage(last.role, last.content + text))


def cut_prompt(prompt: Prompt, n: int) -> Prompt:
    """``prompt`` without its last ``n`` characters (of the document, or of the last message)."""
    if isinstance(prompt, str):
        return prompt[: len(prompt) - n]
    last = prompt[-1]
    return (*prompt[:-1], ChatMessage(last.role, last.content[: len(last.content) - n]))


def _ends_with_prefix(draw: Any) -> bool:
    """The draw's prompt ends with its prefix: a completion document, or a chat+prefill conversation."""
    if isinstance(draw.prompt, str):
        return draw.prompt.endswith(draw.prefix)
    last = draw.prompt[-1] if draw.prompt else None
    return last is not None and last.role == "assistant" and last.content == draw.prefix


def field_prompts(task, reference: pl.DataFrame, planned: Sequence[Any], field: str,
                  given: Mapping[str, str] | None = None, layout: HeaderLayout | None = None) -> list[FieldPrompt]:
    """One prompt per ``none``-pool context of ``planned`` (PlannedDraw objects) ending at ``<field>:``."""
    layout = layout or header_layout(task, reference)
    header = header_text(layout, field, given or {})
    out, seen = [], set()
    for d in planned:
        key = (d.pool, d.n_exemplars, d.context_id)
        if d.pool != "none" or key in seen:
            continue
        seen.add(key)
        if not header.startswith(d.prefix) or not _ends_with_prefix(d):
            raise TaskError(f"task {task.name}: the none pool's prefix {d.prefix!r} does not start the item header {header!r}",
                            "make render.open_prefix the beginning of the rendered exemplar")
        prompt = extend_prompt(cut_prompt(d.prompt, len(d.prefix)), header)
        out.append(FieldPrompt(d.pool, d.n_exemplars, d.context_id, prompt, 0.0, tuple(sorted((given or {}).items()))))
    return out


def route_of(mimic: Mimic, route: str = "auto", chat: bool = False) -> str | None:
    """``loglikelihood``, ``logprobs`` or None (sample instead), from the mimic's capabilities.

    ``chat``: the prompts are conversations, which only the logprobs route (generate) takes.
    """
    caps = getattr(mimic, "capabilities", frozenset())
    if route in ("auto", "loglikelihood") and Capability.LOGLIKELIHOOD in caps and not chat:
        return "loglikelihood"
    if route in ("auto", "logprobs") and Capability.LOGPROBS in caps:
        return "logprobs"
    return None


def _normalise(logp: np.ndarray) -> np.ndarray:
    """Rows of log-probabilities normalised over the candidates (rows with no finite entry stay -inf)."""
    top = np.max(logp, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = logp - top - np.log(np.sum(np.exp(logp - top), axis=1, keepdims=True))
    return np.where(np.isnan(out), -np.inf, out)  # an unreachable prompt contributes nothing to a mixture


async def _score_loglikelihood(mimic, prompts: Sequence[str], conts: Sequence[str]) -> np.ndarray:
    scores = await mimic.loglikelihood([(p, c) for p in prompts for c in conts])
    return np.asarray(scores, dtype=np.float64).reshape(len(prompts), len(conts))


async def _score_logprobs(mimic, prompts: Sequence[Prompt], conts: Sequence[str]) -> np.ndarray:
    """Walk each prompt's top-20 tokens down the candidates' spellings (see the module docstring)."""
    out = np.full((len(prompts), len(conts)), -np.inf)
    states = [(i, p, {j: c for j, c in enumerate(conts)}, 0.0) for i, p in enumerate(prompts)]
    for _ in range(MAX_DEPTH):
        if not states:
            break
        requests = [GenerationRequest(prompt=p, max_tokens=1, temperature=1.0, top_logprobs=TOP_LOGPROBS, seed=0,
                                      context_id=f"fieldprobs/{k}") for k, (_, p, _, _) in enumerate(states)]
        completions = await mimic.generate(requests)
        nxt = []
        for (i, prompt, rest, mass), comp in zip(states, completions):
            first = (comp.logprobs or (None,))[0]
            if first is None:
                continue
            top = dict(first.top)
            top.setdefault(first.token, first.logprob)
            deeper: dict[str, dict[int, str]] = {}
            for j, r in rest.items():
                for token, lp in top.items():
                    if token and r == token:
                        out[i, j] = np.logaddexp(out[i, j], mass + lp)
                    elif token and r.startswith(token):
                        deeper.setdefault(token, {})[j] = r[len(token):]
            nxt += [(i, extend_prompt(prompt, t), sub, mass + top[t]) for t, sub in deeper.items()]
        states = nxt
    return out


async def score_candidates(mimic, prompts: Sequence[Prompt], conts: Sequence[str], route: str) -> np.ndarray:
    """(prompts, candidates) log-probabilities normalised over the candidates, by the given route."""
    if not prompts:
        return np.zeros((0, len(conts)))
    raw = await (_score_loglikelihood if route == "loglikelihood" else _score_logprobs)(mimic, prompts, conts)
    return _normalise(raw)


def _mix(prompts: Sequence[FieldPrompt], cond: np.ndarray, field: str, values: Sequence[str], method: str) -> list[dict]:
    """Mix each context's prompts by their weights: log sum_h w_h P(v | h), renormalised."""
    rows, groups = [], {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.key, []).append(i)
    for key, idx in groups.items():
        mixed = np.logaddexp.reduce(np.array([prompts[i].logweight for i in idx])[:, None] + cond[idx], axis=0)
        if not np.isfinite(mixed).any():
            continue  # no candidate reachable: this context falls back to sampling
        mixed = _normalise(mixed[None, :])[0]
        rows += [{"pool": key[0], "n_exemplars": key[1], "context_id": key[2], "field": field, "value": v,
                  "logprob": float(lp), "method": method} for v, lp in zip(values, mixed)]
    return rows


async def field_distributions(mimic, prompts: Sequence[FieldPrompt | tuple], field: str, values: Sequence[str],
                              lead: str = " ", route: str = "auto") -> pl.DataFrame:
    """The ``field_probs`` rows of one field: P(value | context) over ``values``; empty without the capability.

    ``prompts`` are :class:`FieldPrompt` objects or ``(pool, n_exemplars, context_id, prompt_text)``
    tuples; several prompts of one context are mixed by their ``logweight``.
    """
    prompts = [p if isinstance(p, FieldPrompt) else FieldPrompt(*p) for p in prompts]
    chosen = route_of(mimic, route, chat=any(not isinstance(p.prompt, str) for p in prompts))
    if chosen is None or not prompts:
        return pl.DataFrame(schema=FIELD_PROBS_SCHEMA)
    cond = await score_candidates(mimic, [p.prompt for p in prompts], [lead + v for v in values], chosen)
    return pl.DataFrame(_mix(prompts, cond, field, values, chosen), schema=FIELD_PROBS_SCHEMA)


async def context_field_probs(mimic, task, reference: pl.DataFrame, planned: Sequence[Any],
                              fields: Sequence[str] | None = None, route: str = "auto") -> pl.DataFrame:
    """The ``field_probs`` table for every ``none``-pool context of ``planned`` and the task's header fields.

    Fields come in header order; a later field is conditioned on each enumerated header before it
    (module docstring). Fields with more than ``MAX_VALUES`` raw values end the chain. Empty when
    the mimic has neither capability (the caller samples).
    """
    chosen = route_of(mimic, route, chat=any(not isinstance(d.prompt, str) for d in planned))
    if chosen is None:
        return pl.DataFrame(schema=FIELD_PROBS_SCHEMA)
    layout = header_layout(task, reference)
    wanted = [f for f in (fields or layout.fields) if f in layout.fields]
    rows: list[dict] = []
    heads = {p.key: [p] for p in field_prompts(task, reference, planned, layout.fields[0], layout=layout)}
    for j, field in enumerate(layout.fields):
        if not wanted or j > max(layout.fields.index(f) for f in wanted) or len(layout.values[j]) > MAX_VALUES:
            break
        prompts = [p for ps in heads.values() for p in ps]
        values = layout.values[j]
        cond = await score_candidates(mimic, [p.prompt for p in prompts], [layout.leads[j] + v for v in values], chosen)
        if field in wanted:
            rows += _mix(prompts, cond, field, values, chosen)
        if j + 1 == len(layout.fields):
            break
        nxt_field, by_key = layout.fields[j + 1], {}
        for p, lp in zip(prompts, cond):
            for v, l in zip(values, lp):
                if np.isfinite(l):
                    by_key.setdefault(p.key, []).append((p, v, p.logweight + l))
        heads = {}
        for key, cands in by_key.items():
            cands.sort(key=lambda c: -c[2])
            total = np.logaddexp.reduce([c[2] for c in cands])
            kept = [c for c in cands if c[2] - total >= np.log(MIN_WEIGHT)][:MAX_PREFIXES]
            norm = np.logaddexp.reduce([c[2] for c in kept])
            heads[key] = []
            for p, v, lw in kept:
                given = dict(p.given) | {field: v}
                base = cut_prompt(p.prompt, len(header_text(layout, field, dict(p.given))))
                heads[key].append(FieldPrompt(*key, extend_prompt(base, header_text(layout, nxt_field, given)), lw - norm,
                                              tuple(sorted(given.items()))))
    return pl.DataFrame(rows, schema=FIELD_PROBS_SCHEMA)


async def field_probs_phase(session: RunSession, loaded: Loaded, calls: ModelCalls, planned: Sequence[PlannedDraw]) -> str | None:
    """Write ``field_probs.parquet`` for the synchronisation contexts; a budget message if the budget stopped it.

    Only when the backend declares logprobs or loglikelihood (a ``chat+prefill`` run: logprobs) and
    the proxy is a header field; a plain ``chat`` run samples instead. The table is written once, so
    a resumed or repeated run reuses it (and its calls are cached besides).
    """
    task = loaded.task
    proxy = task.feature(task.proxy.feature)
    mimic = calls.measuring("field_probs", session.cache)
    sizes = set(task.context_sizes)
    sync_draws = [d for d in planned if d.pool == "none" and d.n_exemplars in sizes]
    if any(d.rendering not in (COMPLETION, CHAT_PREFILL) for d in sync_draws):  # plain chat: the sync curve samples
        return None
    chat = any(d.rendering == CHAT_PREFILL for d in sync_draws)
    if (session.run_dir / FIELD_PROBS_FILE).exists() or route_of(mimic, chat=chat) is None or proxy.type != "header_field":
        return None
    try:
        frame = await context_field_probs(mimic, task, loaded.reference.frame, sync_draws, fields=[proxy.options.get("field", proxy.name)])
    except BudgetExceeded as exc:
        return exc.message
    finally:
        spent = calls.by_phase.get("field_probs")
        session.progress.message(f"{task.name} x {calls.model_id}: field probabilities: {spent.requests if spent else 0} model calls, "
                                 f"{mimic.cached} answers from the cache")
    if frame.height:
        session.store.write_frame(FIELD_PROBS_FILE, frame)
    return None
