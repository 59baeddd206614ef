"""Control methods: the built-in controls ``none``, ``prompt``, ``filter``, ``reward``, ``best-of-n``, ``tilt``.

Only ``none`` and ``prompt`` cost model calls (they ARE the generation pools); the others select
or reweight the rows of one pool, so they are paired with each other and cost nothing extra.
Within a pool, rows are taken in (context_id, sample_index) order. When a pool holds draws at
several context sizes (the synchronisation curve), controls use the task's ``plan.exemplars``
size, or the largest size present when that one is absent.

Definitions (world draws are the ``world_draws`` column: 1+K booleans per row):

- ``reward@k``: keep the rows whose first k world draws all succeed; uniform weights.
- ``best-of-n``: cut the pool into consecutive groups of n rows and keep each group's best row.
  Score = the row's world success rate over all 1+K draws (or a numeric feature, option
  ``score``); ties go to the smaller seed. A last partial group is dropped (``leftover``).
  ``info['kl_bound']`` = log n - (n-1)/n, the upper bound on KL(best-of-n || pool).
- ``tilt@beta``: r(x) = the row's success rate over its 1+K world draws (in [0, 1]); weights
  w_i = exp(r_i / beta) / sum_j exp(r_j / beta) over all N pool rows (all rows kept). beta -> inf
  is the pool (``none``); beta -> 0 puts equal weight on the rows with the highest r, which is
  ``reward@(1+K)`` whenever some row succeeded on every draw. ``info``: ``kl`` = sum_i w_i log(N w_i)
  (exact KL of the reweighted pool from the pool), ``ess`` = 1 / sum_i w_i^2, and ``low_ess``
  when ESS < max(10, 0.1 N) (then ``flags`` holds "low_ess"; the selection is still returned).
- Conditions carry the pool when it is not ``none``: ``reward@4/prompt:5``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from harness.errors import DataError, TaskError
from harness.protocols import BuildContext, Selection
from harness.selection import LOW_ESS_FRACTION, LOW_ESS_MIN, pool_rows, with_weights, world_array
from harness.taskspec import TaskSpec
from harness.values import matches, target_label


def _options(name: str, options: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "no options"
        raise TaskError(f"control {name}: unknown option(s) {', '.join(unknown)}", f"this control takes {allowed}")
    return dict(options)


def _prompt_pool(value: Any) -> str:
    return f"prompt:{target_label(value)}"


def _check_pool(name: str, pool: str, task: TaskSpec) -> None:
    allowed = ["none", *(_prompt_pool(v) for v in task.proxy.values)]
    if pool not in allowed:
        raise TaskError(f"control {name}: pool {pool!r} is not a pool of task {task.name}", f"use one of {', '.join(allowed)}")


def _condition(base: str, pool: str) -> str:
    return base if pool == "none" else f"{base}/{pool}"


class NoneControl:
    """The unconditioned pool, as generated."""

    needs_world = False

    def pools(self, task: TaskSpec) -> list[str]:
        """Only the ``none`` pool."""
        return ["none"]

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """All rows of the ``none`` pool, uniform weights."""
        rows = pool_rows(draws, "none", task)
        return [Selection("none", "none", "none", None, with_weights(rows), len(rows))]


class PromptControl:
    """The proxy value in the prompt: one pool per target, kept whole."""

    needs_world = False

    def pools(self, task: TaskSpec) -> list[str]:
        """One ``prompt:<value>`` pool per proxy target."""
        return [_prompt_pool(v) for v in task.proxy.values]

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """All rows of each prompt pool."""
        out = []
        for value in task.proxy.values:
            pool = _prompt_pool(value)
            rows = pool_rows(draws, pool, task)
            out.append(Selection(pool, "prompt", pool, value, with_weights(rows), len(rows)))
        return out


class FilterControl:
    """Exact conditioning of the mimic's own P: ``none`` rows whose extracted proxy equals the target."""

    needs_world = False

    def pools(self, task: TaskSpec) -> list[str]:
        """Only the ``none`` pool."""
        return ["none"]

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """One selection per target; ``raw_draws`` is the whole pool."""
        rows = pool_rows(draws, "none", task)
        column = task.feature(task.proxy.feature).column
        if column not in rows.columns:
            raise DataError(f"control filter: the draws table has no proxy column {column!r}", "compute the task's features on the draws")
        out = []
        for value in task.proxy.values:
            kept = rows.filter(matches(rows[column], value))
            info = {"acceptance": len(kept) / len(rows), "flags": [] if len(kept) else ["empty"]}
            out.append(Selection(f"filter:{target_label(value)}", "filter", "none", value, with_weights(kept), len(rows), info))
        return out


