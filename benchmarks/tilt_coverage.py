"""Coverage of the ``goodhart_curve`` intervals against exact bookworld values (issue 9's done-when check).

    .venv/bin/python benchmarks/tilt_coverage.py               # 200 repetitions, 400 resamples each
    .venv/bin/python benchmarks/tilt_coverage.py --reps 400 --n-boot 1000

The mimic is planted: its pool is a known finite mixture of ``N_ITEMS`` bookworld reviews (drawn
once from bookworld's generator; a few carry the flattery sentence, the forcing set), each context
drawing its own mixture from a Dirichlet around the planted one (so the contexts matter). World draws
are Bernoulli(rho) with bookworld's exact rho; the reference is bookworld's generator with its exact
F(H | R=1). Every repetition draws a fresh reference and pool, runs the real controls (``tilt`` sweep,
``reward``, ``best-of-n``) and the estimator, and checks each 95% interval against the exact value:

- tilt: r = S / (1+K) with S ~ Binomial(1+K, rho) per draw, so the target pi0(x) exp(r/beta) is an
  expectation over S; :func:`exact_tilt` enumerates it per distinct item;
- the latent distances D(F(H | R=1), Q_beta(H)) (TV, or KS for numeric latents: :mod:`harness.stats.curve_scale`)
  from the exact F and the exact tilted Q;
- the Goodhart-proneness score from the exact curve (exact KL per beta, linear interpolation).

A row of the table covers about 95% when its count lies inside the central 99.9% range of
Binomial(reps, 0.95) (column ``verdict``). Rows flagged low-ESS are counted apart; repetitions that
report no interval (too few effective contexts) are counted in ``withheld``, not in the coverage.
The designs people run (2-40 contexts) are calibrated by :mod:`harness.testing.curve_calibration`.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import binom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.worlds import bookworld  # noqa: E402
from harness.controls import BestOfNControl, NoneControl, RewardControl, TiltControl  # noqa: E402
from harness.stats.curve_scale import bounded_distance  # noqa: E402
from harness.stats.goodhart import BUDGET, GoodhartCurve, interpolate  # noqa: E402
from harness.protocols import EstimationInputs  # noqa: E402
from harness.testing.synthetic import draws_frame  # noqa: E402
from harness.testing.curve_calibration import exact_tilt  # noqa: E402
from harness.taskspec import (ComponentRef, ControlSpec, FeatureRef, ProxySpec, RenderSpec, SamplingPlan,  # noqa: E402
                              TaskSpec, WorldSpec)

K = 8  # extra world draws: 1+K = 9 per item
BETAS = (2.0, 1.0, 0.5, 0.3, 0.2, 0.1)
LATENTS = {"genre": "categorical", "helping": "binary", "n_pos": "numeric"}
N_PLAIN, N_FLATTERY = 20, 4
FLATTERY_SHARE = 0.12  # the planted mimic over-produces the forcing set (the reference has 2%)


def catalogue(seed: int = 7) -> tuple[pl.DataFrame, np.ndarray]:
    """The mixture's distinct items (bookworld rows with ``text`` and ``rho``) and their probabilities."""
    frame = bookworld.generate(4000, seed=seed)
    items = pl.concat([frame.filter(pl.col("flattery") == 0).head(N_PLAIN), frame.filter(pl.col("flattery") == 1).head(N_FLATTERY)])
    texts = [bookworld.render_item(r, g, v) for r, g, v in zip(items["rating"], items["genre"], items["review"])]
    items = items.with_columns(text=pl.Series(texts), rho=pl.Series(bookworld.rho(texts)))
    plain = np.where(items["genre"].to_numpy() == "romance", 2.0, 1.0) * (items["flattery"].to_numpy() == 0)
    p = (1 - FLATTERY_SHARE) * plain / plain.sum() + FLATTERY_SHARE * (items["flattery"].to_numpy() == 1) / N_FLATTERY
    return items, p


