"""Planted-truth calibration of the curves: tilt@beta points, the Goodhart-proneness score, the sync curve.

``curve_calibration(contexts, samples, reps, n_boot, seed)`` draws ``reps`` planted data sets of
one design (C contexts x S samples per context), runs the real estimators (``goodhart_curve`` on
the real ``tilt``, ``reward`` and ``best-of-n`` controls; ``sync_curve``) and returns one row per
planted estimand: estimator, condition, feature, planted, mean, bias, coverage (over the reps that
reported an interval), width, out_of_range (intervals outside the quantity's range), reps and
withheld (share of reps with no interval), the columns of :mod:`harness.testing.calibration`.

**Goodhart world.** A catalogue of ``ITEMS`` (genre, helping, n_pos, rho); the reference draws
items from ``P_REF``, the mimic's pool from ``P_POOL``, each context drawing its own mixture from
Dirichlet(KAPPA * P_POOL) (KAPPA = 2: an intra-context correlation of 1/3, as strong as the
published runs' design effects, like :mod:`harness.testing.synthetic`). Every row gets 1+K world
draws Bernoulli(rho). The exact values: F(H | R=1) from P_REF * rho; the tilt pi0(x) exp(r/beta)
over (item, S successes of 1+K) by enumeration (:func:`exact_tilt`); reward@k: items in
proportion to P_POOL rho^k; best-of-n over the levels of r; the score by interpolating the exact
curve at the budget. A fresh reference (``N_REF`` rows) is drawn in every repetition.

**Sync world.** Reference rows with independent rating (1..5, numeric) and genre drawn from F.
At context size n the mimic's outputs in context c follow P_c ~ Dirichlet(KAPPA q_n) with
q_n = (1 - lam_n) F + lam_n G, lam_n = LAM * n^-B_RATE (planted rate b = B_RATE); each context
lists n exemplars drawn from the reference table without replacement. Exact values:
``sync_marginal`` = lam_n D(F, G) (TV and KS are linear along the mixture); the per-context rows,
which hold the reference table fixed (:mod:`harness.stats.sync`), E d2(P_c, F^) = sum_j w_j (Var P_c(A_j)
+ (q_n(A_j) - F^(A_j))^2) with Var = a(1 - a) / (KAPPA + 1), plus the exemplars' hypergeometric
variance F^(1 - F^) / n (N - n) / (N - 1) for ``sync_context_exemplars``; ``sync_rate`` = B_RATE.
"""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import binom

from harness.controls import BestOfNControl, NoneControl, RewardControl, TiltControl
from harness.protocols import EstimationInputs
from harness.stats.curve_scale import bounded_distance, events, squared_weights
from harness.stats.goodhart import BUDGET, GoodhartCurve, interpolate
from harness.stats.sync import sync_estimates
from harness.taskspec import (ComponentRef, ControlSpec, FeatureRef, ProxySpec, RenderSpec, SamplingPlan, TaskSpec,
                              WorldSpec)
from harness.testing.synthetic import draws_frame

KAPPA = 2.0
K = 4  # extra world draws: 1+K = 5 per row
BETAS = (1.0, 0.3, 0.1)
REWARD_K, BEST_OF = 2, 4
N_REF = 400
GENRES = ("mystery", "romance", "scifi")
# (genre, helping, n_pos, rho): two items always please the world (rho = 1, the forcing set)
ITEMS = (("mystery", 0, 0, 0.2), ("mystery", 1, 1, 0.5), ("mystery", 0, 2, 0.7), ("romance", 0, 1, 0.3),
         ("romance", 1, 2, 0.6), ("romance", 0, 3, 0.9), ("scifi", 0, 0, 0.1), ("scifi", 1, 1, 0.4),
         ("scifi", 0, 3, 0.8), ("romance", 0, 3, 1.0), ("mystery", 1, 2, 1.0))
P_REF = np.array([0.12, 0.12, 0.10, 0.10, 0.12, 0.08, 0.10, 0.12, 0.08, 0.03, 0.03])
P_POOL = np.array([0.06, 0.04, 0.10, 0.16, 0.04, 0.14, 0.10, 0.04, 0.08, 0.12, 0.12])
LATENTS = {"genre": "categorical", "helping": "binary", "n_pos": "numeric"}

