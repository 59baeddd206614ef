"""Format adherence: per pool, the share of a chat mimic's answers that hold an item in the task's format.

A draw rendered as ``chat`` (no prefill) has its item parsed from the answer
(:mod:`harness.chat.parse`); a refusal, chatter alone or another format leaves ``item_parsed`` false.
The share of parsed answers is the mimic's format adherence under that condition: a finding about
the mimic, with the same exact cluster-robust proportion interval as control success
(:func:`harness.stats.est_rates.proportion`: Clopper-Pearson for i.i.d. rows, Korn-Graubard over
contexts, no interval below 2 contexts, flag ``too_few_contexts``).

Rows come only from ``chat`` draws, at each pool's main context size. Completion and chat+prefill
draws emit none: their item is prefix + continuation, so it exists by construction, and a row that
is 1 whatever the model does would only sit beside measured ones looking like a result.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from harness.protocols import Estimate, EstimationInputs
from harness.selection import pool_rows
from harness.stats.common import clusters_of, row
from harness.stats.est_rates import proportion

CHAT_RENDERING = "chat"  # harness.chat.renderings.CHAT: the rendering whose items are parsed


class FormatAdherence:
    """P(answer holds a parsable item) per pool, for chat-rendered draws."""

    name = "format_adherence"

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """One row per pool with chat draws (condition = the pool, feature ``item_parsed``)."""
        draws = inputs.draws
        if "rendering" not in draws.columns or "item_parsed" not in draws.columns:
            return []
        chat = draws.filter(pl.col("rendering") == CHAT_RENDERING)
        if chat.height == 0:
            return []
        pools = sorted(set(chat.get_column("pool").to_list()), key=lambda p: (p != "none", p))
        out = []
        for pool in pools:
            rows = pool_rows(chat, pool, inputs.task)
            y = rows.get_column("item_parsed").fill_null(False).cast(pl.Float64).to_numpy()
            res = proportion(y, np.ones_like(y), clusters_of(rows))
            note = {**res["note"], "unparsed": int(rows.height - y.sum()), "rendering": CHAT_RENDERING,
                    "n_exemplars": int(rows.get_column("n_exemplars")[0])}
            out.append(row(self.name, pool, "item_parsed", res["point"], (res["lower"], res["upper"]), res["n"],
                           res["method"], **note))
        return out
