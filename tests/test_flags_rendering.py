"""Every flag reaches the reader beside its number, and a missing interval reads "no interval (reason)":
the terminal summary and summary.md (harness.summary), leaderboard.md and leaderboard.json (issue 14)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import polars as pl
import pytest

from harness.leaderboard.document import build_document, load_schema, pooled_estimates, ranked_extras
from harness.leaderboard.fmt import fmt_estimate, fmt_interval, fmt_row, md_cell
from harness.leaderboard.markdown import render, score_text
from harness.leaderboard.runs import load_runs
from harness.stats import flags as fl
from harness.records import Manifest
from harness.summary import HEADERS, summary_markdown, summary_rows
from tests.fixtures.runs.flagged import flag_run
from tests.fixtures.runs.synth import write_run


def _row(condition, feature, point, lower, upper, note, method="bootstrap-percentile", estimator="latent_shift"):
    return {"condition": condition, "estimator": estimator, "feature": feature, "point": point, "lower": lower, "upper": upper,
            "n": 8, "method": method, "note": json.dumps(note)}


ROWS = [
    _row("prompt:1", "genre", 0.465, None, None, fl.withheld({}, fl.TOO_FEW_CONTEXTS, contexts=1, needed=2)),
    _row("filter:1", "helping", 0.0, float("nan"), float("nan"), fl.withheld({}, fl.NO_VARIANCE)),
    _row("tilt@1", "_shift", 0.41, 0.2, 0.6, {"low_ess": True}),  # a legacy boolean key
    _row("filter:5", "rating", 1.0, 1.0, 1.0, {}, method="by-construction", estimator="control_success"),
    _row("none", "genre", 0.12, 0.05, 0.2, {}),
]


def test_a_number_without_interval_says_so_and_why_and_flags_follow_it():
    assert fmt_estimate(0.465, None, None, {"no_interval": "1 context; an interval needs at least 2", "flags": ["too_few_contexts"]}) == \
        "0.465, no interval (1 context; an interval needs at least 2) · flags: too few contexts"
    assert fmt_estimate(0.5, float("nan"), float("nan"), {"flags": ["no_variance"]}) == "0.500, no interval (no variance) · flags: no variance"
    assert fmt_estimate(0.41, 0.2, 0.6, {"low_ess": True}) == "0.41 [0.20, 0.60] · flags: low ESS"
    assert fmt_estimate(1.0, 1.0, 1.0, {}, "by-construction") == "1.000 [1.000, 1.000] · flags: by construction"
    assert fmt_estimate(0.12, 0.05, 0.2, {}) == fmt_interval(0.12, 0.05, 0.2) == "0.12 [0.05, 0.20]"
    assert fmt_interval(None, None, None, "b undefined") == "n/a (b undefined)"
    # an interval that excludes 0 never prints an end as 0
    assert fmt_interval(-0.24, -0.48, -0.0004) == "-0.2400 [-0.4800, -0.0004]"
    assert fmt_interval(-0.24, -0.48, 0.0) == "-0.24 [-0.48, 0.00]"
    # a document entry may carry flags and the reason itself (a ranked model's score does)
    assert fmt_row({"point": 0.4, "lower": None, "upper": None, "flags": ["insufficient_data"], "no_interval": "draws not saved"}) == \
        "0.400, no interval (draws not saved) · flags: insufficient data"


def test_summary_rows_put_flags_beside_the_number_and_never_a_bare_point():
    rows = {(r[0], r[2]): dict(zip(HEADERS, r)) for r in summary_rows(pl.DataFrame(ROWS))}
    assert HEADERS.index("flags") == HEADERS.index("95% interval") + 1
    few = rows[("prompt:1", "genre")]
    assert few["point"] == "0.465" and few["95% interval"] == "no interval (1 context; an interval needs at least 2)"
    assert few["flags"] == "too few contexts"
    flat = rows[("filter:1", "helping")]  # NaN ends, as an Estimate holds them
    assert flat["95% interval"] == "no interval (the sample shows no variance to build an interval from)" and flat["flags"] == "no variance"
    assert rows[("tilt@1", "_shift")]["flags"] == "low ESS" and rows[("tilt@1", "_shift")]["95% interval"] == "[0.200, 0.600]"
    assert rows[("filter:5", "rating")]["flags"] == "by construction"
    assert rows[("none", "genre")]["flags"] == "" and rows[("none", "genre")]["95% interval"] == "[0.050, 0.200]"


def test_summary_md_carries_every_flag_and_reason():
    manifest = {"task_name": "t", "task_version": 1, "model": {"display_name": "m", "model_id": "s:m"}, "run_id": "r", "status": "complete",
                "reference_hash": "h", "seed": 0, "counts": {}, "usage": {}, "timings": {"total": 1.0}}
    md = summary_markdown(Manifest.from_dict(manifest), pl.DataFrame(ROWS))
    line = next(l for l in md.splitlines() if "prompt:1" in l)
    assert "no interval (1 context; an interval needs at least 2)" in line and "too few contexts" in line
    assert "| flags |" in md and "low ESS" in md and "by construction" in md and "no variance" in md


def _md_tables(md: str) -> dict[str, list[list[str]]]:
    """Markdown tables keyed by the heading above them (first table under each heading)."""
    tables, heading = {}, ""
    for line in md.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("# ").strip()
        elif line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= set("-: ") for c in cells):
                tables.setdefault(heading, []).append(cells)
    return tables


@pytest.fixture(scope="module")
def flagged(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("flagged")
    planted = flag_run(write_run(root, model="flagged", shift=0.1, name="Flagged"))
    write_run(root, model="plain", shift=0.3, name="Plain")
    return root, planted


def test_leaderboard_md_shows_every_planted_flag_and_withheld_interval_beside_its_number(flagged):
    root, planted = flagged
    doc = build_document(load_runs([root], with_draws=False))
    tables = _md_tables(render(doc))
    section = doc["sections"][0]
    for p in planted:
        entry = next(e for e in section["estimates"] if (e["estimator"], e["condition"], e["feature"], e["model"]) ==
                     (p.estimator, p.condition, p.feature, "scripted:flagged"))
        table = tables[p.estimator]
        col = table[0].index("Flagged")
        cell = next(r for r in table[1:] if r[0] == p.condition and r[1] == p.feature)[col]
        assert cell == md_cell(fmt_row(entry))
        number = fmt_interval(entry["point"], entry["lower"], entry["upper"], p.reason)
        assert cell.startswith(number), (cell, number)
        for flag in p.flags:
            assert fl.describe([flag]) in cell.split(" · flags: ")[1], (p, cell)
        assert (f"no interval ({p.reason})" in cell) == p.withheld
    legend = next(l for l in render(doc).splitlines() if l.startswith("Flags in this section"))
    assert all(fl.describe([f]) in legend for f in fl.KNOWN)


def test_leaderboard_md_ranking_shows_rank_label_score_flags_and_cells_measured(flagged):
    root, _ = flagged
    doc = build_document(load_runs([root], with_draws=False))
    first, second = doc["sections"][0]["models"][:2]
    first.update(rank_label="1=", n_measured=5, flags=[fl.INSUFFICIENT_DATA], no_interval="the draws were not saved")
    first["score"] = {**first["score"], "lower": None, "upper": None}
    second.update(rank_label="1=", n_measured=6)
    rows = {r[1]: r for r in _md_tables(render(doc))[next(k for k in _md_tables(render(doc)) if k.startswith("Task "))][1:]}
    row = rows[first["model_name"]]
    assert row[0] == "1=" and rows[second["model_name"]][0] == "1="
    assert row[2] == md_cell(score_text(first))
    assert row[2].startswith(f"{first['score']['point']:.3f}, no interval (the draws were not saved)") and row[2].endswith("flags: insufficient data")
    assert row[4] == f"5 of {first['n_cells']} measured"


def test_ranked_extras_read_old_and_new_ranking_lines():
    old = SimpleNamespace(rank=1, score=SimpleNamespace(point=0.5, lower=0.4, upper=0.6))
    assert ranked_extras(old) == {"rank_label": None, "flags": [], "n_measured": None, "no_interval": None}
    new = SimpleNamespace(rank=None, score=old.score, rank_label="2=", n_measured=3, flags=("too_few_contexts",), no_interval="1 context")
    assert ranked_extras(new) == {"rank_label": "2=", "flags": ["too_few_contexts"], "n_measured": 3, "no_interval": "1 context"}


def test_pooled_seeds_keep_every_flag_and_withhold_when_one_run_withheld(tmp_path):
    write_run(tmp_path, model="m", shift=0.1, seed=0)
    flag_run(write_run(tmp_path, model="m", shift=0.1, seed=1), goodhart_score=False)
    data = load_runs([tmp_path], with_draws=False)
    pooled = pooled_estimates(data.estimates, data.notes)
    few = pooled.filter((pl.col("estimator") == "latent_shift") & (pl.col("condition") == "prompt:1") & (pl.col("feature") == "genre")).row(0, named=True)
    assert few["lower"] is None and few["upper"] is None and few["runs"] == 2
    note = json.loads(few["note"])
    assert note["flags"] == [fl.TOO_FEW_CONTEXTS] and note["no_interval"] == "1 context; an interval needs at least 2"
    forcing = pooled.filter((pl.col("estimator") == "forcing_mass") & (pl.col("condition") == "none") & (pl.col("feature") == "K=8")).row(0, named=True)
    assert json.loads(forcing["note"])["flags"] == [fl.LOW_ESS, fl.SELECTION_USES_WORLD_DRAWS] and forcing["lower"] is not None


def test_leaderboard_json_carries_the_flags_and_validates(flagged):
    root, planted = flagged
    doc = json.loads(json.dumps(build_document(load_runs([root], with_draws=False))))
    jsonschema.validate(doc, load_schema())
    assert doc["schema_version"] == 1
    entries = {(e["estimator"], e["condition"], e["feature"]): e for e in doc["sections"][0]["estimates"] if e["model"] == "scripted:flagged"}
    for p in planted:
        e = entries[(p.estimator, p.condition, p.feature)]
        assert e["flags"] == list(p.flags)
        assert (e["lower"] is None and e["upper"] is None and e["note"]["no_interval"] == p.reason) == p.withheld
    for m in doc["sections"][0]["models"]:
        assert {"rank_label", "flags", "n_measured", "no_interval"} <= set(m)
    broken = json.loads(json.dumps(doc))
    broken["sections"][0]["estimates"][0]["flags"] = "low_ess"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, load_schema())
