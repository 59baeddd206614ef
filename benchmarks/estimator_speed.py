"""Speed of the cluster bootstrap: the harness engine vs a plain numpy loop, 1,000,000 mimic rows.

    .venv/bin/python benchmarks/estimator_speed.py [--rows 1000000] [--n-boot 1000]

Generated data: ``--rows`` mimic draws in contexts of 8 (a categorical latent with 5 levels, a
numeric latent, a context effect on both) and a reference of ``--rows // 10`` i.i.d. rows.
For each computation it times the harness (harness.stats: counts x cluster sums, chunked) and a
plain numpy implementation of the same resampling (per resample: draw contexts, gather their
rows, recompute the statistic), on the same number of resamples, and prints the ratio. The full
``latent_shift`` estimator (interval + null + design effect + noise floor) is timed as well.
The plain W1 loop is slow, so it runs ``--plain-w1`` resamples and its time is reported per
resample beside the harness's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core each, before numpy loads
    os.environ.setdefault(_var, "1")

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.protocols import EstimationInputs, Selection  # noqa: E402
from harness.stats.bootstrap import Clusters, chunk_sizes, two_sample  # noqa: E402
from harness.stats.distances import Side, code_values, distance  # noqa: E402
from harness.stats.est_shift import LatentShift  # noqa: E402
from harness.testing.synthetic import planted_task  # noqa: E402


def make_data(rows: int, seed: int = 0):
    """Mimic rows (context ids, category codes, numeric values) and reference rows."""
    rng = np.random.default_rng(seed)
    contexts = np.repeat(np.arange(rows // 8), 8)
    probs = rng.dirichlet(np.full(5, 4.0), contexts.max() + 1)
    cats = (rng.random(rows)[:, None] > np.cumsum(probs, axis=1)[contexts][:, :-1]).sum(axis=1)
    nums = rng.standard_normal(contexts.max() + 1)[contexts] * 0.5 + rng.standard_normal(rows)
    n_ref = rows // 10
    ref_cats = rng.integers(0, 5, n_ref)
    ref_nums = rng.standard_normal(n_ref) * 1.1
    return contexts, cats, nums, ref_cats, ref_nums


def plain_tv(rng, contexts, cats, ref_cats, n_boot: int) -> np.ndarray:
    """TV by a plain loop: gather the rows of resampled contexts, histogram, compare."""
    order = np.argsort(contexts, kind="stable")
    starts = np.searchsorted(contexts[order], np.arange(contexts.max() + 2))
    n_ctx, out = contexts.max() + 1, np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, n_ctx, n_ctx)
        lengths = starts[pick + 1] - starts[pick]
        rows = order[np.repeat(starts[pick], lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))]
        q = np.bincount(cats[rows], minlength=5) / rows.size
        r = ref_cats[rng.integers(0, ref_cats.size, ref_cats.size)]
        p = np.bincount(r, minlength=5) / r.size
        out[b] = 0.5 * np.abs(p - q).sum()
    return out


def plain_mean_diff(rng, contexts, nums, ref_nums, n_boot: int) -> np.ndarray:
    """Difference of means by a plain loop over resamples."""
    order = np.argsort(contexts, kind="stable")
    starts = np.searchsorted(contexts[order], np.arange(contexts.max() + 2))
    n_ctx, out = contexts.max() + 1, np.empty(n_boot)
    sums, sizes = np.add.reduceat(nums[order], starts[:-1]), np.diff(starts)
    for b in range(n_boot):
        pick = rng.integers(0, n_ctx, n_ctx)
        out[b] = sums[pick].sum() / sizes[pick].sum() - ref_nums[rng.integers(0, ref_nums.size, ref_nums.size)].mean()
    return out


def plain_w1(rng, contexts, nums, ref_nums, n_boot: int) -> np.ndarray:
    """W1 / IQR by a plain loop (scipy's wasserstein_distance on gathered rows)."""
    from scipy.stats import iqr, wasserstein_distance

    order = np.argsort(contexts, kind="stable")
    starts = np.searchsorted(contexts[order], np.arange(contexts.max() + 2))
    n_ctx, out = contexts.max() + 1, np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, n_ctx, n_ctx)
        lengths = starts[pick + 1] - starts[pick]
        rows = order[np.repeat(starts[pick], lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))]
        r = ref_nums[rng.integers(0, ref_nums.size, ref_nums.size)]
        out[b] = wasserstein_distance(r, nums[rows]) / iqr(r)
    return out


