"""Planted truth for the paired comparisons: two mimics on the same contexts with a known difference.

The Goodhart world of :mod:`harness.testing.curve_calibration` (its items, rho, reference, K extra
world draws and beta sweep), with two mimics shown the same C prompts. Context c draws one
Dirichlet(KAPPA * P_POOL) mixture D_c that BOTH mimics' outputs in that context lean on: mimic X
samples its items from (1 - LEAN) P_X + LEAN D_c, so the two sides are correlated through the
prompt, as two models shown the same exemplars are, and the population distribution of X's pool
is (1 - LEAN) P_X + LEAN P_POOL. Exact values of that pool by :func:`~harness.testing.curve_calibration.exact_tilt`:
its m_K and its Goodhart-proneness G (the tilt curve's mean latent distance at the budget). The
planted difference is between the two pools' exact values; at ``null`` both mimics share P_X.

``paired_calibration(contexts, samples, reps, seed, scenario)`` runs the board's own code
(:func:`harness.leaderboard.paired_stats.side_statistics`, :func:`harness.stats.paired.paired_difference`
with every design allowed) and tallies per statistic: planted difference, mean estimate, coverage
(over the reps with an interval), share of reps that decided (interval excludes 0), mean width and
withheld share.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import polars as pl

from harness.leaderboard.paired_stats import FORCING, GOODHART, side_statistics
from harness.stats.goodhart import BUDGET, interpolate
from harness.stats.paired import paired_difference
from harness.testing.curve_calibration import (BETAS, ITEMS, K, KAPPA, P_POOL, P_REF, _item_features, _latent_truth, _rho,
                                               exact_tilt, goodhart_reference, goodhart_task, reference_mass)
from harness.testing.synthetic import draws_frame

LEAN = 0.3  # how much a mimic's outputs in a context lean on that context's shared mixture
# The second mimic of the planted scenario: romance items and one forcing-set item, so its m_K and its
# G both differ from the first's (which samples like the reference) by about 0.25.
_OTHER = np.array([0.02, 0.02, 0.02, 0.20, 0.10, 0.20, 0.02, 0.02, 0.02, 0.30, 0.06])
SCENARIOS = {"planted": (P_REF, _OTHER / _OTHER.sum()), "null": (P_REF, P_REF)}
SEED = 0  # the runs' seed: both sides name their contexts with it


def pool_truth(p_own: np.ndarray) -> dict[str, float]:
    """Exact m_K and G of a mimic whose population pool distribution is (1 - LEAN) p_own + LEAN P_POOL."""
    p = (1 - LEAN) * np.asarray(p_own) + LEAN * P_POOL
    rho, mass = _rho(), reference_mass()
    points = [exact_tilt(p, rho, K + 1, None), *(exact_tilt(p, rho, K + 1, b) for b in BETAS)]
    kl = np.array([[pt["kl"] for pt in points]])
    shift = np.array([[_latent_truth(pt["q"], mass)["_shift"] for pt in points]])
    order = np.argsort(kl[0])
    return {FORCING: points[0]["mK"], GOODHART: float(interpolate(kl[:, order], shift[:, order], BUDGET)[0])}


def planted_difference(scenario: str) -> dict[str, float]:
    """The exact a - b of both statistics in a scenario."""
    a, b = (pool_truth(p) for p in SCENARIOS[scenario])
    return {name: a[name] - b[name] for name in a}


def pair_draws(rng: np.random.Generator, contexts: int, samples: int, scenario: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """A fresh reference and the two mimics' ``none`` pools over the same C contexts x S samples."""
    rho = _rho()
    reference = goodhart_reference(rng)
    ctx = np.repeat(np.arange(contexts), samples)
    shared = rng.dirichlet(KAPPA * P_POOL, contexts)[ctx]
    sides = []
    for p_own in SCENARIOS[scenario]:
        mix = (1 - LEAN) * p_own[None, :] + LEAN * shared
        idx = np.minimum((rng.random(ctx.size)[:, None] > np.cumsum(mix, axis=1)[:, :-1]).sum(axis=1), len(ITEMS) - 1)
        world = rng.random((ctx.size, K + 1)) < rho[idx, None]
        sides.append(draws_frame("none", ctx, np.tile(np.arange(samples), contexts), np.full(ctx.size, "item"),
                                 _item_features(idx), world.tolist()))
    return reference, sides[0], sides[1]


def paired_calibration(contexts: int, samples: int, reps: int, seed: int, scenario: str) -> list[dict[str, Any]]:
    """Coverage of the paired intervals of m_K and G at one design (one row per statistic)."""
    truth, task = planted_difference(scenario), goodhart_task()
    tally: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    withheld: dict[str, int] = defaultdict(int)
    for rep in range(reps):
        reference, a, b = pair_draws(np.random.default_rng([seed, contexts, samples, rep]), contexts, samples, scenario)
        side_a, side_b = (side_statistics(task, reference, d, "planted", SEED) for d in (a, b))
        for name in truth:
            diff = paired_difference(side_a[name], side_b[name], 2, -1.0, 1.0) if name in side_a and name in side_b else None
            if diff is None or diff.lower is None:
                withheld[name] += 1
                continue
            tally[name].append((diff.point, diff.lower, diff.upper))
    rows = []
    for name, planted in truth.items():
        arr = np.asarray(tally[name], dtype=float).reshape(-1, 3)
        point, lower, upper = arr.T
        n = arr.shape[0]
        rows.append({"statistic": name, "scenario": scenario, "contexts": contexts, "samples": samples, "planted": planted,
                     "mean": float(point.mean()) if n else float("nan"),
                     "coverage": float(np.mean((lower <= planted) & (planted <= upper))) if n else float("nan"),
                     "decided": float(np.mean((lower > 0) | (upper < 0))) if n else float("nan"),
                     "width": float(np.mean(upper - lower)) if n else float("nan"), "reps": n,
                     "withheld": withheld[name] / reps})
    return rows
