"""A planted-null leaderboard: how often two mimics with the SAME planted distribution are called
distinguishable, and how often a planted difference is found.

    .venv/bin/python benchmarks/planted_null.py --seeds 200

For each design (C contexts x S samples per context; C in 4, 8, 16 and S = 8 by default) and
each seed, :func:`harness.testing.planted_runs.trial` builds two mimics of one planted
distribution with a context effect (intra-context correlation 1/3), the same contexts (paired
prompts; ``--unpaired``: each its own plan seed) and independent samples; runs the built-in ``latent_shift`` estimator on each; ranks
them as ``mimic leaderboard`` does (joint bootstrap score, ranks only where decided) and compares
them as ``mimic compare`` does. A correct 95% procedure decides between equal mimics in at most 5%
of seeds; the table prints that rate with its binomial 95% interval (Wilson), on the leaderboard
score, on ``mimic compare``'s score, and on every row of ``mimic compare`` (the worst row is
named). Then mimic-b gets a planted difference (``--power-shift``: larger TV of h, W1 of x and
shift of t) and the table prints the power: the share of seeds where mimic-a is decided better.
It also prints the coverage of the single-model score intervals of the null runs, against the
expected score at the design (estimated by the mean of all the null runs' scores at that design).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.stats.intervals import wilson  # noqa: E402
from harness.testing.planted_runs import MimicSpec, Trial, trial  # noqa: E402


def rate(hits: int, n: int) -> str:
    """``3.0% [1.4, 6.4]``: a share with its Wilson 95% interval."""
    lo, hi = wilson(hits / n, n)
    return f"{100 * hits / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def run_design(contexts: int, samples: int, seeds: Sequence[int], b: MimicSpec, args: argparse.Namespace) -> list[Trial]:
    """One trial per seed at one design."""
    return [trial(seed, contexts=contexts, samples=samples, b=b, n_boot=args.n_boot, estimator_boot=args.estimator_boot,
                  paired=not args.unpaired) for seed in seeds]


def coverage(trials: list[Trial]) -> tuple[int, int, int]:
    """(covered, with an interval, total): score intervals against the mean score over all trials."""
    scores = [s for t in trials for s in t.scores if s[0] is not None]
    truth = float(np.mean([s[0] for s in scores]))
    with_iv = [s for s in scores if s[1] is not None]
    return sum(s[1] <= truth <= s[2] for s in with_iv), len(with_iv), len(scores)


def summarise(label: str, null: list[Trial], planted: list[Trial]) -> list[str]:
    """Table rows for one design."""
    n = len(null)
    rows = sorted({k for t in null for k in t.rows_decided})
    per_row = {k: sum(t.rows_decided.get(k, False) for t in null) for k in rows}
    worst = max(rows, key=lambda k: per_row[k])
    covered, with_iv, total = coverage(null)
    power_rows = {k: sum(t.rows_decided.get(k, False) for t in planted) for k in rows}
    return [
        f"| {label} | leaderboard score | {rate(sum(t.leaderboard_decided for t in null), n)} | "
        f"{rate(sum(t.leaderboard_a_first for t in planted), len(planted))} |",
        f"| {label} | mimic compare: score | {rate(sum(t.compare_score_decided for t in null), n)} | "
        f"{rate(sum(t.compare_score_decided for t in planted), len(planted))} |",
        f"| {label} | mimic compare: worst row ({'/'.join(worst[1:])}) | {rate(per_row[worst], n)} | "
        f"{rate(power_rows[worst], len(planted))} |",
        f"| {label} | mimic compare: all {len(rows)} rows pooled | {rate(sum(per_row.values()), n * len(rows))} | "
        f"{rate(sum(power_rows.values()), len(planted) * len(rows))} |",
        f"| {label} | score interval covers the design's mean score | {rate(covered, with_iv)} ({total - with_iv} without) | |",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the designs and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="seeds per design (default 200)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--n-boot", type=int, default=400, help="joint bootstrap replicates (default 400)")
    parser.add_argument("--estimator-boot", type=int, default=100, help="the latent_shift estimator's resamples (default 100)")
    parser.add_argument("--power-shift", type=float, default=0.15, help="added to mimic-b's TV of h, W1 of x and shift of t")
    parser.add_argument("--unpaired", action="store_true", help="mimic-b gets its own plan seed (other prompts): contexts not paired")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.n_boot < 100 or args.estimator_boot < 1:
        parser.error("--seeds must be >= 1, --n-boot >= 100, --estimator-boot >= 1")
    base = MimicSpec()
    shifted = MimicSpec(tv_h=base.tv_h + args.power_shift, w1_x=base.w1_x + args.power_shift, shift_t=base.shift_t + args.power_shift)
    print(f"planted null: two mimics, TV(h) {base.tv_h}, W1(x)/IQR {base.w1_x}, shift(t) {base.shift_t}, kappa {base.kappa}; "
          f"power: mimic-b + {args.power_shift} on each; {args.seeds} seeds per design, {args.n_boot} joint replicates; "
          f"contexts {'not paired (own plan seeds)' if args.unpaired else 'paired (one plan seed)'}")
    print("\n| design | decision | null: called distinguishable | planted difference: power |\n|---|---|---|---|")
    start = time.perf_counter()
    for contexts in args.contexts:
        seeds = range(args.seeds)
        null = run_design(contexts, args.samples, seeds, base, args)
        planted = run_design(contexts, args.samples, seeds, shifted, args)
        print("\n".join(summarise(f"C = {contexts}, S = {args.samples}", null, planted)), flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
