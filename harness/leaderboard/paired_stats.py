"""Per model, the two statistics the board ranks beside the score, on all contexts and without each one.

- **Forcing-set mass under reward@K**: m_K = P(the world's K further draws all succeed | R = 1) of
  the model's unconditioned outputs (pool ``none``), K = the world's extra draws (bookworld: 8, the
  task's ``reward@8``). A reward@K selection keeps the R = 1 outputs whose further draws succeed, so
  m_K is the share of the model's successes that optimising on the reward keeps; 2 (1 - m) bounds
  how far that moves any event (THEORY.md, estimator 4). Higher: optimisation changes less.
- **Goodhart-proneness** G: the mean latent distance of the ``tilt`` curve at the KL budget
  (:mod:`harness.stats.goodhart`). Lower: the latents move less for the reward bought.

Both come from the estimator's own code, run on the model's draws: :class:`~harness.stats.goodhart.PoolData`,
:func:`~harness.stats.goodhart.points_for` and :func:`~harness.stats.goodhart.replicates` give every
statistic of the pool and its tilts on the whole sample and without each context (the pool's
``_mK``; the distances and KLs that :func:`~harness.stats.goodhart.interpolate` turns into G). The
context each replicate leaves out is named by :func:`harness.leaderboard.jointboot.context_keys`
(seed, exemplar count, context id, exemplars), so two models' replicates pair by the prompt shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from harness.controls import TiltControl
from harness.errors import DataError, TaskError
from harness.leaderboard.jointboot import context_keys
from harness.protocols import EstimationInputs
from harness.stats.goodhart import BUDGET, PoolData, interpolate, points_for, replicates
from harness.stats.paired import SideReplicates
from harness.taskspec import TaskSpec

FORCING, GOODHART = "forcing_mass", "goodhart"
POOL = "none"


def tilt_spec(task: TaskSpec) -> bool:
    """Whether the task sweeps ``tilt`` over its ``none`` pool (the Goodhart-proneness score's curve)."""
    return any(c.type == "tilt" and (c.options or {}).get("pool", POOL) == POOL for c in task.controls) and bool(task.betas)


def reward_ks(task: TaskSpec) -> list[int]:
    """The K of the task's ``reward@K`` controls."""
    return sorted(int((c.options or {}).get("k", 1)) for c in task.controls if c.type == "reward")


def _context_names(data: PoolData, run_id: str, seed: Any) -> list[str]:
    """The context key of each delete-one-context replicate (cluster label order)."""
    keys = context_keys(data.rows, run_id, seed).to_list()
    names: list[str | None] = [None] * data.n_clusters
    for label, key in zip(np.asarray(data.labels).tolist(), keys):
        names[label] = key
    return [str(k) for k in names]


def side_statistics(task: TaskSpec, reference: pl.DataFrame, draws: pl.DataFrame, run_id: str, seed: Any,
                    budget: float = BUDGET) -> dict[str, SideReplicates]:
    """{FORCING: m_K, GOODHART: G} of one run, each on all contexts and without each (empty where not defined)."""
    if not tilt_spec(task) or "world_draws" not in draws.columns:
        return {}
    try:
        sels = TiltControl(pool=POOL).select(draws, task)
        inputs = EstimationInputs(task, reference, draws, sels)
        data = PoolData(inputs, POOL, sels[0])
    except (DataError, TaskError, ValueError, KeyError):
        return {}  # the draws cannot rebuild the pool (no world draws, no pool none): nothing to pair
    points = points_for(data, sels)
    reps = replicates(data, points)
    names = _context_names(data, run_id, seed) if reps.mimic is not None else []
    out: dict[str, SideReplicates] = {}
    if (0, "_mK") in reps.est:
        without = reps.mimic[0, "_mK"] if reps.mimic is not None else []
        out[FORCING] = SideReplicates(reps.est[0, "_mK"], dict(zip(names, map(float, without))))
    latents = [h for h, *_ in data.latents]
    if latents and len(points) > 1:
        order = [0, *sorted(range(1, len(points)), key=lambda j: reps.est[j, "_kl"])]
        whole = _goodhart(lambda j, f: np.array([reps.est[j, f]]), order, latents, budget)[0]
        without = _goodhart(lambda j, f: reps.mimic[j, f], order, latents, budget) if reps.mimic is not None else []
        out[GOODHART] = SideReplicates(float(whole), dict(zip(names, map(float, without))))
    return out


def _goodhart(value, order: list[int], latents: list[str], budget: float) -> np.ndarray:
    """G per sample: the mean over latents of the distance interpolated at the budget along the curve's KL."""
    kl = np.column_stack([value(j, "_kl") for j in order])
    return np.mean([interpolate(kl, np.column_stack([value(j, h) for j in order]), budget) for h in latents], axis=0)


def model_statistics(task: Mapping[str, Any] | None, reference: pl.DataFrame | None, runs: list[Any],
                     draws: Mapping[str, pl.DataFrame], budget: float = BUDGET) -> dict[str, SideReplicates] | str:
    """One model's statistics from its single run, or the words saying why they cannot be paired."""
    if not task or reference is None:
        return "the runs' task or reference table was not saved"
    if len(runs) != 1:
        return f"{len(runs)} runs of this model: the paired comparison uses one run per model"
    frame = draws.get(str(runs[0].run_id))
    if frame is None:
        return "the run's draws were not saved"
    stats = side_statistics(TaskSpec.from_dict(dict(task)), reference, frame, str(runs[0].run_id), runs[0].seed, budget)
    return stats if stats else "the draws hold no world draws or tilt sweep over pool none"


def finite(x: Any) -> float | None:
    """A finite float, else None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None
