"""Coverage of the estimators' 95% intervals against planted truth (the full run).

    .venv/bin/python benchmarks/calibration.py --reps 400 --n-boot 1000

Draws ``--reps`` planted data sets (harness/stats/synthetic.py: clustered mimic draws, C
contexts x S samples with a random context effect) per scenario, runs the registered estimators
and prints, per planted estimand: planted value, mean estimate, bias, coverage of the 95%
interval, mean width. A correct interval covers 93-97% of the time over 400 reps (that band
is +-1.8 binomial SD, so about 1 row in 15 of a correct interval falls outside it by chance;
the header prints the 3 SD band). Detection's estimand, the AUC of the classifier each sample
trains, is computed exactly per rep, and ``planted`` is its mean. At zero planted shift it
prints instead how often latent_shift's test of "no shift" rejects at 5% (the permutation
test for S = 1, the centred cluster bootstrap for S > 1) and the mean debiased distance.
``--quick`` runs 60 reps with 200 resamples (a smoke run, not a calibration).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.stats.calibration import binomial_band, calibrate, format_table, null_check  # noqa: E402

COVERAGE_COLUMNS = ["estimator", "condition", "feature", "planted", "mean", "bias", "coverage", "width", "reps"]
NULL_COLUMNS = ["estimator", "condition", "feature", "rejection", "plug_in", "debiased", "noise_floor", "reps"]
SCENARIOS = {
    # name: (estimators, planted() keywords)
    "clustered, TV 0.1, W1 0.25": (["control_success", "latent_shift", "correlation_shift", "lift_shift", "forcing_mass"],
                                   {"tv": 0.1, "w1": 0.25}),
    "clustered, TV 0.3, W1 0.5": (["latent_shift"], {"tv": 0.3, "w1": 0.5}),
    "i.i.d. (S = 1), TV 0.1": (["control_success", "latent_shift", "lift_shift", "forcing_mass"],
                              {"tv": 0.1, "w1": 0.25, "contexts": 250, "samples": 1}),
    "transfer (clustered)": (["transfer_gap"], {}),
    "few contexts (C = 12, S = 5), TV 0.1": (["control_success", "latent_shift", "lift_shift"],
                                            {"tv": 0.1, "w1": 0.25, "contexts": 12}),
    # the estimand is the AUC of the classifier each sample trains, exact per rep (synthetic.py)
    "detection (clustered), text shifted": (["detection"], {}),
    "detection (clustered), no text shift: AUC 0.5": (["detection"], {"text_shift": False}),
}


def main(argv: list[str] | None = None) -> int:
    """Run every scenario and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="60 reps, 200 resamples")
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    args = parser.parse_args(argv)
    reps, n_boot = (60, 200) if args.quick else (args.reps, args.n_boot)
    lo, hi = binomial_band(reps)
    print(f"# Calibration: {reps} reps per scenario, {n_boot} bootstrap resamples; "
          f"a correct 95% interval covers within [{lo:.3f}, {hi:.3f}] (3 binomial SD)\n")
    for name, (estimators, scenario) in SCENARIOS.items():
        if args.only and args.only not in name:
            continue
        start = time.perf_counter()
        table = calibrate(reps, estimators, seed=args.seed, n_boot=n_boot, **scenario)
        print(f"## {name} ({time.perf_counter() - start:.0f} s)\n")
        print(format_table(table, COVERAGE_COLUMNS) + "\n")
    if not args.only or "null" in args.only:
        for label, scenario in (("clustered", {}), ("i.i.d. (S = 1)", {"contexts": 250, "samples": 1})):
            start = time.perf_counter()
            table = null_check(reps, seed=args.seed, n_boot=n_boot, **scenario)
            print(f"## zero planted shift, {label}: rejection rate of 'no shift' at 5% ({time.perf_counter() - start:.0f} s)\n")
            print(format_table(table, NULL_COLUMNS) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
