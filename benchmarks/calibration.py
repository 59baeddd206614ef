"""Coverage of the estimators' 95% intervals against planted truth, at the designs people run.

    .venv/bin/python benchmarks/calibration.py --reps 400 --n-boot 1000

For every design C contexts x S samples per context (C in 2, 4, 8, 16, 40; S in 1, 8) it draws
``--reps`` planted data sets (harness/testing/synthetic.py: a context effect on every feature,
``kappa`` 2 by default, i.e. an intra-context correlation of 1/3 and a design effect near 3.3 at
S = 8, as strong as the published runs' 1-6), runs the registered estimators and prints, per
planted estimand: planted value, mean estimate, coverage of the 95% interval over the reps that
reported one, mean width, how many intervals left their range, and the share of reps that
reported no interval (``withheld``: too few contexts, no variance, no row at all). Scenarios
plant rates near 0 and near 1 (control success, a binary latent, m_K) as well as interior ones.
A correct interval covers 93-97% of the time over 400 reps (about +-1.8 binomial SD, so about
1 row in 15 of a correct interval falls outside it by chance; the header prints the 3 SD band);
exact (Clopper-Pearson / Korn-Graubard) intervals are conservative by design, see est_rates.
The tilt@beta points, the Goodhart-proneness score and the synchronisation curve are calibrated by
:func:`harness.testing.curve_calibration.curve_calibration` on the same designs. At zero planted
shift it prints how often latent_shift's test of "no shift" rejects at 5%.
``--quick`` runs 60 reps with 200 resamples (a smoke run, not a calibration).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.testing.calibration import binomial_band, calibrate, format_table, null_check  # noqa: E402

COVERAGE_COLUMNS = ["estimator", "condition", "feature", "planted", "mean", "coverage", "width", "out_of_range",
                    "reps", "withheld"]
NULL_COLUMNS = ["estimator", "condition", "feature", "rejection", "plug_in", "debiased", "noise_floor", "reps"]
CONTEXTS = (2, 4, 8, 16, 40)
SAMPLES = (1, 8)
RATES = ["control_success", "latent_shift", "lift_shift", "forcing_mass"]
SCENARIOS = {
    # name: (estimators, planted() keywords)
    "interior (TV 0.1, W1 0.25)": (["control_success", "latent_shift", "correlation_shift", "lift_shift",
                                    "forcing_mass"], {"tv": 0.1, "w1": 0.25}),
    "larger shift (TV 0.3, W1 0.5)": (["latent_shift"], {"tv": 0.3, "w1": 0.5}),
    "rates near 0": (RATES, {"p_success": 0.03, "r_ref": 0.06, "r_mimic": 0.02, "mimic_forcing": 0.0}),
    "rates near 1": (RATES, {"p_success": 0.97, "r_ref": 0.94, "r_mimic": 0.98, "mimic_forcing": 0.97}),
    "text (transfer gap, detection)": (["transfer_gap", "detection"], {}),
}


def design_label(contexts: int, samples: int) -> str:
    """``C = 4, S = 8``."""
    return f"C = {contexts}, S = {samples}"


def curve_rows(contexts: int, samples: int, reps: int, n_boot: int, seed: int) -> list[dict] | None:
    """Coverage rows of the tilt points, Goodhart score and sync curve (None where that module is absent)."""
    try:
        module = importlib.import_module("harness.testing.curve_calibration")
    except ImportError:
        return None
    return module.curve_calibration(contexts=contexts, samples=samples, reps=reps, n_boot=n_boot, seed=seed)


def main(argv: list[str] | None = None) -> int:
    """Run every scenario at every design and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kappa", type=float, default=2.0, help="context effect: Beta/Dirichlet concentration (smaller: stronger)")
    parser.add_argument("--quick", action="store_true", help="60 reps, 200 resamples")
    parser.add_argument("--only", help="run only scenarios whose name contains this text ('curves', 'null' included)")
    parser.add_argument("--contexts", type=int, nargs="*", default=list(CONTEXTS))
    parser.add_argument("--samples", type=int, nargs="*", default=list(SAMPLES))
    parser.add_argument("--no-curves", action="store_true", help="leave out the curves (run them alone with --only curves)")
    parser.add_argument("--estimators", nargs="*", help="run only these estimators of each scenario (default: all)")
    args = parser.parse_args(argv)
    reps, n_boot = (60, 200) if args.quick else (args.reps, args.n_boot)
    lo, hi = binomial_band(reps)
    print(f"# Calibration: {reps} reps per scenario and design, {n_boot} bootstrap resamples, kappa {args.kappa}; "
          f"a correct 95% interval covers within [{lo:.3f}, {hi:.3f}] (3 binomial SD)\n")
    for contexts in args.contexts:
        for samples in args.samples:
            design = {"contexts": contexts, "samples": samples, "kappa": args.kappa}
            print(f"# Design {design_label(contexts, samples)}\n")
            for name, (estimators, scenario) in SCENARIOS.items():
                if args.only and args.only not in name:
                    continue
                if args.estimators:
                    estimators = [e for e in estimators if e in args.estimators]
                    if not estimators:
                        continue
                start = time.perf_counter()
                table = calibrate(reps, estimators, seed=args.seed, n_boot=n_boot, **scenario, **design)
                print(f"## {name}, {design_label(contexts, samples)} ({time.perf_counter() - start:.0f} s)\n")
                print(format_table(table, COVERAGE_COLUMNS) + "\n")
            if not args.no_curves and (not args.only or "curves" in args.only):
                start = time.perf_counter()
                table = curve_rows(contexts, samples, reps, n_boot, args.seed)
                if table is not None:
                    print(f"## curves (tilt@beta, Goodhart score, sync curve), {design_label(contexts, samples)} "
                          f"({time.perf_counter() - start:.0f} s)\n")
                    print(format_table(table, COVERAGE_COLUMNS) + "\n")
            if not args.only or "null" in args.only:
                start = time.perf_counter()
                table = null_check(reps, seed=args.seed, n_boot=n_boot, **design)
                print(f"## zero planted shift, {design_label(contexts, samples)}: rejection rate of 'no shift' at 5% "
                      f"({time.perf_counter() - start:.0f} s)\n")
                print(format_table(table, NULL_COLUMNS) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