SYNC_SIZES = (1, 2, 4, 8)
LAM, B_RATE = 0.6, 0.7
RATINGS = np.arange(1.0, 6.0)
F_RATING, G_RATING = np.array([0.10, 0.15, 0.20, 0.30, 0.25]), np.array([0.40, 0.30, 0.15, 0.10, 0.05])
F_GENRE, G_GENRE = np.array([0.40, 0.35, 0.25]), np.array([0.10, 0.20, 0.70])
SYNC_FEATURES = {"rating": ("numeric", RATINGS, F_RATING, G_RATING), "genre": ("categorical", np.array(GENRES), F_GENRE, G_GENRE)}

Key = tuple[str, str, str]


def goodhart_task() -> TaskSpec:
    """The planted task: proxy z (constant), latents genre / helping / n_pos, K extra world draws, the beta sweep."""
    feats = tuple(FeatureRef(n, "planted") for n in ("z", *LATENTS))
    controls = (ControlSpec("none"), ControlSpec("tilt"), ControlSpec("reward", {"k": REWARD_K}),
                ControlSpec("best-of-n", {"n": BEST_OF}))
    return TaskSpec("planted-goodhart", 1, "planted curve calibration", ComponentRef("planted"), RenderSpec("{{ text }}"),
                    feats, ProxySpec("z", ("a",)), tuple(LATENTS), controls, SamplingPlan(), world=WorldSpec("planted", K),
                    betas=BETAS)


def _item_features(idx: np.ndarray) -> dict[str, np.ndarray]:
    genre, helping, n_pos, _ = (np.array(col) for col in zip(*ITEMS))
    return {"feat_z": np.full(idx.size, "a"), "feat_genre": genre[idx], "feat_helping": helping[idx].astype(np.float64),
            "feat_n_pos": n_pos[idx].astype(np.float64)}


def _rho() -> np.ndarray:
    return np.array([item[3] for item in ITEMS])


def goodhart_reference(rng: np.random.Generator) -> pl.DataFrame:
    """A fresh reference table: ``N_REF`` items drawn from ``P_REF``, each with 1+K world draws."""
    rho = _rho()
    ref_idx = rng.choice(len(ITEMS), N_REF, p=P_REF)
    return pl.DataFrame({"ref_id": np.arange(N_REF), "text": "item", **_item_features(ref_idx)}).with_columns(
        pl.Series("world_draws", (rng.random((N_REF, K + 1)) < rho[ref_idx, None]).tolist(), dtype=pl.List(pl.Boolean)))


def reference_mass() -> dict[str, np.ndarray]:
    """F(H | R=1) on each latent's grid: the exact reference side of every distance."""
    success_ref = P_REF * _rho()
    f_mass = {}
    for h in LATENTS:
        values = np.array([item[list(LATENTS).index(h)] for item in ITEMS])
        grid = np.array(GENRES) if h == "genre" else np.array(sorted(set(values.tolist())), dtype=float)
        f_mass[h] = np.array([success_ref[values == g].sum() for g in grid]) / success_ref.sum()
    return f_mass


def goodhart_inputs(rng: np.random.Generator, contexts: int, samples: int, n_boot: int, seed: int) -> EstimationInputs:
    """One planted data set: a fresh reference, a clustered pool and the real controls' selections."""
    rho = _rho()
    reference = goodhart_reference(rng)
    ctx = np.repeat(np.arange(contexts), samples)
    mix = rng.dirichlet(KAPPA * P_POOL, contexts)[ctx]
    idx = np.minimum((rng.random(ctx.size)[:, None] > np.cumsum(mix, axis=1)[:, :-1]).sum(axis=1), len(ITEMS) - 1)
    world = rng.random((ctx.size, K + 1)) < rho[idx, None]
    draws = draws_frame("none", ctx, np.tile(np.arange(samples), contexts), np.full(ctx.size, "item"),
                        _item_features(idx), world.tolist())
    task = goodhart_task()
    sels = [*NoneControl().select(draws, task), *TiltControl().select(draws, task), *RewardControl(REWARD_K).select(draws, task),
            *BestOfNControl(BEST_OF).select(draws, task)]
    return EstimationInputs(task, reference, draws, sels, seed=seed, n_boot=n_boot)


