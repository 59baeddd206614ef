"""How the leaderboard's paired score difference narrows with a task's design, read from published draws.

    .venv/bin/python benchmarks/score_width_scaling.py results/published/runs/python-functions-* [--reps 16]

Two runs of one task (two models, the same contexts) are subsampled to C contexts x S samples per
pool (random contexts and samples, ``--reps`` subsets per design) and scored as ``mimic leaderboard``
scores them (harness.leaderboard.score: one joint bootstrap, paired difference with t(C-1)). It
prints, per design, the draws per model, the mean point difference and the mean half-width, then
the exponent a of half-width ~ draws^-a fitted across the designs (a = 0.5 when the interval
narrows as 1/sqrt(n)), and the draws per model that exponent puts at a half-width of 0.10. The
full design is one value (no subsampling); the others average their subsets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.leaderboard import score  # noqa: E402
from harness.leaderboard.runs import load_runs  # noqa: E402


def main() -> None:
    """Subsample, score, print the table and the fitted exponent."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="two run directories of one task (one per model)")
    ap.add_argument("--reps", type=int, default=16, help="random subsets per design")
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--target", type=float, default=0.10, help="half-width to extrapolate to")
    args = ap.parse_args()
    data = load_runs(args.runs)
    task = data.manifests[0].task
    reference = next(iter(data.references.values()))
    model_of = {str(m.run_id): data.estimates.filter(pl.col("run_id") == str(m.run_id))["model"][0] for m in data.manifests}
    by_model: dict[str, list] = {}
    for m in data.manifests:
        by_model.setdefault(model_of[str(m.run_id)], []).append(m)
    if len(by_model) != 2:
        raise SystemExit(f"need the runs of exactly two models, got {sorted(by_model)}")
    plan = data.manifests[0].plan or {}
    full_c, full_s = int(plan["contexts"]), int(plan["samples_per_context"])
    rng = np.random.default_rng(0)
    sides = {name: score.SideData(data.estimates.filter(pl.col("run_id").is_in([str(m.run_id) for m in runs])), runs)
             for name, runs in by_model.items()}

    def half_width(c: int, s: int) -> tuple[float, float]:
        contexts = rng.choice(full_c, size=c, replace=False).tolist()
        draws = {}
        for run_id, frame in data.draws.items():
            kept = frame.filter(pl.col("context_id").is_in(contexts))
            kept = kept.with_columns(pl.Series("_u", rng.random(kept.height)))
            draws[run_id] = kept.filter(pl.col("_u").rank().over(["pool", "context_id"]) <= s).drop("_u")
        _, scores, _, _ = score.score_sides(sides, task, draws, reference, n_boot=args.n_boot)
        a, b = sorted(scores)
        diff = score.paired_difference(scores[a], scores[b])
        if diff is None or diff.lower is None:
            return float("nan"), float("nan")
        return diff.point, (diff.upper - diff.lower) / 2

    designs = sorted({(full_c, full_s), (full_c // 2, full_s), (full_c, max(2, full_s * 2 // 3)), (full_c * 3 // 4, max(2, full_s * 2 // 3)),
                      (full_c // 2, max(2, full_s * 2 // 3)), (full_c, max(2, full_s // 2))}, key=lambda d: (-d[0] * d[1], -d[0]))
    pools = len(plan.get("pools", [])) or 1
    print(f"{task.get('name')}: {sorted(by_model)}; full design {full_c} x {full_s}, {pools} pools; {args.reps} subsets per smaller design")
    print("| C | S | draws per model | mean difference | mean half-width |")
    print("|---|---|---|---|---|")
    xs, ys = [], []
    for c, s in designs:
        reps = 1 if (c, s) == (full_c, full_s) else args.reps
        got = np.array([half_width(c, s) for _ in range(reps)])
        point, half = np.nanmean(got, axis=0)
        draws = c * s * pools
        xs.append(np.log(draws))
        ys.append(np.log(half))
        print(f"| {c} | {s} | {draws} | {point:.3f} | {half:.3f} |")
    slope = float(np.polyfit(xs, ys, 1)[0])
    full_half = float(np.exp(ys[0]))
    need = full_c * full_s * pools * (full_half / args.target) ** (1 / -slope) if slope < 0 else float("inf")
    print(f"half-width ~ draws^{slope:.2f} (1/sqrt(n) would be -0.50); at that rate a half-width of {args.target:.2f} "
          f"needs about {need:.0f} draws per model, {need / (full_c * full_s * pools):.1f} x the full design")


if __name__ == "__main__":
    main()
