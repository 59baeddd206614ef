"""`mimic plan RUN_DIR --budget-minutes M`: a design of contexts x samples per pool within a budget, from a scripted pilot."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from harness.cli import main as mimic_main
from harness.run.costs import fit_costs, manifest_costs
from harness.stats.planning import PlanInput
from harness.stats.planning_budget import (Arm, UnitCosts, design_for_budget, design_for_width, expected_half_width,
                                           total_cost)
from tests.helpers import books_reference_jsonl, books_task_yaml

MODELS = """\
models:
  books:
    backend: scripted
    model: planted
    distribution:
      - {text: " 5\\nReview: good warm good", p: 0.3}
      - {text: " 4\\nReview: slow", p: 0.2}
      - {text: " 2\\nReview: dull bad dull bad dull bad dull", p: 0.3}
      - {text: " 1\\nReview: bad bad", p: 0.2}
"""


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    """A scripted pilot run (3 contexts x 4 samples per pool; the none pool also at the curve's sizes 0 and 1)."""
    work = tmp_path_factory.mktemp("pilot")
    (work / "ref.jsonl").write_text(books_reference_jsonl(300))
    (work / "task.yaml").write_text(books_task_yaml("plan-books", contexts=3, samples_per_context=4) + "context_sizes: [0, 1, 2]\n")
    (work / "models.yaml").write_text(MODELS)
    argv = ["run", "-m", "books", "--model-config", str(work / "models.yaml"), "-t", str(work / "task.yaml"), "--out", str(work / "out"),
            "--progress", "off", "--estimator", "control_success", "--estimator", "latent_shift", "--n-boot", "200"]
    assert mimic_main(argv) == 0
    (run_dir,) = (work / "out" / "runs").iterdir()
    return run_dir


def plan_json(run_dir, *flags: str, capsys) -> dict:
    assert mimic_main(["plan", str(run_dir), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)["design"]


GIVEN = ("--cost-prefill-ms", "1", "--cost-token-ms", "20")


def widest(design: dict) -> float:
    return max(v for d in design["designs"] for v in d["half_widths"].values() if v is not None)


def test_a_budget_plan_respects_the_budget_and_more_budget_never_widens_it(pilot, capsys):
    previous, previous_total = math.inf, math.inf
    for minutes in (0.2, 0.5, 2.0, 8.0):
        design = plan_json(pilot, "--budget-minutes", str(minutes), *GIVEN, capsys=capsys)
        spent = sum(d["cost"] for d in design["designs"])
        assert spent <= minutes * 60_000 * (1 + 1e-9), (minutes, spent)
        assert sum(d["cost"] for d in design["uniform"]) <= minutes * 60_000 * (1 + 1e-9)
        assert len({(d["contexts"], d["samples"]) for d in design["uniform"]}) == 1  # one C x S: what one `mimic run` takes
        assert design["mimic_side_width"] <= previous * (1 + 1e-6)
        assert widest(design) <= previous_total * (1 + 1e-6)
        previous, previous_total = design["mimic_side_width"], widest(design)
    assert {d["pool"] for d in design["designs"]} == {"none", "prompt:5"}


def test_expensive_prefill_buys_more_samples_per_context(pilot, capsys):
    cheap = plan_json(pilot, "--budget-minutes", "5", "--cost-prefill-ms", "0.01", "--cost-token-ms", "30", capsys=capsys)
    dear = plan_json(pilot, "--budget-minutes", "5", "--cost-prefill-ms", "30", "--cost-token-ms", "0.01", capsys=capsys)
    s_cheap = {d["pool"]: d["samples"] for d in cheap["designs"]}
    s_dear = {d["pool"]: d["samples"] for d in dear["designs"]}
    assert all(s_dear[p] >= s_cheap[p] for p in s_cheap) and any(s_dear[p] > s_cheap[p] for p in s_cheap), (s_cheap, s_dear)


def test_the_width_mode_prints_the_cheapest_design_and_its_time(pilot, capsys):
    assert mimic_main(["plan", str(pilot), "--width", "0.3", *GIVEN]) == 0
    out = capsys.readouterr().out
    assert "Cheapest design in which every headline half-width is at most ±0.3." in out
    assert "| pool | C | S | headline rows | widest half-width now | widest expected half-width | draws | minutes |" in out
    assert "mimic run -m books --model-config FILE -t plan-books --contexts" in out
    design = plan_json(pilot, "--width", "0.3", *GIVEN, capsys=capsys)
    reachable = [v for d in design["designs"] for k, v in d["half_widths"].items() if v is not None and k not in design["unreachable"]]
    assert reachable and all(v <= 0.3 + 1e-9 for v in reachable)


def test_the_curve_sizes_are_priced_and_can_be_dropped(pilot, capsys):
    assert mimic_main(["plan", str(pilot), "--budget-minutes", "2", *GIVEN]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("The synchronisation curve's extra context sizes (0, 1 exemplars"))
    assert "feed only the curve" in line and "--drop-curve" in line
    full = plan_json(pilot, "--budget-minutes", "2", *GIVEN, capsys=capsys)
    dropped = plan_json(pilot, "--budget-minutes", "2", "--drop-curve", *GIVEN, capsys=capsys)
    assert sum(d["curve_cost"] for d in full["designs"]) > 0 and sum(d["curve_cost"] for d in dropped["designs"]) == 0
    assert dropped["mimic_side_width"] <= full["mimic_side_width"] * (1 + 1e-6)  # the curve's share goes to the headline rows


def test_costs_are_measured_or_read_from_the_manifest(pilot, capsys):
    measured = plan_json(pilot, "--budget-minutes", "1", "--measure-cost", capsys=capsys)["costs"]
    assert measured["source"] == "measured" and min(measured["prefill_ms"], measured["decode_ms"], measured["call_ms"]) >= 0
    manifest = plan_json(pilot, "--width", "0.3", capsys=capsys)["costs"]
    assert manifest["source"] == "pilot manifest" and manifest["prefill_ms"] == manifest["decode_ms"] > 0


def test_bad_design_flags_are_one_line_usage_errors(pilot, capsys):
    cases = [
        (["--budget-minutes", "1", "--budget-tokens", "100"], "give --budget-minutes or --budget-tokens, not both"),
        (["--budget-minutes", "-1"], "--budget-minutes must be a finite number > 0"),
        (["--budget-tokens", "0"], "--budget-tokens must be at least 1"),
        (["--budget-minutes", "1", "--cost-prefill-ms", "1"], "give --cost-prefill-ms and --cost-token-ms together"),
        (["--budget-minutes", "1", "--measure-cost", *GIVEN], "give --measure-cost or --cost-prefill-ms/--cost-token-ms, not both"),
        (["--budget-minutes", "0.00001", *GIVEN], "the budget is below the smallest design with intervals"),
    ]
    for flags, message in cases:
        assert mimic_main(["plan", str(pilot), *flags]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (flags, err)
    assert mimic_main(["plan", "--task", "bookworld", "--budget-minutes", "1"]) == 2
    assert "needs a pilot RUN_DIR" in capsys.readouterr().err


def two_pools(icc: float = 0.2) -> tuple[list[PlanInput], list[Arm]]:
    inputs = [PlanInput("latent_shift", "none", "h", sigma2=0.3, v_ref=1e-4, icc=icc, yield_=1.0, pool="none"),
              PlanInput("latent_shift", "filter:5", "h", sigma2=0.3, v_ref=1e-4, icc=icc, yield_=0.25, pool="none"),
              PlanInput("control_success", "prompt:5", "z", sigma2=0.2, v_ref=0.0, icc=icc, yield_=1.0, pool="prompt:5")]
    arms = [Arm("none", 5, 400, 40), Arm("none", 0, 20, 40, headline=False), Arm("prompt:5", 5, 405, 30)]
    return inputs, arms


def test_the_design_for_a_width_is_the_cheapest_that_reaches_it():
    inputs, arms = two_pools()
    unit = UnitCosts(2.0, 40.0, 30.0)
    designs = design_for_width(inputs, arms, 0.05, unit)
    for d in designs:
        rows = [p for p in inputs if p.pool == d.pool]
        assert all(expected_half_width(p, d.contexts, d.samples) <= 0.05 + 1e-12 for p in rows)
        # one context fewer at the same S misses the width
        assert any(expected_half_width(p, d.contexts - 1, d.samples) > 0.05 for p in rows)
    for s in (1, 2, 4, 8, 16, 32, 64):  # and no other S reaches it for less
        assert total_cost(design_for_width(inputs, arms, 0.05, unit, s_options=(s,))) >= total_cost(designs) - 1e-9


def test_no_design_fits_a_budget_below_the_smallest_and_the_width_follows_the_budget():
    inputs, arms = two_pools()
    unit = UnitCosts(2.0, 40.0)
    assert design_for_budget(inputs, arms, 1.0, unit) is None
    widths = [design_for_budget(inputs, arms, 60_000 * m, unit)[1] for m in (1, 4, 16)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(2.0, rel=0.15)  # 4x the budget: about half the width


def test_cost_fit_recovers_planted_costs():
    calls = [(p, g, 0.002 * p + 0.04 * g + 0.03) for p, g in ((200, 1), (400, 1), (600, 1), (30, 256), (30, 512))]
    a, b, c = fit_costs(calls)
    assert (a, b, c) == pytest.approx((0.002, 0.04, 0.03), rel=1e-6)


def test_manifest_costs_charge_every_invocation_of_a_resumed_pilot():
    draws = pl.DataFrame({"pool": ["none"] * 4, "n_exemplars": [3] * 4, "context_id": [0, 0, 1, 1],
                          "prompt_tokens": [100] * 4, "completion_tokens": [50] * 4})  # 2 x 100 prompt + 200 generated
    resumed = {"counts": {"done": 4, "cached": 0}, "timings": {"generate": 1.0}, "sampling": {"seconds": 4.0, "invocations": 2}}
    assert manifest_costs(resumed, draws).decode_ms == pytest.approx(1000.0 * 4.0 / 400)  # both invocations' seconds
    older = {"counts": {"done": 4, "cached": 0}, "timings": {"generate": 1.0}}  # written before `sampling` existed
    assert manifest_costs(older, draws).decode_ms == pytest.approx(1000.0 * 1.0 / 400)
