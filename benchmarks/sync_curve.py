"""Synchronisation curves on bookworld: planted mimics against exact truth, and optionally a real model.

1. A perfectly synchronised mimic (each draw copies one of its context's exemplars; n = 0: a
   reference row) and a partly desynchronised one (copies with probability 1 - 0.8 n^-0.7, else
   writes a scifi review: D(n) = 0.8 D(1) n^-0.7, so b = 0.7): the sync_curve table for the proxy
   (rating) and genre, with the exact E[d2(E_n, F)] beside the per-context distance to F.
2. Calibration over ``--seeds`` seeds of the synchronised mimic: how often it stays inside the 95%
   noise band at every size (target 0.95), and how often the per-context intervals cover their
   exact values (targets 0.95). Distances are on the bounded scale of :mod:`harness.stats.curve_scale`
   (TV, KS; squared: half-L2, Cramer-von Mises); coverage at 2-40 contexts with a context effect:
   :mod:`harness.testing.curve_calibration`.
3. ``--model gguf:default``: the real model's curve, sampled and from exact log-probabilities.

Usage: .venv/bin/python benchmarks/sync_curve.py [--contexts 400] [--samples 8] [--sizes 0,1,2,4,8]
       [--seeds 20] [--n-boot 1000] [--model gguf:default --model-contexts 8 --model-samples 16]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

import numpy as np
import polars as pl

from harness.featurize import build_features, compute_features
from harness.run.fieldprobs import context_field_probs
from harness.plugins import build_registries
from harness.protocols import BuildContext, EstimationInputs
from harness.reference import load_reference
from harness.stats.sync import event_weights, events, sync_estimates
from harness.tasks import load_task
from harness.testing.synthetic import synchronised_draws

FEATURES = ["rating", "genre"]


def copying_d2(reference: pl.DataFrame, feature: str, n: int) -> float:
    """Exact E[d2(E_n, F)] for n exemplars without replacement: sum_j w_j F_j (1 - F_j) / n (N - n) / (N - 1)."""
    col = reference[f"feat_{feature}"].drop_nulls()
    grid = np.array(sorted(set(col.to_list())))
    mass = np.array([(col == g).sum() for g in grid]) / col.len()
    kind = "numeric" if col.dtype.is_numeric() else "categorical"
    f = events(kind, mass)
    return float(event_weights(kind, grid, mass) @ (f * (1 - f))) / n * (col.len() - n) / (col.len() - 1) if n else 0.0


def triple(row) -> str:
    """``point [lower, upper]``, or the point and why it has no interval."""
    if row.lower == row.lower and row.upper == row.upper:
        return f"{row.point:.4f} [{row.lower:.4f}, {row.upper:.4f}]"
    return f"{row.point:.4f} (no interval: {row.note.get('no_interval', 'undefined')})"


def show(rows, reference: pl.DataFrame | None, title: str) -> None:
    """Print one table per feature: marginal, per-context rows and the rate."""
    print(f"\n## {title}")
    key = {(r.estimator, r.condition, r.feature): r for r in rows}
    for f in sorted({r.feature for r in rows}, key=lambda f: FEATURES.index(f) if f in FEATURES else 9):
        print(f"\n{f}: n | marginal D [95%] band in | ctx-vs-F d2 [95%] (exact copying) method | ctx-vs-exemplars d2 [95%]")
        sizes = sorted(r.note["n_exemplars"] for r in rows if r.feature == f and r.estimator == "sync_marginal")
        for n in sizes:
            m, p = key[("sync_marginal", f"sync@{n}", f)], key.get(("sync_context_population", f"sync@{n}", f))
            e = key.get(("sync_context_exemplars", f"sync@{n}", f))
            exact = f" ({copying_d2(reference, f, n):.4f})" if reference is not None else ""
            inside = {True: "yes", False: "no ", None: "n/a"}[m.note.get("in_floor")]
            band = m.note.get("noise_band")
            line = f"  {n:>2} | {triple(m)} {band if band is None else f'{band:.4f}'} {inside}"
            if p is not None:
                line += f" | {triple(p)}{exact} {p.note['method']}"
            if e is not None:
                line += f" | {triple(e)}"
            print(line)
        r = key[("sync_rate", "sync", f)]
        enter = [r.note.get(k, "not reached") for k in ("n_enter", "n_enter_lower", "n_enter_upper")]
        print(f"  rate b = {triple(r)}, a = {r.note.get('a', float('nan')):.3f}; "
              f"n_enter = {enter[0]} [{enter[1]}, {enter[2]}]; noise floor (split halves) {r.note['noise_floor']:.4f}; "
              f"fit issues {r.note.get('fit_issues')}")


def calibration(task, reference, sizes, contexts, samples, seeds, n_boot) -> None:
    """Coverage of the synchronised mimic's exact truth over seeds."""
    stay, pop, ex, t0 = [], [], [], time.perf_counter()
    for seed in range(seeds):
        draws = synchronised_draws(reference, sizes=sizes, contexts=contexts, samples=samples, seed=100 + seed,
                                   task=task.name)
        rows = sync_estimates(EstimationInputs(task, reference, draws, [], seed=seed, n_boot=n_boot), features=FEATURES)
        for f in FEATURES:
            marginal = [r for r in rows if r.feature == f and r.estimator == "sync_marginal"]
            if all("in_floor" in r.note for r in marginal):  # no band below harness.stats.sync.BAND_MIN_CONTEXTS
                stay.append(all(r.note["in_floor"] for r in marginal))
            for r in rows:
                n = r.note.get("n_exemplars")
                if r.lower != r.lower:  # no interval reported at this design
                    continue
                if r.feature == f and r.estimator == "sync_context_population":
                    pop.append(r.lower <= copying_d2(reference, f, n) <= r.upper)
                if r.feature == f and r.estimator == "sync_context_exemplars" and n >= 2:
                    ex.append(r.lower <= 0.0 <= r.upper)
    print(f"\n## Calibration: {seeds} seeds x {len(FEATURES)} features, {contexts} contexts x {samples} samples "
          f"({time.perf_counter() - t0:.0f} s)")
    print(f"  synchronised mimic inside the 95% band at every size: {np.mean(stay) if stay else float('nan'):.3f} "
          f"({len(stay)} curves with a band; target 0.95)")
    print(f"  ctx-vs-F interval covers the exact E[d2(E_n, F)]:     {np.mean(pop):.3f} ({len(pop)} intervals; target 0.95)")
    print(f"  ctx-vs-exemplars interval covers 0 (n >= 2):          {np.mean(ex):.3f} ({len(ex)} intervals; target 0.95)")