def harness_boot(rng, kind, grid, ref: Side, mim: Side, n_boot: int) -> np.ndarray:
    """The harness's resampling of both sides (the core loop of harness.stats.distances.compare)."""
    out = []
    for b in chunk_sizes(n_boot, 2 * grid.size):
        pr, qm = ref.boot(rng, b), mim.boot(rng, b)
        out.append(distance(kind, grid, pr - qm, pr))
    return np.concatenate(out)


def timed(fn, *args):
    """Run once; return (CPU seconds of this process, result).

    CPU time, not wall time: the machine may be shared, and BLAS is pinned to one thread (see
    the top of the file), so both implementations are timed on equal terms.
    """
    start = time.process_time()
    result = fn(*args)
    return time.process_time() - start, result


def main(argv: list[str] | None = None) -> int:
    """Time every computation and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--plain-w1", type=int, default=20, help="resamples for the (slow) plain W1 loop")
    args = parser.parse_args(argv)
    contexts, cats, nums, ref_cats, ref_nums = make_data(args.rows)
    mim_cl, ref_cl = Clusters.build(contexts, None, args.rows), Clusters.build(None, None, ref_cats.size)
    print(f"# {args.rows:,} mimic rows in {contexts.max() + 1:,} contexts of 8; {ref_cats.size:,} reference rows; "
          f"{args.n_boot} resamples; CPU seconds, one thread\n")
    print("| computation | harness s | plain numpy s | plain / harness |\n|---|---|---|---|")

    grid, (rc, mc) = code_values("categorical", ref_cats.astype(str), cats.astype(str))
    t_h, _ = timed(harness_boot, np.random.default_rng(1), "categorical", grid, Side(rc, ref_cl, grid.size),
                   Side(mc, mim_cl, grid.size), args.n_boot)
    t_p, _ = timed(plain_tv, np.random.default_rng(1), contexts, cats, ref_cats, args.n_boot)
    print(f"| TV, cluster bootstrap of both sides | {t_h:.2f} | {t_p:.2f} | {t_p / t_h:.1f} |")

    stat = lambda a, b: b[:, 1] / b[:, 0] - a[:, 1] / a[:, 0]  # noqa: E731
    t_h, _ = timed(two_sample, np.random.default_rng(2), stat, ref_cl, np.column_stack([np.ones_like(ref_nums), ref_nums]),
                   mim_cl, np.column_stack([np.ones_like(nums), nums]), args.n_boot)
    t_p, _ = timed(plain_mean_diff, np.random.default_rng(2), contexts, nums, ref_nums, args.n_boot)
    print(f"| mean difference (lift), cluster bootstrap of both sides | {t_h:.2f} | {t_p:.2f} | {t_p / t_h:.1f} |")

    grid, (rn, mn) = code_values("numeric", ref_nums, nums)
    t_h, _ = timed(harness_boot, np.random.default_rng(3), "numeric", grid, Side(rn, ref_cl, grid.size),
                   Side(mn, mim_cl, grid.size), args.n_boot)
    t_p, _ = timed(plain_w1, np.random.default_rng(3), contexts, nums, ref_nums, args.plain_w1)
    per_h, per_p = t_h / args.n_boot, t_p / args.plain_w1
    print(f"| W1/IQR, per resample ({args.n_boot} harness, {args.plain_w1} plain) | {per_h:.4f} | {per_p:.4f} | {per_p / per_h:.1f} |")

    frame = pl.DataFrame({"pool": "none", "context_id": contexts, "feat_h": cats.astype(str), "feat_z": "a",
                          "weight": np.full(args.rows, 1 / args.rows)})
    ref = pl.DataFrame({"feat_h": ref_cats.astype(str), "feat_z": "a"})
    task = planted_task()
    task = type(task)(**{**task.__dict__, "latents": ("h",)})
    inputs = EstimationInputs(task, ref, frame, [Selection("none", "none", "none", None, frame, args.rows)], n_boot=args.n_boot)
    t_full, rows = timed(LatentShift().estimate, inputs)
    print(f"\nFull latent_shift estimator (CPU s) (categorical; interval, permutation/bootstrap null, design effect, "
          f"noise floor): {t_full:.2f} s; point {rows[0].point:.4f} [{rows[0].lower:.4f}, {rows[0].upper:.4f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