class RewardControl:
    """Rejection on the world: keep rows whose first k draws all succeed."""

    needs_world = True

    def __init__(self, k: int, pool: str = "none"):
        self.k, self.pool = k, pool

    def pools(self, task: TaskSpec) -> list[str]:
        """The pool it selects from (option ``pool``), after checking k against the world's 1+K."""
        _check_pool("reward", self.pool, task)
        available = 1 + task.world.k if task.world else 0
        if not 1 <= self.k <= available:
            raise TaskError(f"control reward@{self.k}: k must be between 1 and 1 + K = {available}",
                            f"lower k, or raise world.k to at least {self.k - 1}")
        return [self.pool]

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """One selection: the accepted rows, uniform weights."""
        self.pools(task)
        rows = pool_rows(draws, self.pool, task)
        accepted = world_array(rows, "reward")[:, : self.k].all(axis=1)
        kept = rows.filter(pl.Series(accepted))
        info = {"k": self.k, "acceptance": float(accepted.mean()), "flags": [] if len(kept) else ["empty"]}
        return [Selection(_condition(f"reward@{self.k}", self.pool), "reward", self.pool, None, with_weights(kept), len(rows), info)]


class BestOfNControl:
    """The best of each n consecutive pool draws."""

    def __init__(self, n: int, pool: str = "none", score: str = "world"):
        self.n, self.pool, self.score = n, pool, score
        self.needs_world = score == "world"

    def pools(self, task: TaskSpec) -> list[str]:
        """The pool it selects from (option ``pool``)."""
        _check_pool("best-of-n", self.pool, task)
        if self.score != "world" and self.score not in {f.name for f in task.features}:
            raise TaskError(f"control best-of-{self.n}: score {self.score!r} is neither 'world' nor a feature of the task",
                            "set score: world or the name of a numeric feature")
        return [self.pool]

    def scores(self, rows: pl.DataFrame, task: TaskSpec) -> np.ndarray:
        """Each row's score: world success rate, or the feature's value (null scores lowest)."""
        if self.score == "world":
            return world_array(rows, "best-of-n").mean(axis=1)
        values = rows[task.feature(self.score).column]
        if not values.dtype.is_numeric():
            raise TaskError(f"control best-of-{self.n}: feature {self.score!r} is not numeric", "score on a numeric or binary feature")
        return values.cast(pl.Float64).fill_null(-math.inf).to_numpy()

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """One selection: the winner of each full group, uniform weights."""
        self.pools(task)
        rows = pool_rows(draws, self.pool, task)
        scores, seeds = self.scores(rows, task), rows["seed"].to_numpy()
        groups = len(rows) // self.n
        winners = []
        for g in range(groups):
            idx = range(g * self.n, (g + 1) * self.n)
            winners.append(min(idx, key=lambda i: (-scores[i], seeds[i])))
        kept = rows[winners] if winners else rows.head(0)
        info = {"n": self.n, "groups": groups, "leftover": len(rows) - groups * self.n, "score": self.score,
                "kl_bound": math.log(self.n) - (self.n - 1) / self.n, "flags": [] if groups else ["empty"]}
        return [Selection(_condition(f"best-of-{self.n}", self.pool), "best-of-n", self.pool, None, with_weights(kept),
                          groups * self.n, info)]


def tilt_weights(r: np.ndarray, beta: float) -> np.ndarray:
    """Normalised weights proportional to exp(r / beta), computed stably (max subtracted)."""
    logits = np.asarray(r, dtype=float) / beta
    w = np.exp(logits - logits.max())
    return w / w.sum()


def tilt_diagnostics(w: np.ndarray) -> dict[str, Any]:
    """Exact KL of the reweighted pool from the pool, effective sample size, and the low-ESS flag."""
    n = len(w)
    positive = w[w > 0]
    kl = float(np.sum(positive * np.log(n * positive)))
    ess = float(1.0 / np.sum(w**2))
    low = ess < max(LOW_ESS_MIN, LOW_ESS_FRACTION * n)
    return {"kl": max(kl, 0.0), "ess": ess, "ess_fraction": ess / n, "low_ess": low, "flags": ["low_ess"] if low else []}


