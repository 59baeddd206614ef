"""`mimic leaderboard`: merging runs, the synchronisation score, reference-hash separation, and the
Markdown / JSON writers (schema, same numbers, no secrets). Runs are synthetic (tests/fixtures/runs)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import polars as pl
import pytest

from harness.cli import main
from harness.errors import DataError, UsageError
from harness.leaderboard import score
from harness.leaderboard.document import build_document, load_schema
from harness.leaderboard.fmt import fmt_interval, fmt_row, fmt_triple, md_cell, md_escape
from harness.leaderboard.markdown import rank_text, score_text
from harness.leaderboard.jsonout import validate
from harness.leaderboard.runs import load_runs
from harness.plugins import build_registries
from harness.stats.flags import describe
from tests.fixtures.runs.synth import write_run

SECRET = "sk-LIVE-0123456789abcdef"


@pytest.fixture(autouse=True)
def only_the_writers_plugin(monkeypatch):
    """Load just the writers' plugin: importing every installed plugin costs seconds and is not under test."""
    monkeypatch.setenv("MIMIC_PLUGINS", "builtin-leaderboard")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Four models on one reference (one with two seeds), one model on another reference."""
    root = tmp_path_factory.mktemp("runs")
    write_run(root, model="good", shift=0.05, name="Good | model", options={"api_key": SECRET, "n_ctx": 2048})
    write_run(root, model="bad", shift=0.6, seed=0)
    write_run(root, model="bad", shift=0.6, seed=1)
    write_run(root, model="mid", shift=0.3, with_draws=False)
    write_run(root, model="elsewhere", shift=0.1, reference_seed=9, curves=False)  # no world, no context sizes: no curve rows
    return root


@pytest.fixture(scope="module")
def built(runs, tmp_path_factory) -> tuple[Path, str, str]:
    """Run the CLI once with every writer; return the output dir, stdout and stderr."""
    out = tmp_path_factory.mktemp("board")
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        mp.setenv("MIMIC_PLUGINS", "builtin-leaderboard")
        assert main(["leaderboard", str(runs), "--out", str(out)]) == 0
    return out, stdout.getvalue(), stderr.getvalue()


def test_builtin_writers_are_registered_through_the_plugin_manager():
    entry = build_registries().leaderboard_writers
    assert {"markdown", "json", "html"} <= set(entry.names())
    assert entry.get("html").plugin == "builtin-leaderboard"


def test_load_runs_merges_models_seeds_and_tasks(runs):
    data = load_runs([runs])
    assert len(data.manifests) == 5
    assert set(data.estimates["run_id"].unique()) == {m.run_id for m in data.manifests}
    assert set(data.estimates["model"].unique()) == {"scripted:good", "scripted:bad", "scripted:mid", "scripted:elsewhere"}
    assert len(data.draws) == 4  # the run saved without draws has none
    assert set(data.references) == {f"{7:016x}", f"{9:016x}"}


def test_runs_of_one_model_are_pooled_and_ranked(runs):
    doc = build_document(load_runs([runs]))
    section = next(s for s in doc["sections"] if s["reference_hash"] == f"{7:016x}")
    ranked = [m["model"] for m in section["models"]]
    # issue 14: "mid" saved no draws, so its score cannot be resampled: no interval, no rank, listed after the ranked ones
    assert ranked == ["scripted:good", "scripted:bad", "scripted:mid"]
    good, bad, mid = section["models"]
    assert len(bad["runs"]) == 2 and (good["rank"], bad["rank"], mid["rank"]) == (1, 2, None)
    assert mid["flags"] == ["insufficient_data"] and mid["score"]["lower"] is None and mid["score"]["point"] is not None
    assert good["vs_next"]["point"] == pytest.approx(good["score"]["point"] - bad["score"]["point"])
    assert good["vs_next"]["distinguishable"] is True and good["vs_next"]["lower"] > 0  # paired: the same reference weights


def test_different_reference_hashes_are_never_ranked_together(built):
    out, stdout, stderr = built
    doc = json.loads((out / "leaderboard.json").read_text())
    sections = {s["reference_hash"]: [m["model"] for m in s["models"]] for s in doc["sections"]}
    assert sections[f"{9:016x}"] == ["scripted:elsewhere"]
    assert "scripted:elsewhere" not in sections[f"{7:016x}"]
    assert len(doc["messages"]) == 1 and "separate sections" in doc["messages"][0]
    assert "different" in stderr and "reference" in stderr and "not comparable" in stderr
    md = (out / "leaderboard.md").read_text()
    assert md.count("## Task bookworld v1") == 2 and "never together" in md


def test_cli_prints_where_it_wrote_index_html(built):
    out, stdout, _ = built
    assert f"wrote {out / 'index.html'}" in stdout
    assert (out / "index.html").resolve().as_uri() in stdout
    assert (out / "leaderboard.md").is_file() and (out / "leaderboard.json").is_file() and (out / "assets" / "site.js").is_file()


def test_json_validates_against_the_versioned_schema(built):
    out, _, _ = built
    doc = json.loads((out / "leaderboard.json").read_text())
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema)
    assert doc["schema_version"] == 1
    broken = json.loads(json.dumps(doc))
    broken["sections"][0]["models"][0]["score"] = {"point": "high", "lower": 0, "upper": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    with pytest.raises(DataError, match="schema"):
        validate({**doc, "schema_version": 2})


def test_document_carries_the_goodhart_and_sync_curves(built):
    out, _, _ = built
    doc = json.loads((out / "leaderboard.json").read_text())
    jsonschema.validate(doc, load_schema())
    main_section = next(s for s in doc["sections"] if s["reference_hash"] == f"{7:016x}")
    other = next(s for s in doc["sections"] if s["reference_hash"] == f"{9:016x}")
    goodhart, sync = main_section["charts"]["goodhart"], main_section["charts"]["sync"]
    # one curve per model (runs of a model pooled), in ranking order, on the pool "none"
    assert [c["model"] for c in goodhart] == [m["model"] for m in main_section["models"]]
    good = goodhart[0]
    assert good["pool"] == "none" and good["model_name"] == "Good | model"
    assert [p["kl"] for p in good["points"]] == sorted(p["kl"] for p in good["points"]) and good["points"][0]["kl"] == 0.0
    assert {p["control"] for p in good["points"]} == {"none", "tilt", "reward", "best-of-n"}
    for p in good["points"]:
        assert p["success"]["lower"] <= p["success"]["point"] <= p["success"]["upper"]
        assert p["shift"]["lower"] <= p["shift"]["point"] <= p["shift"]["upper"]
    assert good["noise_floor"] == {"point": 0.05, "lower": 0.03, "upper": 0.08} and 0 <= good["bound"] <= 2
    assert any(p["low_ess"] for p in good["points"])
    assert [c["model"] for c in sync] == [m["model"] for m in main_section["models"]]
    assert [f["feature"] for f in sync[0]["features"]] == ["genre", "length", "rating"]
    points = sync[0]["features"][0]["points"]
    assert [p["n"] for p in points] == [1, 3, 8] and all(p["noise_floor"] > 0 and p["lower"] <= p["point"] <= p["upper"] for p in points)
    assert other["charts"]["goodhart"] == [] and other["charts"]["sync"] == []  # no rows: no chart
    # schema version 1 stays compatible: a document without the new keys still validates; a wrong shape does not
    old = json.loads(json.dumps(doc))
    for section in old["sections"]:
        del section["charts"]["goodhart"], section["charts"]["sync"]
    jsonschema.validate(old, load_schema())
    broken = json.loads(json.dumps(doc))
    broken["sections"][0]["charts"]["sync"][0]["features"][0]["points"][0]["n"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, load_schema())


def _md_tables(md: str) -> dict[str, list[list[str]]]:
    """Markdown tables keyed by the heading above them; cells split on unescaped pipes."""
    tables, heading, current = {}, "", None
    for line in md.splitlines():
        if line.startswith("#"):
            heading, current = line.lstrip("# ").strip(), None
        elif line.startswith("|"):
            if current is None:
                current = tables.setdefault(heading + f"#{len([k for k in tables if k.startswith(heading)])}", [])
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        else:
            current = None
    return tables


def test_markdown_numbers_are_the_json_numbers(built):
    out, _, _ = built
    doc = json.loads((out / "leaderboard.json").read_text())
    md = (out / "leaderboard.md").read_text()
    tables = _md_tables(md)
    section = next(s for s in doc["sections"] if s["reference_hash"] == f"{7:016x}")
    heading = f"Task bookworld v1 · reference {section['reference_hash']}#0"
    ranking = {row[1]: row for row in tables[heading][1:]}
    for m in section["models"]:
        row = ranking[md_escape(m["model_name"])]
        assert row[0] == rank_text(m) == (m["rank_label"] or str(m["rank"] or "–"))  # "1=" where the ranking shares a rank
        assert row[2] == md_cell(score_text(m)) != "n/a" and row[2].startswith(fmt_triple(m["score"]))
        assert row[3].startswith(fmt_triple(m["vs_next"])) if m["vs_next"] else row[3] == ""
    checked = flagged = 0
    for e in section["estimates"]:
        table = tables[f"{e['estimator']}#0"]
        col = table[0].index(md_escape(e["model_name"]))
        row = next(r for r in table[1:] if r[0] == e["condition"] and r[1] == e["feature"])
        # the number, then its flags beside it (issue 14: tables used to drop them)
        assert row[col] == md_cell(fmt_row(e)) and row[col].startswith(fmt_interval(e["point"], e["lower"], e["upper"]))
        for flag in e["flags"]:
            assert describe([flag]) in row[col]
        flagged += bool(e["flags"])
        checked += 1
    assert checked == len(section["estimates"]) > 40 and flagged > 0


def test_provenance_has_no_secret_even_if_a_manifest_smuggles_one(built, runs):
    out, _, _ = built
    manifest = json.loads(next(runs.glob("*good*/manifest.json")).read_text())
    assert manifest["model"]["options"]["api_key"] == SECRET  # the fixture did smuggle it in
    assert manifest["task"]["world"]["options"]["api_key"].startswith("sk-WORLD")
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert SECRET not in text and "sk-WORLD" not in text, path
    doc = json.loads((out / "leaderboard.json").read_text())
    good = next(r for r in doc["runs"] if r["model"] == "scripted:good")
    assert good["spec"]["options"] == {"n_ctx": 2048}
    assert good["harness_version"] == "0.1.0" and good["plugins"] and good["seed"] == 0
    assert good["counts"]["done"] == good["counts"]["planned"] > 0 and good["reference_hash"] == f"{7:016x}"
    md = (out / "leaderboard.md").read_text()
    assert "scripted:good?n\\_ctx=2048" in md or "scripted:good?n_ctx=2048" in md


def _est(model, condition, feature, point, lower, upper, debiased=None, method="bootstrap-basic", estimator="latent_shift"):
    note = json.dumps({"debiased": debiased} if debiased is not None else {})
    return {"run_id": f"r-{model}", "model": model, "model_name": model, "task": "t", "task_version": 1, "reference_hash": "h",
            "condition": condition, "estimator": estimator, "feature": feature, "point": point, "lower": lower, "upper": upper,
            "n": 10, "method": method, "note": note}


TASK = {"controls": [{"type": "none"}, {"type": "prompt"}, {"type": "filter"}], "proxy": {"feature": "z", "values": [1, 2]},
        "latents": ["h", "z"]}


def test_score_without_draws_is_the_documented_formula_with_no_interval():
    rows = [
        _est("a", "prompt:1", "h", 0.30, 0.10, 0.40, debiased=0.20),  # the plug-in, not the debiased value: cell 0.70
        _est("a", "filter:1", "h", 0.547, 0.4, 0.7, debiased=-6.55),  # a stretched null's debiased -6.55 used to score 1: 0.453
        _est("a", "none", "h", 0.9, 0.8, 1.0),  # not a score cell (no proxy condition)
        _est("a", "prompt:1", "h", 0.9, 0.8, 1.0, estimator="lift_shift"),  # not the shift estimator
        _est("b", "prompt:1", "h", 1.40, 1.20, 1.60),  # W1/IQR above 1: cell 0
        _est("b", "filter:1", "h", 0.10, -0.05, 0.20),  # 0.90
        _est("b", "filter:9", "h", 0.0, 0.0, 0.0),  # not a cell of the task: ignored
        _est("c", "none", "h", 0.1, 0.0, 0.2),  # ran the estimator, measured on no score cell: no score
        _est("d", "prompt:1", "z", 0.9, 0.8, 1.0, estimator="control_success"),  # never ran latent_shift: unranked
        _est("e", "prompt:1", "h", 0.20, 0.10, 0.30),  # 0.80; filter:1 unmeasured is left out, not counted as 0
    ]
    ranked, cells, notes = score.rank_section(pl.DataFrame(rows), TASK)
    assert cells == [("filter:1", "h"), ("prompt:1", "h")]
    by = {r.model: r for r in ranked}
    expected = {"a": (0.5765, 2), "b": (0.45, 2), "e": (0.80, 1)}
    for model, (point, measured) in expected.items():
        r = by[model]
        assert r.score.point == pytest.approx(point) and r.n_measured == measured and r.n_cells == 2, model
        # no saved draws: nothing to resample, so no interval and no rank (never the old mean of the cells' ends)
        assert r.score.lower is None and r.score.upper is None and r.flags == ("insufficient_data",) and r.rank is None
    assert [r.model for r in ranked] == ["e", "a", "b", "c", "d"] and by["c"].score is None and by["d"].score is None
    assert by["e"].vs_next.point == pytest.approx(0.80 - 0.5765) and by["e"].vs_next.lower is None
    assert by["e"].distinguishable_from_next is False
    assert any("prompt:2/h" in n and "left out" in n for n in notes)
    assert any(n.startswith("e:") and "filter:1/h" in n and "left out of its score" in n for n in notes)
    assert any(n.startswith("c:") and "measured on none" in n for n in notes)
    assert any(n.startswith("d:") and "unranked" in n for n in notes)
    assert any(n.startswith("a:") and "not ranked" in n and "not saved" in n for n in notes)
    alone, _, _ = score.rank_section(pl.DataFrame([r for r in rows if r["model"] == "a"]), TASK)
    assert alone[0].score == by["a"].score  # a score does not depend on the other models


def _rewrite_draws(run_dir: Path, keep: pl.Expr, **columns: pl.Expr) -> None:
    draws = pl.read_parquet(run_dir / "draws.parquet")
    draws.filter(keep).with_columns(**columns).write_parquet(run_dir / "draws.parquet")


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[Path, dict]:
    """Two equally good models, a bad one, one with a single context and one thin on rating-5 items."""
    root = tmp_path_factory.mktemp("scored")
    for model, shift in (("good", 0.05), ("twin", 0.05), ("bad", 0.6), ("one", 0.05), ("thin", 0.05)):
        write_run(root, model=model, shift=shift)
    _rewrite_draws(next(root.glob("*-one-*")), pl.col("context_id") == 0, exemplar_ids=pl.lit([0, 1, 2]))  # one prompt in all pools
    thin = (pl.col("pool") != "none") | (pl.col("feat_rating") != 5.0) | (pl.col("sample_index") + pl.col("context_id") == 0)
    _rewrite_draws(next(root.glob("*-thin-*")), thin)
    data = load_runs([root])
    ranked, cells, notes = score.rank_section(data.estimates, data.manifests[0].task, runs=data.manifests, draws=data.draws,
                                              reference=next(iter(data.references.values())))
    return data, {"ranked": {r.model: r for r in ranked}, "order": [r.model for r in ranked], "cells": cells, "notes": notes}


def _plug_in_score(data, model: str, cells) -> tuple[float, int]:
    """The documented point, recomputed straight from the draws: mean of 1 - min(1, d) over measured cells."""
    from harness.leaderboard import latents as lt

    info = lt.task_info(data.manifests[0].task)
    reference = next(iter(data.references.values()))
    draws = pl.concat([d for run, d in data.draws.items() if f"-{model}-" in run])
    values = []
    for condition, latent in cells:
        kind = "numeric" if latent == "length" else "categorical" if latent == "genre" else "binary"
        ref = lt.values_of(lt.reference_rows(reference, info, condition), latent, kind)
        mim = lt.values_of(lt.condition_rows(draws, info, condition), latent, kind)
        if mim.size >= 2:
            values.append(1 - min(1.0, lt.distance(kind, ref, mim)))
    return sum(values) / len(values), len(values)


def test_score_comes_from_one_joint_bootstrap(scored):
    from scipy.stats import t as t_dist

    from harness.leaderboard import jointboot as jb
    from harness.leaderboard import latents as lt

    data, out = scored
    good = out["ranked"]["scripted:good"]
    point, measured = _plug_in_score(data, "good", out["cells"])
    assert good.score.point == pytest.approx(point) and good.n_measured == measured == good.n_cells == 12
    # the interval: one bootstrap of the whole score, point +- t(C-1) sqrt(C/(C-1)) sd, C = contexts behind it
    runs = data.manifests
    sides = {m.model.model_id: jb.side_draws([m], data.draws) for m in runs}
    boot = jb.JointBootstrap(lt.task_info(runs[0].task), next(iter(data.references.values())), sides)
    reps, _ = boot.score("scripted:good", out["cells"])
    c = good.contexts  # the contexts behind the score's cells (a none-pool context with no rating 1 or 5 item is behind none)
    assert 20 <= c <= 24 and reps.n_contexts == c
    half = t_dist.ppf(0.975, c - 1) * np.sqrt(c / (c - 1)) * reps.replicates.std(ddof=1)
    assert (good.score.lower, good.score.upper) == pytest.approx((point - half, min(1.0, point + half)))
    assert 0.0 <= good.score.lower < good.score.point < good.score.upper <= 1.0


def test_unmeasured_cells_are_left_out_and_one_context_is_not_ranked(scored):
    data, out = scored
    thin, one = out["ranked"]["scripted:thin"], out["ranked"]["scripted:one"]
    point, measured = _plug_in_score(data, "thin", out["cells"])
    assert thin.n_measured == measured == 9 and thin.n_cells == 12 and thin.score.point == pytest.approx(point)
    assert any(n.startswith("scripted:thin:") and "not measured on 3 of 12" in n and "left out of its score" in n for n in out["notes"])
    assert thin.rank is not None and thin.score.lower is not None
    # one context (one prompt shown in every pool): no interval, and no rank
    assert one.contexts == 1 and one.score.lower is None and one.flags == ("too_few_contexts",) and one.rank is None
    assert "1 context" in one.no_interval and out["order"][-1] == "scripted:one"


def test_ranks_are_shared_unless_the_paired_difference_is_decided(scored):
    _, out = scored
    good, twin, bad = (out["ranked"][f"scripted:{m}"] for m in ("good", "twin", "bad"))
    assert bad.score.point < min(good.score.point, twin.score.point)
    assert bad.rank == 1 + sum(r.rank is not None and r.model != bad.model for r in out["ranked"].values())  # every ranked model beats it
    assert good.rank == twin.rank == 1 and good.rank_label == twin.rank_label == "1="
    first = out["ranked"][out["order"][0]]
    assert first.vs_next is not None and first.vs_next.lower <= 0 <= first.vs_next.upper and first.distinguishable_from_next is False


def test_interval_format_follows_the_interval_width():
    assert fmt_interval(0.123, 0.05, 0.2) == "0.12 [0.05, 0.20]"
    assert fmt_interval(0.1234, 0.118, 0.129) == "0.123 [0.118, 0.129]"
    assert fmt_interval(12.34, 10.1, 14.9) == "12.3 [10.1, 14.9]"
    assert fmt_interval(0.5, None, None) == "0.500, no interval"  # issue 14: never a bare, precise-looking point
    assert fmt_interval(0.5, float("nan"), 0.7, "1 context") == "0.500, no interval (1 context)"
    assert fmt_triple(None) == "n/a"


def test_markdown_escapes_names_that_would_break_a_table(built):
    out, _, _ = built
    md = (out / "leaderboard.md").read_text()
    assert "Good \\| model" in md and "| Good | model |" not in md


def test_runs_without_estimates_are_skipped_with_a_message(tmp_path):
    write_run(tmp_path, model="ok", shift=0.1)
    unfinished = write_run(tmp_path, model="late", shift=0.1)
    (unfinished / "estimates.parquet").unlink()
    (unfinished / "estimates.json").unlink()
    said = []
    data = load_runs([tmp_path], say=said.append)
    assert [m.model.model_id for m in data.manifests] == ["scripted:ok"]
    assert any("no estimates" in s and "late" in s for s in said)


def test_estimates_json_is_read_when_there_is_no_parquet(tmp_path):
    write_run(tmp_path, model="j", shift=0.1, fmt="json", with_draws=False)
    data = load_runs([tmp_path])
    assert data.estimates.height > 0 and data.estimates["point"].dtype == pl.Float64
    assert build_document(data)["sections"][0]["models"][0]["score"]["point"] is not None


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(UsageError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    with pytest.raises(DataError, match="no run directories"):
        load_runs([tmp_path])
    assert main(["leaderboard", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "pdf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown leaderboard format pdf") and "\n" not in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert main(["leaderboard", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "not readable JSON" in capsys.readouterr().err


def test_a_paired_score_difference_is_over_the_cells_both_sides_were_measured_on():
    from harness.leaderboard import jointboot as jb

    rng = np.random.default_rng(0)
    cells = {("prompt:1", "length"): 0.2, ("filter:1", "length"): 0.6, ("prompt:1", "genre"): 0.9}
    reps = {c: jb.Replicates(d, d + rng.normal(0, 0.05, 400), frozenset(range(6))) for c, d in cells.items()}

    def side(measured):
        values = [jb.cell_value(reps[c].point) for c in measured]
        whole = jb.Replicates(float(np.mean(values)), np.mean([jb.cell_value(reps[c].replicates) for c in measured], axis=0),
                              frozenset(range(6)))
        spread = jb.few_cluster_interval(whole.point, whole.replicates, 6, 0.0, 1.0)
        return score.SideScore(spread, tuple(measured), whole, {c: reps[c] for c in measured})

    every, two = side(list(cells)), side(list(cells)[:2])
    diff = score.paired_difference(every, two)
    # the third cell (value 0.1) drags `every`'s own score down, but the difference leaves it out: exactly 0
    assert every.spread.point < two.spread.point
    assert diff.point == pytest.approx(0.0) and diff.lower is None  # identical replicates: no variance
    assert score.paired_difference(side(list(cells)[2:]), two).reason == "no score cell was measured on both sides"
