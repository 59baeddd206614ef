"""A planted-null leaderboard, fast version (the full one is benchmarks/planted_null.py).

Two mimics sample the SAME planted distribution, with a context effect (intra-context
correlation 1/3) and paired prompts; over 40 seeds at C = 4 and C = 8 contexts (S = 8) the
leaderboard must rank them apart, and ``mimic compare`` call any of its rows distinguishable, in
at most 5% of seeds up to binomial noise (the 99% binomial quantile, so a correct procedure fails
this test about 1 time in 100 per check). A planted difference prints the power.
"""

from __future__ import annotations

import pytest
from scipy.stats import binom

from harness.testing.planted_runs import MimicSpec, trial

SEEDS = 40
N_BOOT = 300  # joint bootstrap replicates: the sd of 300 is within ~8% of its limit


def tolerance(n: int, rate: float = 0.05) -> int:
    """Most decisions out of n a procedure with a false-decision rate of ``rate`` shows, at the 99% binomial quantile."""
    return int(binom.ppf(0.99, n, rate))


@pytest.mark.parametrize("contexts", [4, 8])
def test_equal_mimics_are_called_distinguishable_in_at_most_5_percent_of_seeds(contexts):
    trials = [trial(seed, contexts=contexts, samples=8, n_boot=N_BOOT, estimator_boot=50) for seed in range(SEEDS)]
    board = sum(t.leaderboard_decided for t in trials)
    assert [t.leaderboard_decided for t in trials] == [t.compare_score_decided for t in trials]  # one bootstrap, one decision
    rows = sorted({k for t in trials for k in t.rows_decided})
    per_row = {k: sum(t.rows_decided.get(k, False) for t in trials) for k in rows}
    print(f"\nC = {contexts}: leaderboard {board}/{SEEDS}; compare rows {per_row}")
    assert len(rows) == 9  # latent_shift under none, prompt:a and filter:a x (h, x, t)
    assert board <= tolerance(SEEDS)
    assert max(per_row.values()) <= tolerance(SEEDS)
    assert sum(per_row.values()) <= tolerance(SEEDS * len(rows))
    # every score carried an interval (4 and 8 contexts are enough), so the ranking was a real test
    assert all(s[1] is not None for t in trials for s in t.scores)


def test_a_planted_difference_is_found_and_its_power_printed():
    worse = MimicSpec(tv_h=0.35, w1_x=0.6, shift_t=0.35)
    trials = [trial(seed, contexts=8, samples=8, b=worse, n_boot=N_BOOT, estimator_boot=50) for seed in range(20)]
    power = sum(t.leaderboard_a_first for t in trials) / len(trials)
    wrong_way = sum(t.leaderboard_decided and not t.leaderboard_a_first for t in trials)
    print(f"\npower at C = 8, S = 8 (mimic-b shifted by +0.25 TV, +0.35 W1/IQR, +0.25 on t): {power:.2f}; wrong way: {wrong_way}")
    assert wrong_way == 0 and power > tolerance(len(trials)) / len(trials)
