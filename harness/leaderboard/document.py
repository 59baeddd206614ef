"""The leaderboard document: one JSON-ready dict (schema ``schema.json``, version 1) built from
:class:`LeaderboardData`. Every writer renders this same document, so the Markdown, the JSON and
the site cannot disagree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from harness import __version__
from harness.leaderboard import chartdata, paired_ranks, score
from harness.leaderboard.fmt import slug
from harness.leaderboard.rendering import shown_names, differing_notes, renderings_of, run_rendering
from harness.leaderboard.runs import scrubbed
from harness.protocols import LeaderboardData
from harness.records import EstimateNote, Manifest, json_safe
from harness.stats.flags import flags_of

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema.json")
EXAMPLES_PER_POOL = 3
_SECTION_KEY = ("task", "task_version", "reference_hash")


def load_schema() -> dict[str, Any]:
    """The JSON Schema of ``leaderboard.json``."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _pool_note(notes: list[dict[str, Any]]) -> dict[str, Any]:
    """Notes of one cell over several runs: numbers averaged, other values kept when all runs agree;
    flags are the union (a flag of any run qualifies the pooled row) and a withheld interval's reason
    is kept from the first run that gives one."""
    if len(notes) == 1:
        return notes[0]
    out = {}
    for key in set.intersection(*(set(n) for n in notes)):
        values = [n[key] for n in notes]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = sum(values) / len(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
    flags = sorted({f for n in notes for f in flags_of(n)})
    if flags:
        out["flags"] = flags
    reason = next((n["no_interval"] for n in notes if n.get("no_interval")), None)
    if reason:
        out["no_interval"] = reason
    return out


def _pooled_end(column: str) -> pl.Expr:
    """Mean of an interval end over runs; unknown (null) when any run withheld its interval."""
    values = pl.col(column).fill_nan(None)
    return pl.when(values.is_null().any()).then(pl.lit(None, dtype=pl.Float64)).otherwise(values.mean()).alias(column)


def pooled_estimates(estimates: pl.DataFrame, notes: Mapping[Any, EstimateNote]) -> pl.DataFrame:
    """One row per (model, estimator, condition, feature): runs of a model pooled by averaging
    points and interval ends (conservative whatever the runs' correlation: sd of a mean is at most
    the mean of the sds);
    a row one of whose runs has no interval has none. ``notes`` are the rows' parsed notes
    (``LeaderboardData.notes``); the pooled ``note`` is JSON text, as in a run's estimates."""
    keys = ["model", "estimator", "condition", "feature"]
    grouped = estimates.group_by(keys, maintain_order=True).agg(
        pl.col("model_name").first(), pl.col("point").fill_nan(None).mean(), _pooled_end("lower"), _pooled_end("upper"),
        pl.col("n").sum(), pl.col("method").first(), pl.col("note"), pl.col("run_id").n_unique().alias("runs"),
    )
    pooled = [json.dumps(_pool_note([notes[n].to_dict() for n in ns]), sort_keys=True) for ns in grouped["note"].to_list()]
    return grouped.with_columns(pl.Series("note", pooled, dtype=pl.Utf8))


def pooled_rows(pooled: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of a :func:`pooled_estimates` table, each ``note`` parsed once (an :class:`EstimateNote`)."""
    return [row | {"note": EstimateNote.parse(row["note"])} for row in pooled.iter_rows(named=True)]


def provenance(manifest: Manifest) -> dict[str, Any]:
    """A run's provenance row: public model spec, versions, task, reference, counts, seeds."""
    m = scrubbed(manifest)
    return {
        "run_id": str(m.run_id), "status": m.status, "model": m.model.model_id, "model_name": m.model.name, "spec": m.model.spec(),
        "harness_version": m.harness_version, "plugins": m.plugins or {}, "components": m.components or [],
        "task": m.task_name, "task_version": m.task_version, "reference_hash": m.reference_hash,
        "seed": m.seed, "plan": m.plan or {}, "counts": m.counts or {}, "usage": m.usage or {},
        "created": m.created, "finished": m.finished, "rendering": run_rendering(m),
    }


def _examples(runs: list[Manifest], draws: Mapping[str, pl.DataFrame]) -> list[dict[str, Any]]:
    """A few generated items per pool, in draw-key order (the first contexts' first samples); a chat
    answer with no parsable item (``item_parsed`` false, no text) is no item and never an example."""
    out, per_pool = [], {}
    for m in runs:
        frame = draws.get(m.run_id)
        if frame is None or not {"pool", "text"} <= set(frame.columns):
            continue
        if "item_parsed" in frame.columns:
            frame = frame.filter(pl.col("item_parsed").fill_null(True))
        order = [c for c in ("pool", "context_id", "sample_index") if c in frame.columns]
        for (pool,), rows in frame.sort(order).group_by("pool", maintain_order=True):
            room = EXAMPLES_PER_POOL - per_pool.get(pool, 0)  # across the model's runs, not per run
            for text in rows["text"].drop_nulls().head(max(0, room)).to_list():
                out.append({"run_id": m.run_id, "pool": pool, "text": text})
                per_pool[pool] = per_pool.get(pool, 0) + 1
    return out


def _separation_messages(keys: list[tuple[Any, Any, Any]]) -> list[str]:
    """Why runs of one task appear in several sections."""
    messages = []
    for task in sorted({k[0] for k in keys}, key=str):
        versions = sorted({(k[1], k[2]) for k in keys if k[0] == task}, key=str)
        if len(versions) > 1:
            shown = "; ".join(f"v{v} reference {h}" for v, h in versions)
            messages.append(
                f"task {task}: runs used {len(versions)} different task versions or reference data sets ({shown}); "
                "they are ranked in separate sections and never together, because scores measured against different "
                "reference data are not comparable"
            )
    return messages


def _estimate_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """One pooled estimate (a :func:`pooled_rows` row) as the document holds it, with its flags read once for every writer."""
    note = row["note"]
    entry = {k: row[k] for k in ("model", "model_name", "estimator", "condition", "feature", "point", "lower", "upper", "n", "method", "runs")}
    return entry | {"note": note.to_dict(), "flags": note.all_flags(row["method"])}


def _text_list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple, set, frozenset)) else []


