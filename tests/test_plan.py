"""`mimic plan` on a synthetic pilot run directory, and the planning arithmetic under it."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import polars as pl
import pytest

from harness.cli import plan as plan_cli
from harness.errors import UsageError
from harness.estimation import run_estimators
from harness.stats.est_forcing import ForcingMass
from harness.stats.est_rates import ControlSuccess
from harness.stats.est_shift import LatentShift
from harness.stats.planning import Z95, PlanInput, inputs_from_estimates, plan_row
from harness.taskspec import TaskSpec
from harness.testing.synthetic import planted


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    """A pilot run directory: draws, reference, manifest and estimates of a planted data set (C=40, S=5)."""
    p = planted(np.random.default_rng(5), n_boot=200)
    run_dir = tmp_path_factory.mktemp("runs") / "pilot"
    run_dir.mkdir()
    p.inputs.draws.write_parquet(run_dir / "draws.parquet")
    p.inputs.reference.write_parquet(run_dir / "reference.parquet")
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": "pilot", "task": p.inputs.task.to_dict()}))
    est = run_estimators({"control_success": ControlSuccess(), "latent_shift": LatentShift(), "forcing_mass": ForcingMass()}, p.inputs)
    est.write_parquet(run_dir / "estimates.parquet")
    return run_dir, est


def args(**kw) -> argparse.Namespace:
    base = {"pilot": None, "task": None, "width": 0.05, "icc": 0.1, "estimators": None, "n_boot": 100, "seed": 0, "json": True,
            "budget_minutes": None, "budget_tokens": None, "cost_prefill_ms": None, "cost_token_ms": None, "measure_cost": False,
            "drop_curve": False}
    return argparse.Namespace(**{**base, **kw})


def run_json(capsys, **kw) -> dict:
    assert plan_cli.run(args(**kw)) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_rows_needed_follow_the_inverse_square_of_the_width(pilot, capsys):
    run_dir, est = pilot
    row = est.filter((pl.col("estimator") == "control_success") & (pl.col("condition") == "prompt:a")).row(0, named=True)
    now = (row["upper"] - row["lower"]) / 2
    at_now = {(r["estimator"], r["condition"], r["feature"]): r for r in run_json(capsys, pilot=str(run_dir), width=now)["rows"]}
    at_half = {(r["estimator"], r["condition"], r["feature"]): r for r in run_json(capsys, pilot=str(run_dir), width=now / 2)["rows"]}
    key = ("control_success", "prompt:a", "z")
    assert at_now[key]["half_width"] == pytest.approx(now)
    # rows needed (i.i.d.-equivalent x the design effect at the chosen S) scale with 1 / width^2
    assert at_half[key]["status"] == "ok" and at_half[key]["rows_needed"] == pytest.approx(4 * at_now[key]["rows_needed"], rel=1e-6)
    # at today's width and today's S, the plan asks for exactly today's rows
    sizes = dict(pl.read_parquet(run_dir / "draws.parquet").group_by("pool").len().iter_rows())
    (inp,) = [p for p in inputs_from_estimates(est, sizes) if (p.estimator, p.condition) == key[:2]]
    assert inp.deff == pytest.approx(json.loads(row["note"])["deff"]) and inp.icc > 0
    assert plan_row(inp, now, 1.0, 1.0, s_options=(5,)).rows_needed == pytest.approx(row["n"], rel=1e-9)
    ref = next(r for k, r in at_now.items() if k[1] == "reference")
    assert ref["status"] == "reference data" and ref["contexts"] == 0


def test_plan_prints_a_table_and_pool_lines(pilot, capsys):
    run_dir, _ = pilot
    assert plan_cli.run(args(pilot=str(run_dir), json=False, estimators=["control_success", "latent_shift"])) == 0
    out = capsys.readouterr().out
    assert "| control_success | prompt:a | z |" in out and "forcing_mass" not in out
    assert "pool prompt:a:" in out and "contexts x" in out


def test_plan_recomputes_from_a_jsonl_log_without_estimates(pilot, tmp_path, capsys):
    run_dir, _ = pilot
    draws = pl.read_parquet(run_dir / "draws.parquet")
    from harness.store import encode_line

    log = b"".join(encode_line(r) for r in draws.iter_rows(named=True))
    (tmp_path / "draws.jsonl").write_bytes(log + b'{"torn')
    for name in ("reference.parquet", "manifest.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    rows = run_json(capsys, pilot=str(tmp_path), estimators=["control_success"])["rows"]
    assert {r["estimator"] for r in rows} == {"control_success"} and rows[0]["n"] > 0


def test_planning_arithmetic():
    w = 0.05
    base = PlanInput("e", "prompt:a", "f", sigma2=0.25, v_ref=0.0, icc=0.0, yield_=1.0, pool="prompt:a")
    row = plan_row(base, w, prompt_tokens=1.0, completion_tokens=1.0, s_options=(1,))
    assert row.rows_needed == pytest.approx(0.25 / (w / Z95) ** 2) and row.contexts == math.ceil(row.rows_needed)
    limited = plan_row(PlanInput(**{**base.__dict__, "v_ref": (w / Z95) ** 2 * 1.01}), w, 1.0, 1.0)
    assert limited.status == "reference-limited" and math.isinf(limited.draws_needed)
    # identical samples within a context: one sample per context is cheapest
    assert plan_row(PlanInput(**{**base.__dict__, "icc": 1.0}), w, 100.0, 1.0).samples_per_context == 1
    # nearly independent samples and an expensive prompt: share the prompt across many samples
    assert plan_row(PlanInput(**{**base.__dict__, "icc": 0.01}), w, 1000.0, 10.0).samples_per_context >= 16
    # half the kept rows per draw: twice the draws
    half = plan_row(PlanInput(**{**base.__dict__, "yield_": 0.5}), w, 1.0, 1.0, s_options=(1,))
    assert half.draws_needed == pytest.approx(2 * row.draws_needed, rel=0.01)


def test_plan_needs_exactly_one_source(tmp_path):
    with pytest.raises(UsageError):
        plan_cli.run(args())
    with pytest.raises(UsageError):
        plan_cli.run(args(pilot=str(tmp_path), task="bookworld"))
    with pytest.raises(UsageError):
        plan_cli.run(args(pilot=str(tmp_path), width=0))


def test_task_round_trips_through_the_manifest_dict():
    task = planted(np.random.default_rng(0), n_ref=50, contexts=2, samples=2).inputs.task
    assert TaskSpec.from_dict(json.loads(json.dumps(task.to_dict()))) == task


@pytest.fixture(scope="module")
def thin_pilot(tmp_path_factory):
    """A pilot of one context (C=1, S=8): every mimic-side estimate is withheld for too few contexts."""
    p = planted(np.random.default_rng(7), contexts=1, samples=8, n_ref=200, n_boot=100)
    run_dir = tmp_path_factory.mktemp("runs") / "thin"
    run_dir.mkdir()
    p.inputs.draws.write_parquet(run_dir / "draws.parquet")
    est = run_estimators({"control_success": ControlSuccess(), "latent_shift": LatentShift(), "forcing_mass": ForcingMass()}, p.inputs)
    est.write_parquet(run_dir / "estimates.parquet")
    return run_dir, est


def test_plan_says_how_many_contexts_a_withheld_interval_takes(thin_pilot, capsys):
    run_dir, est = thin_pilot
    withheld = {(r["estimator"], r["condition"], r["feature"]): json.loads(r["note"]) for r in est.iter_rows(named=True)
                if "too_few_contexts" in json.loads(r["note"]).get("flags", [])}
    assert withheld and all(n["contexts_needed"] >= 2 for n in withheld.values())
    rows = {(r["estimator"], r["condition"], r["feature"]): r for r in run_json(capsys, pilot=str(run_dir))["rows"]}
    for key, note in withheld.items():
        row = rows[key]
        assert row["status"] == "too few contexts" and row["contexts"] >= note["contexts_needed"], (key, row)
        assert row["samples_per_context"] == 8 and row["min_contexts"] == note["contexts_needed"]
    assert plan_cli.run(args(pilot=str(run_dir), json=False)) == 0
    out = capsys.readouterr().out
    for pool in {rows[key]["pool"] for key in withheld}:
        most = max(r["contexts"] for key, r in rows.items() if key in withheld and r["pool"] == pool)
        line = next(x for x in out.splitlines() if x.startswith(f"pool {pool}: ") and "no interval in the pilot" in x)
        assert f"rerun the pilot with --contexts {most}" in line and "1 context; an interval needs at least 2" in line


def test_withheld_row_scales_by_the_contexts_that_kept_a_row():
    note = {"flags": ["too_few_contexts"], "contexts": 1, "contexts_needed": 2, "no_interval": "1 context; an interval needs at least 2"}
    est = pl.DataFrame({"estimator": ["latent_shift"], "condition": ["filter:a"], "feature": ["h"], "point": [0.3],
                        "lower": [None], "upper": [None], "n": [3], "method": ["percentile"], "note": [json.dumps(note)]},
                       schema_overrides={"lower": pl.Float64, "upper": pl.Float64})
    (inp,) = inputs_from_estimates(est, {"none": 32}, {"none": 4})  # a filter kept rows from 1 of 4 contexts
    row = plan_row(inp, 0.05, 1.0, 1.0)
    assert row.status == "too few contexts" and (row.contexts, row.samples_per_context) == (8, 8) and row.draws_needed == 64


def test_plan_never_picks_fewer_contexts_than_an_interval_needs():
    # nearly independent samples and a dear prompt: the width alone would take one context of many samples
    base = PlanInput("e", "prompt:a", "f", sigma2=0.25, v_ref=0.0, icc=0.0, yield_=1.0, pool="prompt:a")
    assert plan_row(base, 0.2, prompt_tokens=10_000.0, completion_tokens=1.0).contexts >= 2
    row = plan_row(base, 0.2, prompt_tokens=10_000.0, completion_tokens=1.0, s_options=(64,))  # 24 rows: one context
    assert row.contexts == 2 and row.contexts_raised and row.rows_needed == 2 * 64
    # a selection that keeps 1% of the pool: enough contexts that two of them are expected to keep a row
    rare = plan_row(PlanInput(**{**base.__dict__, "yield_": 0.01, "sigma2": 0.01}), 0.5, 1.0, 1.0, s_options=(4,))
    assert rare.contexts * (1 - 0.99**4) >= 2 and rare.contexts_raised
