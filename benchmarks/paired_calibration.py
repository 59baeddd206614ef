"""Coverage of the board's paired intervals (forcing-set mass m_K, Goodhart-proneness G) against planted truth.

    .venv/bin/python benchmarks/paired_calibration.py --reps 400 --contexts 4,8,16,40 --samples 8

Two synthetic mimics on the same contexts of the planted Goodhart world (harness/testing/paired_planted.py:
bookworld-like items with genre, helping and a count latent, exact rho, a forcing set, 1+4 world draws,
the tilt sweep 1, 0.3, 0.1), correlated through each context's shared mixture. Scenario ``planted``: the
two pools' exact m_K and G differ by about 0.25 each; ``null``: both mimics sample one distribution.
Every rep draws a fresh reference and fresh pools and runs the board's own code (paired_stats.side_statistics,
stats.paired.paired_difference with every design allowed). Per design it prints the coverage of the
difference's 95% interval (over the reps that gave one), the share of reps that decided (interval
excludes 0: the power under ``planted``, the false-decision rate under ``null``), the mean width and
the share withheld (a replicate without a value: G's budget beyond a side's sweep). A correct interval
covers inside the binomial band the header prints (0.95 +- 3 SD). The board reports a paired interval
only from the smallest design whose coverage of both statistics stays inside the band in both
scenarios (harness.stats.paired.MIN_PAIRED_CONTEXTS).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.stats.paired import MIN_PAIRED_CONTEXTS  # noqa: E402
from harness.testing.calibration import binomial_band, format_table  # noqa: E402
from harness.testing.paired_planted import SCENARIOS, paired_calibration  # noqa: E402

COLUMNS = ["statistic", "scenario", "contexts", "samples", "planted", "mean", "coverage", "decided", "width", "reps", "withheld"]


def main(argv: list[str] | None = None) -> int:
    """Run every design and scenario and print the table with the band."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--contexts", default="4,8,16,40", help="comma-separated context counts")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    designs = [int(c) for c in args.contexts.split(",")]
    low, high = binomial_band(args.reps)
    start = time.perf_counter()
    rows = [row for scenario in SCENARIOS for c in designs for row in paired_calibration(c, args.samples, args.reps, args.seed, scenario)]
    print(f"paired calibration: {args.reps} reps per design, samples {args.samples}, seed {args.seed}; "
          f"band for a correct 95% interval over {args.reps} reps: [{low:.3f}, {high:.3f}]")
    print(format_table(rows, COLUMNS))
    for c in designs:
        inside = all(low <= r["coverage"] <= high for r in rows if r["contexts"] == c)
        print(f"C = {c}: coverage of every statistic and scenario {'inside' if inside else 'NOT inside'} the band")
    print(f"board reports paired intervals from C >= {MIN_PAIRED_CONTEXTS} shared contexts (harness.stats.paired.MIN_PAIRED_CONTEXTS)")
    print(f"{time.perf_counter() - start:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