def task(betas=BETAS) -> TaskSpec:
    """The planted task: proxy rating, latents genre / helping / n_pos, bookworld readers with K extra draws."""
    feats = tuple(FeatureRef(n, "planted") for n in ("rating", *LATENTS))
    controls = (ControlSpec("none"), ControlSpec("tilt"), ControlSpec("reward", {"k": 3}), ControlSpec("best-of-n", {"n": 4}))
    return TaskSpec("planted-bookworld", 1, "planted tilt coverage", ComponentRef("planted"), RenderSpec("{{ text }}"), feats,
                    ProxySpec("rating", (5,)), tuple(LATENTS), controls, SamplingPlan(), world=WorldSpec("bookworld-readers", K),
                    betas=tuple(betas))


def _features(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {"feat_rating": frame["rating"].cast(pl.Float64).to_numpy(), "feat_genre": frame["genre"].to_numpy(),
            "feat_helping": frame["helping"].cast(pl.Float64).to_numpy(), "feat_n_pos": frame["n_pos"].cast(pl.Float64).to_numpy()}


def planted(rng: np.random.Generator, items: pl.DataFrame, p: np.ndarray, *, contexts=40, samples=8, n_ref=1500,
            kappa=8.0, betas=BETAS, n_boot=400, seed=0) -> EstimationInputs:
    """One data set: a bookworld reference and a planted pool, with the real controls' selections."""
    ref = bookworld.generate(n_ref, seed=int(rng.integers(2**31)))
    texts = [bookworld.render_item(r, g, v) for r, g, v in zip(ref["rating"], ref["genre"], ref["review"])]
    ref_world = rng.random((n_ref, K + 1)) < bookworld.rho(texts)[:, None]
    reference = pl.DataFrame({"ref_id": np.arange(n_ref), "text": texts, **_features(ref)}).with_columns(
        pl.Series("world_draws", ref_world.tolist(), dtype=pl.List(pl.Boolean)))
    ctx = np.repeat(np.arange(contexts), samples)
    mix = rng.dirichlet(kappa * p, contexts)[ctx]
    idx = (rng.random(ctx.size)[:, None] > np.cumsum(mix, axis=1)[:, :-1]).sum(axis=1)
    pool = items[idx]
    world = rng.random((ctx.size, K + 1)) < pool["rho"].to_numpy()[:, None]
    draws = draws_frame("none", ctx, np.tile(np.arange(samples), contexts), pool["text"].to_numpy(), _features(pool), world.tolist())
    spec = task(betas)
    sels = [*NoneControl().select(draws, spec), *TiltControl().select(draws, spec), *RewardControl(3).select(draws, spec),
            *BestOfNControl(4).select(draws, spec)]
    return EstimationInputs(spec, reference, draws, sels, seed=seed, n_boot=n_boot)


def _masses(values: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return np.array([weights[values == g].sum() for g in grid]) / weights.sum()


def truth(items: pl.DataFrame, p: np.ndarray, betas=BETAS, budget: float = BUDGET) -> dict[tuple[str, str], float]:
    """Exact values keyed (condition, feature) for the pool and every tilt, plus the score."""
    out: dict[tuple[str, str], float] = {}
    curve_kl, curve_shift = [], defaultdict(list)
    for beta in (None, *betas):
        cond = "none" if beta is None else f"tilt@{beta:g}"
        ex = exact_tilt(p, items["rho"].to_numpy(), K + 1, beta)
        out[cond, "_success"], out[cond, "_mK"] = ex["success"], ex["mK"]
        if beta is not None:  # the pool's KL is 0 by construction, not an estimate
            out[cond, "_kl"] = ex["kl"]
        dists = []
        for h, kind in LATENTS.items():
            f = bookworld.exact_distribution(h, given="success")
            values = items[h].to_numpy()
            grid = np.array(sorted(set(f) | set(values.tolist())))
            f_mass = _masses(np.array(list(f)), np.array(list(f.values())), grid)
            d = float(bounded_distance(kind, f_mass, _masses(values, ex["q"], grid))[0])
            out[cond, h] = d
            dists.append(d)
            if kind == "numeric":
                out[cond, f"mean({h})"] = float(ex["q"] @ values)
            for level in ([1] if kind == "binary" else grid if kind == "categorical" else []):
                out[cond, f"{h}={level}"] = float(ex["q"] @ (values == level))
            curve_shift[h].append(d)
        out[cond, "_shift"] = float(np.mean(dists))
        curve_shift["_shift"].append(out[cond, "_shift"])
        curve_kl.append(ex["kl"])
    for feature, ys in curve_shift.items():
        score = interpolate(np.array([curve_kl]), np.array([ys]), budget)[0]
        out["tilt", "_all" if feature == "_shift" else feature] = float(score)
    return out


def coverage(reps: int, n_boot: int, seed: int = 0, **kw) -> pl.DataFrame:
    """Per (condition, feature): repetitions with an interval, covered, low-ESS and withheld repetitions, mean point, exact value."""
    items, p = catalogue()
    exact = truth(items, p, kw.get("betas", BETAS))
    rng = np.random.default_rng(seed)
    records = []
    for rep in range(reps):
        inputs = planted(rng, items, p, n_boot=n_boot, seed=rep, **kw)
        for est in GoodhartCurve().estimate(inputs):
            key = (est.condition, est.feature)
            if key in exact:
                shown = bool(np.isfinite(est.lower) and np.isfinite(est.upper))
                records.append({"condition": est.condition, "feature": est.feature, "exact": exact[key], "point": est.point,
                                "shown": shown, "covered": shown and bool(est.lower <= exact[key] <= est.upper),
                                "low_ess": bool(est.note.get("low_ess")), "width": est.upper - est.lower if shown else None})
    frame = pl.DataFrame(records)
    return frame.group_by("condition", "feature", maintain_order=True).agg(
        pl.col("shown").sum().alias("reps"), (~pl.col("shown")).sum().alias("withheld"),
        pl.col("covered").sum().alias("covered"), pl.col("low_ess").sum().alias("low_ess"),
        pl.col("exact").first(), pl.col("point").mean().alias("mean_point"), pl.col("point").std().alias("sd_point"),
        pl.col("width").mean().alias("mean_width"),
    ).with_columns((pl.col("covered") / pl.col("reps")).alias("coverage"))


def tolerance(reps: int, level: float = 0.999) -> tuple[int, int]:
    """Central ``level`` range of the covered count under Binomial(reps, 0.95)."""
    return int(binom.ppf((1 - level) / 2, reps, 0.95)), int(binom.isf((1 - level) / 2, reps, 0.95))


def main() -> None:
    """Print the coverage table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--n-boot", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contexts", type=int, default=40)
    parser.add_argument("--samples", type=int, default=8, help="samples per context")
    parser.add_argument("--kappa", type=float, default=8.0,
                        help="Dirichlet concentration of the contexts' mixtures (lower: stronger context effects)")
    parser.add_argument("--n-ref", type=int, default=1500)
    args = parser.parse_args()
    table = coverage(args.reps, args.n_boot, args.seed, contexts=args.contexts, samples=args.samples,
                     kappa=args.kappa, n_ref=args.n_ref)
    lo, hi = tolerance(args.reps)
    bands = [tolerance(int(n)) if n else (0, 0) for n in table["reps"].to_list()]
    verdicts = ["none" if not n else "UNDER" if c < b[0] else "over" if c > b[1] else "ok"
                for n, c, b in zip(table["reps"].to_list(), table["covered"].to_list(), bands)]
    distance = pl.col("feature").is_in([*LATENTS, "_shift", "_all"])
    table = table.with_columns(
        verdict=pl.Series(verdicts),
        group=pl.when(~distance).then(pl.lit("distribution, KL, success, m_K"))
        .when(pl.col("exact") >= 0.05).then(pl.lit("distances (exact >= 0.05)")).otherwise(pl.lit("distances near 0")))
    with pl.Config(tbl_rows=200, tbl_cols=20, float_precision=3, tbl_width_chars=170):
        print(table.drop("group"))
    print(f"design: {args.contexts} contexts x {args.samples} samples, kappa {args.kappa}, {args.n_ref} reference rows, "
          f"{args.reps} repetitions, {args.n_boot} split-half noise-floor draws")
    print(f"per-row tolerance (central 99.9% of Binomial(reps, 0.95)), at {args.reps} reps: {lo}..{hi}")
    for (group,), part in table.group_by("group", maintain_order=True):
        total, covered = int(part["reps"].sum()), int(part["covered"].sum())
        counts = part["verdict"].value_counts().sort("verdict").iter_rows()
        rows = ", ".join(f"{v} {n}" for v, n in counts)
        print(f"{group}: pooled coverage {covered / max(total, 1):.3f} over {total} intervals; rows {rows}")


if __name__ == "__main__":
    main()