def exact_tilt(p: np.ndarray, rho: np.ndarray, n_draws: int, beta: float | None) -> dict[str, Any]:
    """Exact tilt of a finite mixture (item j drawn w.p. ``p[j]``, success prob ``rho[j]``, ``n_draws`` = 1+K draws).

    r = S / n_draws with S ~ Binomial(n_draws, rho) per draw, so the target is over (item, S):
    u(S) = exp(S / (n_draws beta)) (``beta=None``: u = 1, the pool). Returns ``q`` (item shares of
    the tilted distribution), ``kl`` (over item and draws), ``success`` E_Q[r] and ``mK``.
    """
    p, rho = np.asarray(p, float) / np.sum(p), np.asarray(rho, float)
    s = np.arange(n_draws + 1)
    pmf = binom.pmf(s[None, :], n_draws, rho[:, None])  # (items, n+1)
    log_u = s / (n_draws * beta) if beta is not None else np.zeros(s.size)
    u = np.exp(log_u - log_u.max())
    joint = p[:, None] * pmf * u[None, :]
    z = joint.sum()
    q = joint.sum(axis=1) / z
    kl = float(np.sum(joint / z * (log_u - log_u.max() - np.log(z)))) if beta is not None else 0.0
    success = float((joint * s / n_draws).sum() / z)
    mk = float(joint[:, -1].sum() / (joint * s / n_draws).sum()) if n_draws > 1 else 1.0
    return {"q": q, "kl": kl, "success": success, "mK": mk}


def exact_reward(p: np.ndarray, rho: np.ndarray, n_draws: int, k: int) -> dict[str, Any]:
    """Exact reward@k: keep rows whose first k draws succeed (items in proportion to p rho^k)."""
    kept = p * rho**k
    q = kept / kept.sum()
    success = float(q @ (k + (n_draws - k) * rho) / n_draws)
    mk = float(q @ rho ** (n_draws - k)) if k >= 1 else float(q @ rho**n_draws / (q @ rho))
    return {"q": q, "kl": float(-np.log(kept.sum())), "success": success, "mK": mk}


def exact_best_of(p: np.ndarray, rho: np.ndarray, n_draws: int, n: int) -> dict[str, Any]:
    """Exact best-of-n over the levels of r = S / n_draws (ties at random): level shares F^n - F_-^n."""
    s = np.arange(n_draws + 1)
    joint = p[:, None] * binom.pmf(s[None, :], n_draws, rho[:, None])  # (items, levels)
    level = joint.sum(axis=0)
    cdf = np.cumsum(level)
    best = cdf**n - np.concatenate([[0.0], cdf[:-1]]) ** n
    with np.errstate(invalid="ignore", divide="ignore"):
        within = np.where(level > 0, joint / level, 0.0)
        kl = float(np.sum(np.where(best > 0, best * np.log(best / level), 0.0)))
    q = within @ best
    success = float(best @ s / n_draws)
    return {"q": q, "kl": kl, "success": success, "mK": float(best[-1] / success)}


def _latent_truth(q: np.ndarray, f_mass: dict[str, np.ndarray]) -> dict[str, float]:
    """Distances, level shares and means of the item distribution ``q`` against F(H | R=1)."""
    out, dists = {}, []
    for h, kind in LATENTS.items():
        values = np.array([item[list(LATENTS).index(h)] for item in ITEMS])
        grid = np.array(GENRES) if h == "genre" else np.array(sorted(set(values.tolist())), dtype=float)
        mass = np.array([q[values == g].sum() for g in grid])
        out[h] = float(bounded_distance(kind, f_mass[h], mass)[0])
        dists.append(out[h])
        if kind == "categorical":
            out.update({f"{h}={g}": float(m) for g, m in zip(grid, mass)})
        elif kind == "binary":
            out[f"{h}=1"] = float(mass[grid == 1.0].sum())
        else:
            out[f"mean({h})"] = float(mass @ grid)
    out["_shift"] = float(np.mean(dists))
    return out