async def real_model(spec: str, task, reference, sizes, contexts, samples, n_boot) -> None:
    """Sample a real model at every size, read its exact header probabilities, and print both curves."""
    from harness.factories import create_mimic
    from harness.modelspec import parse_model_spec
    from harness.prompts import make_item, plan_draws, request_for

    registries = build_registries()
    mimic = create_mimic(parse_model_spec(spec), registries)
    planned = [d for n in sizes for d in plan_draws(task, reference, seed=0, pools=["none"], n_exemplars=n,
                                                    contexts=contexts, samples_per_context=samples)]
    generation = dataclasses.replace(task.generation, max_tokens=12)  # the header lines are all these features need
    try:
        t0 = time.perf_counter()
        completions = []
        for lo in range(0, len(planned), samples):  # one context per call: shared prefill
            batch = planned[lo:lo + samples]
            completions += await mimic.generate([request_for(d, generation, task.render.stop) for d in batch])
        t_sample = time.perf_counter() - t0
        t0 = time.perf_counter()
        field_probs = await context_field_probs(mimic, task, reference, planned)
        t_exact = time.perf_counter() - t0
    finally:
        await mimic.aclose()
    items = pl.Series("text", [make_item(d.prefix, c.text, task.render.stop) for d, c in zip(planned, completions)])
    feats = compute_features(build_features(task, registries, BuildContext(registries)), items)
    draws = pl.DataFrame({"pool": "none", "n_exemplars": [d.n_exemplars for d in planned],
                          "context_id": [d.context_id for d in planned], "sample_index": [d.sample_index for d in planned],
                          "exemplar_ids": [list(d.exemplar_ids) for d in planned]}).hstack(feats)
    print(f"\n{spec}: {len(planned)} draws in {t_sample:.0f} s; field_probs for {field_probs['context_id'].n_unique()} "
          f"context ids x {len(sizes)} sizes in {t_exact:.0f} s ({field_probs['method'][0] if field_probs.height else 'none'})")
    inputs = EstimationInputs(task, reference, draws, [], seed=0, n_boot=n_boot)
    show(sync_estimates(inputs, features=FEATURES), reference, f"{spec}: sampled")
    if field_probs.height:
        exact = dataclasses.replace(inputs, tables={"field_probs": field_probs})
        show(sync_estimates(exact, features=FEATURES), reference, f"{spec}: exact log-probabilities per context")


def main() -> None:
    """Run the benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", type=int, default=400)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--sizes", default="0,1,2,4,8")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--model", default=None, help="e.g. gguf:default")
    ap.add_argument("--model-contexts", type=int, default=8)
    ap.add_argument("--model-samples", type=int, default=16)
    args = ap.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    registries = build_registries()
    task = dataclasses.replace(load_task("bookworld", registries), context_sizes=sizes)
    t0 = time.perf_counter()
    reference = load_reference(task, registries, BuildContext(registries)).frame
    print(f"bookworld reference: {reference.height} rows ({time.perf_counter() - t0:.1f} s); sizes {sizes}; "
          f"{args.contexts} contexts x {args.samples} samples; n_boot {args.n_boot}")
    for title, extra in (("perfectly synchronised mimic", {}),
                         ("partly desynchronised mimic: copies w.p. 1 - 0.8 n^-0.7, else scifi (planted b = 0.7)",
                          {"copy_prob": lambda n: 1 - 0.8 * n**-0.7 if n else 0.0,
                           "other_rows": np.flatnonzero((reference["feat_genre"] == "scifi").to_numpy())})):
        t0 = time.perf_counter()
        draws = synchronised_draws(reference, sizes=sizes, contexts=args.contexts, samples=args.samples, seed=1,
                                   task=task.name, **extra)
        rows = sync_estimates(EstimationInputs(task, reference, draws, [], seed=0, n_boot=args.n_boot), features=FEATURES)
        show(rows, reference, f"{title} ({time.perf_counter() - t0:.1f} s)")
    if args.seeds:
        calibration(task, reference, sizes, min(args.contexts, 150), args.samples, args.seeds, min(args.n_boot, 400))
    if args.model:
        asyncio.run(real_model(args.model, task, reference, sizes, args.model_contexts, args.model_samples, args.n_boot))


if __name__ == "__main__":
    main()