def ranked_extras(r: Any) -> dict[str, Any]:
    """The optional fields of a ranking line (rank label such as ``1=``, the score's flags, cells
    measured, why the score has no interval), read defensively so older and newer ``Ranked`` both work."""
    flags = sorted({*_text_list(getattr(r, "flags", None)), *_text_list(getattr(r.score, "flags", None))})
    n_measured = getattr(r, "n_measured", None)
    label = getattr(r, "rank_label", None)
    reason = getattr(r, "no_interval", None) or getattr(r.score, "no_interval", None)
    return {"rank_label": None if label is None else str(label), "flags": flags,
            "n_measured": n_measured if isinstance(n_measured, int) and not isinstance(n_measured, bool) else None,
            "no_interval": None if not reason else str(reason)}


def _section(key: tuple[Any, Any, Any], est: pl.DataFrame, runs: list[Manifest], data: LeaderboardData) -> dict[str, Any]:
    task, version, ref_hash = key
    reference = data.references.get(str(ref_hash)) if ref_hash is not None else None
    ranked, shared, notes = score.rank_section(est, runs[0].task if runs else None, runs=runs, draws=data.draws, reference=reference)
    order = {r.model: i for i, r in enumerate(ranked)}
    pooled = pooled_rows(pooled_estimates(est, data.notes).with_columns(pl.col("model").replace_strict(order, default=len(order)).alias("_order"))
                         .sort("estimator", "condition", "feature", "_order"))
    models = []
    for r in ranked:
        model_runs = [m for m in runs if m.model.model_id == r.model]
        models.append({
            "id": slug(r.model, "model-"), "rank": r.rank, "model": r.model, "model_name": r.model_name, "runs": list(r.runs),
            "score": r.score.as_dict() if r.score else None, "n_cells": r.n_cells,
            "vs_next": ({**r.vs_next.as_dict(), "distinguishable": r.distinguishable_from_next} if r.vs_next else None),
            "examples": _examples(model_runs, data.draws), "rendering": renderings_of(model_runs), **ranked_extras(r),
        })
    names = shown_names(models)  # in ranking order
    notes = [*notes, *differing_notes(models)]
    estimates = [_estimate_entry(row) for row in pooled]
    return {
        "id": slug(f"{task}|{version}|{ref_hash}", "task-"), "task": task, "task_version": version, "reference_hash": ref_hash,
        "score_cells": [{"condition": c, "feature": f} for c, f in shared], "notes": notes, "models": models,
        "estimates": estimates,
        "comparisons": paired_ranks.section_comparisons(models, estimates, runs, data.draws, reference),
        "charts": {
            "latents": chartdata.latent_charts(runs, data.draws, reference, names),
            "forcing": chartdata.forcing_curves(pooled, names),
            "bound": chartdata.bound_points(pooled),
            "transfer": chartdata.transfer_points(pooled),
            "goodhart": chartdata.goodhart_curves(pooled, names),
            "sync": chartdata.sync_curves(pooled, names),
        },
        "runs": [m.run_id for m in runs],
    }


