"""Controls of a task: build them, list the generation pools they need, and run their selections.

Also the row helpers that controls and the curve estimators share (``pool_rows``, ``world_array``,
``with_weights``, the low-ESS rule), so no estimator imports a plugin for them.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from harness.errors import DataError, PluginError, TaskError
from harness.factories import create_component
from harness.protocols import BuildContext, Control, Selection
from harness.registry import Registries
from harness.taskspec import ControlSpec, TaskSpec
from harness.values import target_label

LOW_ESS_MIN = 10  # below this many effective draws, intervals from a tilted pool are not trustworthy
LOW_ESS_FRACTION = 0.1  # ... nor when the weights collapse onto under a tenth of the pool


def control_key(spec: ControlSpec) -> str:
    """A control's name in ``build_controls``' mapping: its type, plus its options when it has any."""
    if not spec.options:
        return spec.type
    return f"{spec.type}(" + ", ".join(f"{k}={v}" for k, v in sorted(spec.options.items())) + ")"


def build_controls(task: TaskSpec, registries: Registries, ctx: BuildContext) -> dict[str, Control]:
    """Instantiate every control of the task, in task order, and check what each needs of the task."""
    controls: dict[str, Control] = {}
    for spec in task.controls:
        key = control_key(spec)
        if key in controls:
            raise TaskError(f"task {task.name} lists control {key} twice", "list each control once")
        control = create_component(registries.controls, spec.type, spec.options, ctx, where=f"task {task.name}: control {spec.type}")
        if not isinstance(control, Control):
            raise PluginError(f"control {spec.type!r} built an object without pools(task) and select(draws, task)",
                              "fix the plugin that registers it")
        if getattr(control, "needs_world", False) and task.world is None:
            raise TaskError(f"task {task.name}: control {key} needs a world, and the task has none",
                            "add a `world:` section to the task, or remove this control")
        control.pools(task)  # surfaces bad pools, k > 1+K, missing betas now, not after generation
        controls[key] = control
    return controls


def required_pools(task: TaskSpec, controls: dict[str, Control]) -> list[str]:
    """The generation pools the controls need: ``none`` first, then prompt pools in proxy order."""
    wanted: list[str] = []
    for key, control in controls.items():
        for pool in control.pools(task):
            if pool != "none" and not pool.startswith("prompt:"):
                raise PluginError(f"control {key} asked for pool {pool!r}", "a pool is 'none' or 'prompt:<value>'")
            if pool not in wanted:
                wanted.append(pool)
    order = {"none": -1, **{f"prompt:{target_label(v)}": i for i, v in enumerate(task.proxy.values)}}
    return sorted(wanted, key=lambda p: (order.get(p, len(order)), wanted.index(p)))


def _check(selection: object, key: str) -> Selection:
    if not isinstance(selection, Selection):
        raise PluginError(f"control {key} returned {type(selection).__name__}, not a Selection", "return harness.protocols.Selection objects")
    if "weight" not in selection.kept.columns:
        raise PluginError(f"control {key}: selection {selection.condition} has no 'weight' column", "add weights that sum to 1")
    if len(selection.kept):
        total = float(selection.kept["weight"].sum())
        if not math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-6) or float(selection.kept["weight"].min()) < 0:
            raise PluginError(f"control {key}: weights of {selection.condition} sum to {total:.6g} or are negative",
                              "normalise the weights to sum to 1")
    return selection


def _same(a: Selection, b: Selection) -> bool:
    return (a.pool == b.pool and a.raw_draws == b.raw_draws and a.kept.columns == b.kept.columns
            and a.kept.equals(b.kept))


def select_all(controls: dict[str, Control], draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
    """Every control's selections, in control order. Two controls may yield the same condition only
    with identical selections (``tilt@0.1`` beside a bare ``tilt`` whose sweep holds 0.1): kept once."""
    out: list[Selection] = []
    by_condition: dict[str, Selection] = {}
    for key, control in controls.items():
        for selection in control.select(draws, task):
            selection = _check(selection, key)
            earlier = by_condition.get(selection.condition)
            if earlier is not None:
                if _same(earlier, selection):
                    continue
                raise TaskError(f"two controls produce condition {selection.condition} with different selections",
                                "give one of them another pool or parameter")
            by_condition[selection.condition] = selection
            out.append(selection)
    return out


def pool_rows(draws: pl.DataFrame, pool: str, task: TaskSpec) -> pl.DataFrame:
    """The rows of one pool at the main context size, in (context_id, sample_index) order."""
    if "pool" not in draws.columns:
        raise DataError("the draws table has no 'pool' column", "pass a draws table in the contract schema")
    rows = draws.filter(pl.col("pool") == pool)
    if rows.is_empty():
        raise DataError(f"the draws table has no rows for pool {pool!r}", "generate that pool: include it in the run's plan")
    if "n_exemplars" in rows.columns and rows["n_exemplars"].n_unique() > 1:
        sizes = set(rows["n_exemplars"].drop_nulls().to_list())
        rows = rows.filter(pl.col("n_exemplars") == (task.plan.exemplars if task.plan.exemplars in sizes else max(sizes)))
    return rows.sort(["context_id", "sample_index"])


def with_weights(rows: pl.DataFrame, weights: np.ndarray | None = None) -> pl.DataFrame:
    """``rows`` plus a Float64 ``weight`` column (uniform when ``weights`` is None)."""
    if weights is None:
        weights = np.full(len(rows), 1.0 / len(rows)) if len(rows) else np.zeros(0)
    return rows.with_columns(pl.Series("weight", np.asarray(weights, dtype=float), dtype=pl.Float64))


def world_array(rows: pl.DataFrame, name: str) -> np.ndarray:
    """The rows' world draws as an (N, 1+K) boolean array; missing draws are a DataError."""
    if "world_draws" not in rows.columns:
        raise DataError(f"control {name} needs world draws, and the draws table has no 'world_draws' column",
                        "give the task a world, or drop this control")
    lists = rows["world_draws"].to_list()
    if "item_parsed" in rows.columns:  # a chat answer with no item has nothing to reward: R = 0 for every draw
        width = max((len(x) for x in lists if x is not None), default=1)
        parsed = rows["item_parsed"].fill_null(True).to_list()
        lists = [[False] * width if x is None and not ok else x for x, ok in zip(lists, parsed)]
    if any(x is None for x in lists):
        raise DataError(f"control {name}: {sum(x is None for x in lists)} rows have no world draws", "rerun the world draws for this run")
    if len({len(x) for x in lists}) > 1:
        raise DataError(f"control {name}: rows have different numbers of world draws", "all rows need 1+K draws")
    return np.asarray(lists, dtype=bool).reshape(len(lists), -1)
