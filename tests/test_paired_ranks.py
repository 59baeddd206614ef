"""The board's paired rankings beside the score: forcing-set mass under reward@K and Goodhart-proneness.

Planted pairs (harness/testing/paired_planted.py) check that the statistics are the estimators' own,
that a clear planted difference is decided at a large design and a null one is not; the published
runs check the document, its schema, the Markdown tables and the generated prose.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from harness.controls import TiltControl
from harness.leaderboard.document import build_document, load_schema
from harness.leaderboard.markdown import render
from harness.leaderboard.paired_ranks import section_comparisons
from harness.leaderboard.paired_stats import FORCING, GOODHART, side_statistics
from harness.leaderboard.prose import render_report
from harness.leaderboard.runs import load_runs
from harness.protocols import EstimationInputs
from harness.records import Manifest, ManifestModel
from harness.stats.flags import INSUFFICIENT_DATA, NO_VARIANCE, TOO_FEW_CONTEXTS
from harness.stats.goodhart import GoodhartCurve
from harness.stats.paired import MIN_PAIRED_CONTEXTS, SideReplicates, paired_difference
from harness.testing.curve_calibration import goodhart_task
from harness.testing.paired_planted import SEED, pair_draws, paired_calibration, planted_difference

PUBLISHED = Path(__file__).resolve().parent.parent / "results" / "published" / "runs"


def _side(point: float, values: list[float], prefix: str = "c") -> SideReplicates:
    return SideReplicates(point, {f"{prefix}{i}": v for i, v in enumerate(values)})


def test_paired_difference_is_the_jackknife_over_shared_contexts_or_withheld_with_a_reason():
    c = MIN_PAIRED_CONTEXTS
    rng = np.random.default_rng(0)
    a_reps, b_reps = rng.normal(0.5, 0.02, c), rng.normal(0.2, 0.02, c)
    diff = paired_difference(_side(0.5, list(a_reps)), _side(0.2, list(b_reps)))
    d = a_reps - b_reps
    se = np.sqrt((c - 1) / c * np.sum((d - d.mean()) ** 2))
    from scipy.stats import t

    assert diff.point == pytest.approx(0.3) and diff.contexts == c
    assert diff.upper - diff.lower == pytest.approx(2 * t.ppf(0.975, c - 1) * se)
    assert diff.decided and diff.sign == 1 and diff.as_dict()["decided"] is True
    unpaired = paired_difference(_side(0.5, list(a_reps)), _side(0.2, list(b_reps), prefix="other"))
    assert unpaired.lower is None and unpaired.flags == (INSUFFICIENT_DATA,) and "same contexts" in unpaired.reason
    few = paired_difference(_side(0.5, [0.4, 0.6]), _side(0.2, [0.1, 0.3]))
    assert few.lower is None and few.flags == (TOO_FEW_CONTEXTS,) and f"at least {MIN_PAIRED_CONTEXTS}" in few.reason
    flat = paired_difference(_side(0.0, [0.0] * c), _side(0.0, [0.0] * c))
    assert flat.lower is None and flat.flags == (NO_VARIANCE,) and not flat.decided


def test_side_statistics_are_the_estimators_own_values():
    reference, a, _ = pair_draws(np.random.default_rng(3), 6, 4, "planted")
    task = goodhart_task()
    stats = side_statistics(task, reference, a, "planted", SEED)
    rows = GoodhartCurve().estimate(EstimationInputs(task, reference, a, TiltControl().select(a, task)))
    keyed = {(r.estimator, r.condition, r.feature): r.point for r in rows}
    assert stats[GOODHART].point == pytest.approx(keyed["goodhart_score", "tilt", "_all"], abs=1e-12)
    assert stats[FORCING].point == pytest.approx(keyed["goodhart_curve", "none", "_mK"], abs=1e-12)
    assert len(stats[GOODHART].without) == 6 and all(k.startswith(f"seed:{SEED}|") for k in stats[GOODHART].without)


def test_a_clear_planted_difference_is_decided_at_a_large_design_and_a_null_one_is_not():
    truth = planted_difference("planted")
    assert truth[FORCING] < -0.2 and truth[GOODHART] < -0.2  # the first mimic is below the second on both
    for row in paired_calibration(40, 8, 3, 0, "planted"):
        assert row["reps"] + round(row["withheld"] * 3) == 3
        assert row["decided"] == 1.0 and row["mean"] < 0, row
    for row in paired_calibration(16, 8, 3, 0, "null"):
        assert row["planted"] == 0.0 and row["decided"] == 0.0 and row["coverage"] == 1.0, row


def _planted_section(contexts: int):
    """Two planted models on the same contexts as a section: models, estimate entries, manifests, draws."""
    reference, a, b = pair_draws(np.random.default_rng(7), contexts, 8, "planted")
    task = goodhart_task()
    models, entries, runs, draws = [], [], [], {}
    for name, frame in (("base", a), ("tuned", b)):
        frame = frame.with_columns(run_id=frame["run_id"].str.replace("planted", name))
        for r in GoodhartCurve().estimate(EstimationInputs(task, reference, frame, TiltControl().select(frame, task))):
            entries.append({"model": name, "model_name": name, "estimator": r.estimator, "condition": r.condition,
                            "feature": r.feature, "point": r.point, "lower": r.lower, "upper": r.upper,
                            "note": dict(r.note), "flags": list(r.note.get("flags", []))})
        models.append({"model": name, "model_name": name})
        runs.append(Manifest(run_id=name, model=ManifestModel(model_id=name), task=task.to_dict(), seed=SEED))
        draws[name] = frame
    return models, entries, runs, draws, reference


def test_section_comparisons_rank_on_paired_intervals_and_withhold_below_the_calibrated_design():
    models, entries, runs, draws, reference = _planted_section(40)
    comparisons = {c["statistic"]: c for c in section_comparisons(models, entries, runs, draws, reference)}
    assert set(comparisons) == {FORCING, GOODHART}
    forcing, goodhart = comparisons[FORCING], comparisons[GOODHART]
    assert forcing["higher_is_better"] and not goodhart["higher_is_better"]
    # planted: the tuned mimic has the higher m_K (ranked first) and the higher G (ranked last), both decided
    assert [m["model"] for m in forcing["models"]] == ["tuned", "base"] and [m["rank_label"] for m in forcing["models"]] == ["1", "2"]
    assert [m["model"] for m in goodhart["models"]] == ["base", "tuned"] and goodhart["models"][0]["vs_next"]["decided"]
    assert forcing["models"][0]["vs_next"]["lower"] > 0 and goodhart["models"][0]["vs_next"]["upper"] < 0
    few = section_comparisons(*_planted_section(MIN_PAIRED_CONTEXTS - 1))
    for c in few:
        assert [m["rank_label"] for m in c["models"]] == ["1=", "1="]
        assert c["models"][0]["vs_next"]["flags"] == [TOO_FEW_CONTEXTS] and c["models"][0]["vs_next"]["lower"] is None
    one_run = section_comparisons(models, entries, runs[:1], draws, reference)
    assert all("0 runs" in m["vs_next"]["no_interval"] for c in one_run for m in c["models"][:1])


@pytest.fixture(scope="module")
def published():
    if not PUBLISHED.is_dir():
        pytest.skip("no published runs")
    data = load_runs([PUBLISHED])
    return data, build_document(data)


def test_published_board_has_both_tables_per_section_schema_valid(published):
    data, doc = published
    jsonschema.validate(json.loads(json.dumps(doc)), load_schema())
    markdown, report = render(doc), render_report(doc, data.manifests)
    for section in doc["sections"]:
        assert [c["statistic"] for c in section["comparisons"]] == [FORCING, GOODHART]
        for c in section["comparisons"]:
            assert len(c["models"]) == 2 and c["models"][1]["vs_next"] is None
            values = {(e["model"], e["estimator"], e["condition"], e["feature"]): e["point"] for e in section["estimates"]}
            key = ("forcing_mass", "none", f"K={c['k']}") if c["statistic"] == FORCING else ("goodhart_score", "tilt", "_all")
            for m in c["models"]:
                assert m["value"]["point"] == values[(m["model"], *key)]  # the estimate row, not a copy of it
            diff = c["models"][0]["vs_next"]
            assert diff["point"] == pytest.approx(c["models"][0]["value"]["point"] - c["models"][1]["value"]["point"], abs=1e-9)
            # the published design: both runs of the section showed the same prompts, C of them
            planned = {m.plan.get("contexts") for m in data.manifests if m.task_name == section["task"]}
            assert len(planned) == 1 and diff["contexts"] == planned.pop()
            assert (diff["lower"] is None) == bool(diff["no_interval"]) == bool(diff["flags"])
            assert [m["rank_label"] for m in c["models"]] == (["1", "2"] if diff["decided"] else ["1=", "1="])
    assert markdown.count("\n### Forcing-set mass under reward@K (K = ") == len(doc["sections"])
    assert markdown.count("\n### Goodhart-proneness (KL budget 0.5 nats)\n") == len(doc["sections"])
    assert "## What the data decided" in report and report.count("comparison(s) decided.") == len(doc["sections"])
    withheld = sum(c["models"][0]["vs_next"]["lower"] is None for section in doc["sections"] for c in section["comparisons"])
    assert report.count("not decided, no interval") == markdown.count("not decided, no interval") == withheld