def with_document(data: LeaderboardData) -> LeaderboardData:
    """``data`` with its leaderboard document built (once; kept when already there)."""
    return data if data.document is not None else replace(data, document=build_document(data))


def document_of(data: LeaderboardData) -> Mapping[str, Any]:
    """The document a writer renders: the one handed over with ``data``, else built here."""
    return data.document if data.document is not None else build_document(data)


def build_document(data: LeaderboardData) -> dict[str, Any]:
    """Merge, group by (task, task version, reference hash), rank, and collect provenance and charts."""
    manifests = {str(m.run_id): scrubbed(m) for m in data.manifests}
    est = data.estimates
    keys = [tuple(k) for k in est.select(_SECTION_KEY).unique().sort(_SECTION_KEY, nulls_last=True).iter_rows()]
    sections = []
    for key in keys:
        cond = [pl.col(c).is_null() if v is None else pl.col(c) == v for c, v in zip(_SECTION_KEY, key)]
        part = est.filter(*cond)
        run_ids = [r for r in part["run_id"].unique().sort().to_list() if r in manifests]
        for r in run_ids:  # a manifest without a model id still groups by the estimates' model id
            if manifests[r].model.model_id is None:
                model_id = part.filter(pl.col("run_id") == r)["model"][0]
                manifests[r] = replace(manifests[r], model=replace(manifests[r].model, model_id=model_id))
        sections.append(_section(key, part, [manifests[r] for r in run_ids], data))
    models: dict[str, dict[str, Any]] = {}
    for section in sections:
        for m in section["models"]:
            entry = models.setdefault(m["model"], {"id": m["id"], "model": m["model"], "model_name": m["model_name"], "sections": [], "runs": []})
            entry["sections"].append(section["id"])
            entry["runs"].extend(m["runs"])
            entry["rendering"] = renderings_of(manifests[r] for r in entry["runs"])
    return json_safe({
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "mimic-harness", "version": __version__},
        "score": {"name": "synchronisation score", "definition": score.SCORE_DEFINITION, "range": [0, 1], "higher_is_better": True,
                  "conditions": [f"{p}<v>" for p in score.SCORED_PREFIXES], "estimators": sorted(score.SHIFT_ESTIMATORS)},
        "messages": _separation_messages(keys),
        "sections": sections,
        "models": sorted(models.values(), key=lambda m: str(m["model_name"])),
        "runs": [provenance(manifests[r]) for r in sorted(manifests)],
    })