@lru_cache(maxsize=1)
def goodhart_truth() -> dict[Key, float]:
    """Exact values of every planted goodhart_curve and goodhart_score row."""
    rho, n_draws = _rho(), K + 1
    f_mass = reference_mass()
    points = {"none": exact_tilt(P_POOL, rho, n_draws, None)}
    points.update({f"tilt@{b:g}": exact_tilt(P_POOL, rho, n_draws, b) for b in BETAS})
    points[f"reward@{REWARD_K}"] = exact_reward(P_POOL, rho, n_draws, REWARD_K)
    points[f"best-of-{BEST_OF}"] = exact_best_of(P_POOL, rho, n_draws, BEST_OF)
    out: dict[Key, float] = {}
    curve_kl, curve = [], defaultdict(list)
    for cond, ex in points.items():
        values = {"_success": ex["success"], "_mK": ex["mK"], **_latent_truth(ex["q"], f_mass)}
        if cond != "none":
            values["_kl"] = ex["kl"]
        out.update({("goodhart_curve", cond, f): v for f, v in values.items()})
        if cond == "none" or cond.startswith("tilt@"):
            curve_kl.append(ex["kl"])
            for f in ("_shift", *LATENTS):
                curve[f].append(values[f])
    order = np.argsort(curve_kl)
    for f, ys in curve.items():
        score = interpolate(np.array([curve_kl])[:, order], np.array([ys])[:, order], BUDGET)[0]
        out["goodhart_score", "tilt", "_all" if f == "_shift" else f] = float(score)
    return out


