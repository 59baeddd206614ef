"""`mimic run --target-width`: a scripted pilot, a main stage sized from it, honest final widths, a free rerun."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from harness.cli import main as mimic_main
from harness.errors import UsageError
from harness.modelspec import ModelSpec
from harness.plugins import build_registries
from harness.run import RunConfig
from harness.run.staged import DECISION_FILE, TargetWidth, final_widths, plan_main_stage, headline_inputs, run_to_width
from harness.scripted import ScriptedMimic
from harness.testing.synthetic import planted
from tests.helpers import books_reference_jsonl, books_task_yaml

WIDTH = 1.0


def review(request) -> str:
    """A seeded review continuing ``Rating:`` (a rating, then words) or ``Rating: 5\\n`` (words only)."""
    rng = random.Random(request.seed)
    words = " ".join(rng.choice(["good", "bad", "slow", "warm", "dull"]) for _ in range(rng.randint(2, 9)))
    return f"Review: {words}" if request.prompt.endswith("\n") else f" {rng.choice([3, 4, 5, 5])}\nReview: {words}"


@pytest.fixture
def task_file(tmp_path):
    (tmp_path / "ref.jsonl").write_text(books_reference_jsonl(400))
    path = tmp_path / "tw-books.yaml"
    path.write_text(books_task_yaml("tw-books", contexts=3, samples_per_context=4))
    return path


def config(task_file, out, **kw) -> RunConfig:
    base = dict(model=ModelSpec("scripted", "books"), task=task_file, out_dir=out, cache_dir=out / "cache", progress="off",
                summary_to="off", n_boot=200, estimators=("control_success", "latent_shift"))
    return RunConfig(**{**base, **kw})


def staged(task_file, out, target: TargetWidth, lines: list[str], mimic: ScriptedMimic):
    (result,) = run_to_width([config(task_file, out)], build_registries(), target, lines.append, mimic=mimic)
    return result


def test_stops_at_the_planned_size_with_widths_within_the_target_and_a_free_rerun(tmp_path, task_file):
    out, lines = tmp_path / "out", []
    mimic = ScriptedMimic("scripted:books", review)
    result = staged(task_file, out, TargetWidth(WIDTH, pilot_contexts=4), lines, mimic)
    text = "\n".join(lines)
    planned = int(text.split("main stage: ")[1].split(" contexts")[0])
    assert result.status == "complete" and planned > 4
    assert result.planned == 2 * planned * 4  # pools none and prompt:5, S = 4: the run stopped at the planned size
    assert result.cached == 2 * 4 * 4  # the pilot's contexts came back from the cache
    widths = final_widths(result.estimates)
    assert widths and all(math.isfinite(w) and w <= WIDTH for w in widths.values()), widths
    assert "every headline width is <= 1" in text
    pilot_dir = next(p for p in (out / "runs").iterdir() if (p / DECISION_FILE).exists())
    assert pilot_dir != result.run_dir
    calls_before = mimic.calls
    again = staged(task_file, out, TargetWidth(WIDTH, pilot_contexts=4), [], mimic)
    assert again.run_id == result.run_id and again.status == "complete"
    assert again.model_calls == 0 and mimic.calls == calls_before


def test_a_token_budget_caps_the_main_stage_and_says_so(tmp_path, task_file):
    lines = []
    result = staged(task_file, tmp_path / "out", TargetWidth(0.3, pilot_contexts=4, max_tokens=2000), lines,
                    ScriptedMimic("scripted:books", review))
    text = "\n".join(lines)
    assert "budget bound: 2,000 tokens" in text and "the target width is not reached" in text
    assert result.status == "complete"
    assert result.usage["prompt_tokens"] + result.usage["completion_tokens"] <= 2000
    assert "(the budget bound)" in text


def test_the_main_stage_size_follows_the_inverse_square_of_the_width():
    p = planted(np.random.default_rng(3), contexts=8, samples=4, n_ref=4000, n_boot=200)
    from harness.estimation import run_estimators
    from harness.stats.est_rates import ControlSuccess
    from harness.stats.est_shift import LatentShift

    est = run_estimators({"control_success": ControlSuccess(), "latent_shift": LatentShift()}, p.inputs)
    sizes = dict(p.inputs.draws.group_by("pool").len().iter_rows())
    rows, inputs = headline_inputs(est, sizes, 8)
    wide, narrow = (plan_main_stage(rows, inputs, 8, 4, w) for w in (0.4, 0.2))
    assert narrow.needed_contexts > 2 * wide.needed_contexts  # about 4x, less the reference's fixed share
    assert all(v <= 0.2 + 1e-9 for k, v in narrow.expected_widths.items() if k not in narrow.unreachable)


def test_bad_target_width_options_are_usage_errors(tmp_path, task_file, capsys):
    with pytest.raises(UsageError, match="--target-width must be a positive number"):
        TargetWidth(0.0)
    with pytest.raises(UsageError, match="--pilot-contexts must be at least 2"):
        TargetWidth(0.5, pilot_contexts=1)
    base = ["run", "-m", "scripted:books", "-t", str(task_file), "--out", str(tmp_path / "o")]
    assert mimic_main([*base, "--max-minutes", "5"]) == 2
    assert "--max-minutes sizes a --target-width run" in capsys.readouterr().err
    assert mimic_main([*base, "--target-width", "0.5", "--contexts", "9"]) == 2
    assert "--target-width chooses the contexts itself" in capsys.readouterr().err


def test_a_small_pilot_planned_from_standard_errors_asks_for_fewer_contexts():
    p = planted(np.random.default_rng(4), contexts=4, samples=4, n_ref=4000, n_boot=200)
    from harness.estimation import run_estimators
    from harness.stats.est_rates import ControlSuccess
    from harness.stats.est_shift import LatentShift

    est = run_estimators({"control_success": ControlSuccess(), "latent_shift": LatentShift()}, p.inputs)
    sizes = dict(p.inputs.draws.group_by("pool").len().iter_rows())
    by_interval, by_se = (headline_inputs(est, sizes, 4, variance)[1] for variance in ("interval", "standard-error"))
    shift = [(a, b) for a, b in zip(by_interval, by_se) if a.estimator == "latent_shift" and not a.withheld]
    smaller = sum(b.sigma2 + b.v_ref < a.sigma2 + a.v_ref for a, b in shift)
    assert shift and smaller > len(shift) / 2, (smaller, len(shift))  # most rows: t(3)/percentile widening is not variance
    rows = headline_inputs(est, sizes, 4)[0]
    assert plan_main_stage(rows, by_se, 4, 4, 0.4).needed_contexts < plan_main_stage(rows, by_interval, 4, 4, 0.4).needed_contexts