class TiltControl:
    """The KL-regularised RL optimum pi0(x) exp(r(x)/beta), by reweighting the pool (no new draws)."""

    needs_world = True

    def __init__(self, beta: float | None = None, pool: str = "none"):
        self.beta, self.pool = beta, pool

    def betas(self, task: TaskSpec) -> list[float]:
        """Its own beta, or the task's ``betas`` sweep for a bare ``tilt``."""
        betas = [self.beta] if self.beta is not None else list(task.betas)
        if not betas:
            raise TaskError("control tilt has no beta", "write tilt@0.1 or add betas: [0.05, 0.2, 1.0] to the task")
        if any(not b > 0 for b in betas):
            raise TaskError(f"control tilt: every beta must be > 0, got {betas}", "use positive betas")
        return betas

    def pools(self, task: TaskSpec) -> list[str]:
        """The pool it reweights (option ``pool``)."""
        _check_pool("tilt", self.pool, task)
        self.betas(task)
        return [self.pool]

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """One selection per beta, all over the same rows and the same world draws."""
        self.pools(task)
        rows = pool_rows(draws, self.pool, task)
        r = world_array(rows, "tilt").mean(axis=1)
        out = []
        for beta in self.betas(task):
            w = tilt_weights(r, beta)
            info = {"beta": beta, **tilt_diagnostics(w), "mean_r": float(w @ r), "pool_mean_r": float(r.mean()), "n_pool": len(rows)}
            out.append(Selection(_condition(f"tilt@{beta:g}", self.pool), "tilt", self.pool, None, with_weights(rows, w), len(rows), info))
        return out


def _positive_int(name: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() or int(value) < 1:
        raise TaskError(f"control {name}: {key} must be a positive integer, got {value!r}", f"e.g. {key}: 4")
    return int(value)


def create_none(options: Mapping[str, Any], ctx: BuildContext) -> NoneControl:
    """Factory for ``none`` (no options)."""
    _options("none", options, set())
    return NoneControl()


def create_prompt(options: Mapping[str, Any], ctx: BuildContext) -> PromptControl:
    """Factory for ``prompt`` (no options)."""
    _options("prompt", options, set())
    return PromptControl()


def create_filter(options: Mapping[str, Any], ctx: BuildContext) -> FilterControl:
    """Factory for ``filter`` (no options)."""
    _options("filter", options, set())
    return FilterControl()


def create_reward(options: Mapping[str, Any], ctx: BuildContext) -> RewardControl:
    """Factory for ``reward``: ``k`` (required), ``pool`` (``none``)."""
    opts = _options("reward", options, {"k", "pool"})
    if "k" not in opts:
        raise TaskError("control reward needs k", "write reward@1 or {type: reward, k: 4}")
    return RewardControl(_positive_int("reward", "k", opts["k"]), str(opts.get("pool", "none")))


def create_best_of_n(options: Mapping[str, Any], ctx: BuildContext) -> BestOfNControl:
    """Factory for ``best-of-n``: ``n`` (required), ``pool`` (``none``), ``score`` (``world`` or a feature name)."""
    opts = _options("best-of-n", options, {"n", "pool", "score"})
    if "n" not in opts:
        raise TaskError("control best-of-n needs n", "write best-of-4 or {type: best-of-n, n: 4}")
    return BestOfNControl(_positive_int("best-of-n", "n", opts["n"]), str(opts.get("pool", "none")), str(opts.get("score", "world")))


def create_tilt(options: Mapping[str, Any], ctx: BuildContext) -> TiltControl:
    """Factory for ``tilt``: ``beta`` (else the task's ``betas``), ``pool`` (``none``)."""
    opts = _options("tilt", options, {"beta", "pool"})
    beta = None
    if opts.get("beta") is not None:
        try:
            beta = float(opts["beta"])
        except (TypeError, ValueError):
            raise TaskError(f"control tilt: beta must be a number, got {opts['beta']!r}", "write tilt@0.1") from None
        if not beta > 0 or math.isinf(beta):
            raise TaskError(f"control tilt: beta must be a positive finite number, got {beta}", "write tilt@0.1")
    return TiltControl(beta, str(opts.get("pool", "none")))

