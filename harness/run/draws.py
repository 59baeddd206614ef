"""Draw rows: the request of a planned draw, and the log row of a finished one (item, features, world draws).

A ``completion`` or ``chat+prefill`` draw's item is prefix + answer cut at a stop; a ``chat`` draw's is
parsed from the answer (:func:`harness.chat.parse.parse_item`). A chat answer with no item is kept as a
draw with ``item_parsed`` false and no text, features or world draws: it is a format failure, not an item.
"""

from __future__ import annotations

import asyncio
from typing import Any

import polars as pl

from harness.chat.parse import item_format, parse_item
from harness.chat.renderings import CHAT
from harness.featurize import KIND_DTYPES, compute_features
from harness.mimic import GenerationRequest
from harness.prompts import PlannedDraw, make_item, request_for
from harness.records import DRAWS_BASE_SCHEMA, DRAWS_SORT
from harness.run.load import Loaded
from harness.store import rows_to_frame
from harness.worlds.draws import world_matrix


class DrawBuilder:
    """Requests for planned draws, and log rows for finished ones (item, features, world draws)."""

    def __init__(self, loaded: Loaded, *, run_id: str, model_id: str, seed: int):
        self.loaded = loaded
        self.run_id, self.model_id, self.seed = run_id, model_id, seed
        self.schema = dict(DRAWS_BASE_SCHEMA)
        for name, feature in loaded.features.items():
            self.schema[f"feat_{name}"] = KIND_DTYPES[feature.kind]
        self.schema["world_draws"] = pl.List(pl.Boolean)
        self.item_format = item_format(loaded.task, loaded.reference.frame["text"].to_list())

    def request(self, draw: PlannedDraw) -> GenerationRequest:
        """The generation request of a planned draw."""
        return request_for(draw, self.loaded.task.generation, self.loaded.task.render.stop)

    def item(self, draw: PlannedDraw, answer: str) -> str | None:
        """A draw's item: prefix + answer cut at a stop, or for a ``chat`` draw the block parsed from the answer."""
        if draw.rendering == CHAT:
            return parse_item(make_item("", answer, ()), self.item_format)
        return make_item(draw.prefix, answer, self.loaded.task.render.stop)

    def items_and_features(self, items: list[Any]) -> tuple[list[str | None], list[dict[str, Any]]]:
        """Item texts (None where a chat answer had none) and their feature values (null for those)."""
        texts = [self.item(f.pending.draw, f.completion.text) for f in items]
        if not self.loaded.features:
            return texts, [{}] * len(items)
        parsed = [t for t in texts if t is not None]
        values = iter(compute_features(self.loaded.features, pl.Series("text", parsed, dtype=pl.Utf8)).to_dicts())
        empty = {f"feat_{name}": None for name in self.loaded.features}
        return texts, [next(values) if t is not None else dict(empty) for t in texts]

    async def world_draws(self, items: list[Any], texts: list[str | None]) -> list[Any]:
        """1+K world draws per item (None without a world, and for a draw without an item)."""
        world: list[Any] = [None] * len(items)
        if self.loaded.world is None:
            return world
        keep = [i for i, t in enumerate(texts) if t is not None]
        if not keep:
            return world
        draws = [items[i].pending.draw for i in keep]
        seeds = [self.loaded.world_seeds(self.seed, d.pool, d.context_id, d.sample_index) for d in draws]
        for i, drawn in zip(keep, await world_matrix(self.loaded.world, [texts[i] for i in keep], seeds)):
            world[i] = drawn
        return world

    async def rows(self, items: list[Any]) -> list[dict[str, Any]]:
        """Draw rows for finished draws (``FinishedDraw``), in the same order."""
        task = self.loaded.task
        # Off the event loop: feature extraction is mostly polars, which releases the GIL, so
        # requests keep flowing meanwhile. Only this writer ever calls the extractors.
        texts, feature_rows = await asyncio.to_thread(self.items_and_features, items)
        world = await self.world_draws(items, texts)
        rows = []
        for f, text, feats, draws in zip(items, texts, feature_rows, world):
            d, c = f.pending.draw, f.completion
            rows.append({
                "run_id": self.run_id, "task": task.name, "task_version": task.version, "pool": d.pool,
                "context_id": d.context_id, "sample_index": d.sample_index, "seed": d.seed, "model": self.model_id,
                "n_exemplars": d.n_exemplars, "exemplar_ids": list(d.exemplar_ids), "prompt_hash": d.prompt_hash,
                "text": text, "completion": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens, "cached": f.cached, "rendering": d.rendering,
                "item_parsed": text is not None, **feats,
                "world_draws": [bool(x) for x in draws] if draws is not None else None,
            })
        return rows

    def frame(self, rows: list[dict[str, Any]]) -> pl.DataFrame:
        """The draws table in plan order (log order depends on which call finished first)."""
        return rows_to_frame(rows, self.schema).sort(DRAWS_SORT)