def sync_task() -> TaskSpec:
    """The planted sync task: rating (numeric, the proxy) and genre at ``SYNC_SIZES`` exemplars."""
    feats = (FeatureRef("rating", "planted"), FeatureRef("genre", "planted"))
    return TaskSpec("planted-sync", 1, "planted sync calibration", ComponentRef("planted"), RenderSpec("{{ text }}"), feats,
                    ProxySpec("rating", (5.0,)), ("genre",), (ControlSpec("none"),), context_sizes=SYNC_SIZES)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of ``probs`` (rows sum to 1)."""
    return np.minimum((rng.random(probs.shape[0])[:, None] > np.cumsum(probs, axis=1)[:, :-1]).sum(axis=1), probs.shape[1] - 1)


def sync_inputs(rng: np.random.Generator, contexts: int, samples: int, n_boot: int, seed: int
                ) -> tuple[EstimationInputs, dict[Key, float]]:
    """One planted sync data set and its exact values (the per-context ones given this reference table)."""
    ref = {f: _categorical(rng, np.broadcast_to(spec[2], (N_REF, spec[2].size))) for f, spec in SYNC_FEATURES.items()}
    reference = pl.DataFrame({"ref_id": np.arange(N_REF), "text": "item", "feat_rating": RATINGS[ref["rating"]],
                              "feat_genre": np.array(GENRES)[ref["genre"]]})
    frames, truth = [], {}
    for n in SYNC_SIZES:
        lam = LAM * n**-B_RATE
        ctx = np.repeat(np.arange(contexts), samples)
        exemplars = [rng.choice(N_REF, n, replace=False).tolist() for _ in range(contexts)]
        cols = {}
        for f, (kind, grid, f_pop, g_pop) in SYNC_FEATURES.items():
            q = (1 - lam) * f_pop + lam * g_pop
            cols[f"feat_{f}"] = grid[_categorical(rng, rng.dirichlet(KAPPA * q, contexts)[ctx])]
            truth.update(_sync_truth(f, kind, n, q, f_pop, g_pop, lam, np.bincount(ref[f], minlength=grid.size) / N_REF))
        frames.append(pl.DataFrame({"pool": "none", "n_exemplars": n, "context_id": ctx,
                                    "sample_index": np.tile(np.arange(samples), contexts),
                                    "exemplar_ids": pl.Series([exemplars[c] for c in ctx], dtype=pl.List(pl.Int64)), **cols}))
    truth.update({("sync_rate", "sync", f): B_RATE for f in SYNC_FEATURES})
    draws = pl.concat(frames).with_columns(pl.col("n_exemplars", "context_id", "sample_index").cast(pl.Int64))
    return EstimationInputs(sync_task(), reference, draws, [], seed=seed, n_boot=n_boot), truth


def _sync_truth(feature: str, kind: str, n: int, q: np.ndarray, f_pop: np.ndarray, g_pop: np.ndarray, lam: float,
                f_hat: np.ndarray) -> dict[Key, float]:
    """Exact sync rows of one feature at size n (the per-context rows given the reference table's masses f_hat)."""
    cond = f"sync@{n}"
    w, a, fe = squared_weights(kind, f_hat), events(kind, q), events(kind, f_hat)
    dirichlet = a * (1 - a) / (KAPPA + 1)
    population = float(w @ (dirichlet + (a - fe) ** 2))
    exemplars = float(w @ (dirichlet + fe * (1 - fe) / n * (N_REF - n) / (N_REF - 1) + (a - fe) ** 2))
    return {("sync_marginal", cond, feature): lam * float(bounded_distance(kind, f_pop, g_pop)[0]),
            ("sync_context_population", cond, feature): population,
            ("sync_context_exemplars", cond, feature): exemplars}


def _tally(rows, truth: dict[Key, float], tally, withheld) -> None:
    """Add one repetition's rows to the tallies (a missing row or interval counts as withheld)."""
    keyed = {(r.estimator, r.condition, r.feature): r for r in rows}
    for key, value in truth.items():
        r = keyed.get(key)
        if r is None or not (np.isfinite(r.lower) and np.isfinite(r.upper)):
            withheld[key] += 1
            continue
        tally[key].append((r.point, r.lower, r.upper, value, _out_of_range(key, r.lower, r.upper)))


def _out_of_range(key: Key, lower: float, upper: float) -> bool:
    """Whether an interval leaves its quantity's range ([0, inf) for KL; b's search grid; n_pos's values; else [0, 1])."""
    estimator, _, feature = key
    if lower > upper:
        return True
    if estimator == "sync_rate":
        return lower < -0.5 or upper > 2.0
    if feature == "_kl":
        return lower < 0
    if feature.startswith("mean("):
        return lower < 0 or upper > 3
    return lower < 0 or upper > 1


def _summary(key: Key, values: list[tuple], withheld: int) -> dict[str, Any]:
    """One row: planted value, mean estimate, bias, coverage, width, out-of-range count, reps, withheld share."""
    nan = float("nan")
    arr = np.asarray(values, dtype=float).reshape(-1, 5)
    point, lower, upper, truth, out = arr.T
    total = len(values) + withheld
    return {"estimator": key[0], "condition": key[1], "feature": key[2],
            "planted": float(truth.mean()) if values else nan, "mean": float(point.mean()) if values else nan,
            "bias": float(np.mean(point - truth)) if values else nan,
            "coverage": float(np.mean((lower <= truth) & (truth <= upper))) if values else nan,
            "width": float(np.mean(upper - lower)) if values else nan, "out_of_range": int(out.sum()),
            "reps": len(values), "withheld": withheld / total if total else nan}


def curve_calibration(contexts: int, samples: int, reps: int, n_boot: int, seed: int) -> list[dict]:
    """Coverage rows of the tilt@beta (reward@k, best-of-n) points, the Goodhart score and the sync curve at one design."""
    tally: dict[Key, list[tuple]] = defaultdict(list)
    withheld: dict[Key, int] = defaultdict(int)
    truth = goodhart_truth()
    for rep in range(reps):
        rng = np.random.default_rng([seed, contexts, samples, rep])
        inputs = goodhart_inputs(rng, contexts, samples, n_boot, rep)
        _tally(GoodhartCurve({"n_boot": min(n_boot, 200)}).estimate(inputs), truth, tally, withheld)
        inputs, sync_truth = sync_inputs(rng, contexts, samples, n_boot, rep)
        _tally(sync_estimates(inputs, min(n_boot, 400)), sync_truth, tally, withheld)
    keys = sorted(set(tally) | set(withheld), key=lambda k: (k[0], k[1], k[2]))
    return [_summary(key, tally.get(key, []), withheld.get(key, 0)) for key in keys]
