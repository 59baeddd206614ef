"""The numbers behind the charts, computed once and stored in the leaderboard document.

Latent distributions come from the draws and reference tables (when the runs saved them); the
forcing-set curve, the bound and the transfer gap come from the estimates table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from harness.leaderboard import latents as lt
from harness.leaderboard.fmt import decimals_for, fmt_number, withheld_reason
from harness.leaderboard.score import FORCING_ESTIMATORS, TRANSFER_ESTIMATORS, norm_name
from harness.records import EstimateNote, Manifest
from harness.stats.common import feature_kind

# The estimate charts read pooled rows (``harness.leaderboard.document.pooled_rows``): dicts whose
# ``note`` is the parsed :class:`EstimateNote`.
Rows = Sequence[Mapping[str, Any]]


def _model_draws(runs: Sequence[Manifest], draws: Mapping[str, pl.DataFrame], order: Sequence[str] = ()) -> dict[str, pl.DataFrame]:
    """model id -> its draws over all its runs in the section (seed kept for clustering), in ``order``; a chat
    answer with no parsable item (``item_parsed`` false) has no item to chart and is left out."""
    out: dict[str, list[pl.DataFrame]] = {}
    for m in sorted(runs, key=lambda m: (order.index(m.model.model_id) if m.model.model_id in order else len(order), m.run_id)):
        frame = draws.get(m.run_id)
        if frame is not None and "item_parsed" in frame.columns:
            frame = frame.filter(pl.col("item_parsed").fill_null(True))
        if frame is not None and "pool" in frame.columns:
            out.setdefault(m.model.model_id, []).append(frame.with_columns(pl.lit(int(m.seed or 0)).alias("_seed")))
    return {k: pl.concat(v, how="diagonal_relaxed") for k, v in out.items()}


def _bin_labels(kind: str, bins: list[Any]) -> list[str]:
    if kind != "numeric":
        return [str(b) for b in bins]
    d = decimals_for(bins[0], bins[1])
    return [f"{fmt_number(lo, d)}–{fmt_number(hi, d)}" for lo, hi in zip(bins[:-1], bins[1:])]


def latent_charts(runs: Sequence[Manifest], draws: Mapping[str, pl.DataFrame], reference: pl.DataFrame | None,
                  names: Mapping[str, str]) -> list[dict[str, Any]]:
    """One chart per (latent, condition): the reference distribution and each model's."""
    if reference is None or not runs:
        return []
    info = lt.task_info(runs[0].task)
    per_model = _model_draws(runs, draws, list(names))
    if not per_model:
        return []
    charts = []
    for latent in info.latents:
        column = f"feat_{latent}"
        if column not in reference.columns:
            continue
        kind = feature_kind(reference[column])
        for condition in lt.conditions_for(info):
            ref_rows = lt.reference_rows(reference, info, condition)
            if ref_rows is None:
                continue
            ref = lt.values_of(ref_rows, latent, kind)
            models = {}
            for model, frame in per_model.items():
                rows = lt.condition_rows(frame, info, condition)
                values = lt.values_of(rows, latent, kind) if rows is not None and column in rows.columns else None
                if values is not None and values.size:  # a model whose items all lack the feature has no distribution
                    models[model] = values
            if not models or ref.size == 0:
                continue
            bins = lt.bins_for(kind, ref, list(models.values()))
            series = [{"name": "reference", "model": None, "n": int(ref.size), "shares": lt.distribution(kind, ref, bins)}]
            series += [{"name": names.get(m, m), "model": m, "n": int(v.size), "shares": lt.distribution(kind, v, bins)} for m, v in models.items()]
            charts.append({"latent": latent, "condition": condition, "kind": kind, "bins": _bin_labels(kind, bins), "series": series})
    return charts


def _k_of(row: Mapping[str, Any]) -> int | None:
    """K of a forcing-mass row: its ``K=<k>`` feature (or note ``K``); None for the bound rows."""
    match = re.fullmatch(r"K=(\d+)", str(row["feature"]))
    if match:
        return int(match.group(1))
    k = row["note"].extra.get("K")
    return int(k) if isinstance(k, int) and not isinstance(k, bool) and row["feature"] != "bound" else None


def forcing_curves(pooled: Rows, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Forcing-set mass m_K against K from the ``forcing_mass`` estimates: the reference data (rows of
    every run averaged) and each model's conditions, except those that select on the world draws
    themselves (flagged ``selection_uses_world_draws``: their m_K is inflated by construction)."""
    series: dict[tuple[str | None, str], dict[int, list[dict[str, Any]]]] = {}
    for row in pooled:
        k = _k_of(row) if norm_name(row["estimator"]) in FORCING_ESTIMATORS else None
        if k is None or row["note"].extra.get("selection_uses_world_draws") or row["point"] is None:
            continue
        owner = None if row["condition"] == "reference" else row["model"]
        series.setdefault((owner, row["condition"]), {}).setdefault(k, []).append(row)
    out = []
    rank = {m: i for i, m in enumerate(names)}  # names come in ranking order
    for (model, condition), by_k in sorted(series.items(), key=lambda kv: (kv[0][0] is not None, rank.get(kv[0][0], len(rank)), kv[0][1])):
        points = []
        for k, rows in sorted(by_k.items()):
            ends = [r[e] for r in rows for e in ("lower", "upper")]
            points.append({"k": k, "point": sum(r["point"] for r in rows) / len(rows),
                           "lower": None if None in ends else sum(r["lower"] for r in rows) / len(rows),
                           "upper": None if None in ends else sum(r["upper"] for r in rows) / len(rows),
                           "n": int(sum(r["n"] or 0 for r in rows))})
        name = "reference" if model is None else f"{names.get(model, model)} · {condition}"
        out.append({"name": name, "model": model, "condition": condition, "points": points})
    return out


def bound_points(pooled: Rows) -> list[dict[str, Any]]:
    """The essay's bound 2(1 - m) beside the measured reward@1 vs reward@K latent distance: one point
    per (model, condition, latent) from the ``forcing_mass`` rows whose feature is ``bound``."""
    out = []
    for row in pooled:
        note = row["note"].extra
        measured = note.get("measured_distance")
        if row["feature"] != "bound" or not isinstance(measured, dict) or row["point"] is None:
            continue
        kinds = note.get("distance_kind") if isinstance(note.get("distance_kind"), dict) else {}
        # as the estimator's bound_exceeded: above the bound's upper end, not its point (noise in m alone
        # put exchangeable worlds above the point in up to 18% of runs); no upper end, no check
        upper = row["upper"]
        for latent, value in sorted(measured.items()):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append({"model": row["model"], "model_name": row["model_name"], "condition": row["condition"], "feature": latent,
                            "bound": {"point": row["point"], "lower": row["lower"], "upper": row["upper"]},
                            "measured": float(value), "distance": str(kinds.get(latent, "")), "above_bound": upper is not None and bool(value > upper)})
    return out


def transfer_points(pooled: Rows) -> list[dict[str, Any]]:
    """Transfer gap (TSTS - TRTS) per model and latent, with its interval."""
    return [{"model": r["model"], "model_name": r["model_name"], "condition": r["condition"], "feature": r["feature"],
             "gap": {"point": r["point"], "lower": r["lower"], "upper": r["upper"]}} for r in pooled if norm_name(r["estimator"]) in TRANSFER_ESTIMATORS]


def _num(value: Any) -> float | None:
    """A finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _interval(row: Mapping[str, Any] | None) -> dict[str, float | None] | None:
    if row is None or _num(row["point"]) is None:
        return None
    return {"point": _num(row["point"]), "lower": _num(row["lower"]), "upper": _num(row["upper"])}


def _curve_value(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A curve point's interval, with ``reason`` (why there is none, or None) and its ``flags``."""
    value = _interval(row)
    if value is not None:
        note: EstimateNote = row["note"]
        value["flags"] = note.all_flags(row.get("method"))
        value["reason"] = (note.no_interval or withheld_reason(None, value["flags"])) if value["lower"] is None or value["upper"] is None else None
    return value


def _goodhart_control(condition: str) -> str:
    base = condition.split("/", 1)[0]
    for prefix, control in (("tilt@", "tilt"), ("reward@", "reward"), ("best-of-", "best-of-n")):
        if base.startswith(prefix):
            return control
    return "none"


def _goodhart_pool(condition: str) -> str:
    if "/" in condition:
        return condition.split("/", 1)[1]
    return "none" if _goodhart_control(condition) != "none" else condition


def goodhart_curves(pooled: Rows, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Goodhart curve per (model, pool) from the ``goodhart_curve`` rows: control success (``_success``)
    and mean latent shift (``_shift``) against the KL from the pool (``_kl`` point, else note ``kl``),
    with the reference noise floor (``_shift`` note ``noise_floor``) and the predicted bound (note ``bound``)."""
    cells: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    model_names: dict[str, str] = {}
    for row in pooled:
        if norm_name(row["estimator"]) != "goodhart_curve" or row["feature"] not in ("_kl", "_success", "_shift"):
            continue
        cells.setdefault((row["model"], row["condition"]), {})[row["feature"]] = row
        model_names[row["model"]] = row["model_name"]
    curves: dict[tuple[str, str], dict[str, Any]] = {}
    for (model, condition), rows in cells.items():
        notes: dict[str, EstimateNote] = {f: r["note"] for f, r in rows.items()}
        kl = _num(rows["_kl"]["point"]) if "_kl" in rows else None
        if kl is None:
            kl = next((n.number("kl") for n in notes.values() if n.number("kl") is not None), None)
        success, shift = _curve_value(rows.get("_success")), _curve_value(rows.get("_shift"))
        if kl is None or (success is None and shift is None):
            continue
        pool = _goodhart_pool(condition)
        curve = curves.setdefault((model, pool), {"model": model, "model_name": names.get(model, model_names[model]), "pool": pool,
                                                   "points": [], "noise_floor": None, "bound": None})
        curve["points"].append({"condition": condition, "control": _goodhart_control(condition), "kl": kl, "success": success,
                                "shift": shift, "low_ess": any(bool(n.extra.get("low_ess")) for n in notes.values())})
        floor = notes.get("_shift", EstimateNote())
        if curve["noise_floor"] is None and floor.number("noise_floor") is not None:
            curve["noise_floor"] = {"point": floor.number("noise_floor"), "lower": floor.number("noise_floor_lower"),
                                    "upper": floor.number("noise_floor_upper")}
        if curve["bound"] is None:
            curve["bound"] = next((n.number("bound") for n in notes.values() if n.number("bound") is not None), None)
    rank = {m: i for i, m in enumerate(names)}
    out = []
    for (model, pool), curve in sorted(curves.items(), key=lambda kv: (kv[0][1] != "none", kv[0][1], rank.get(kv[0][0], len(rank)), kv[0][0])):
        curve["points"].sort(key=lambda p: (p["kl"], p["condition"]))
        out.append(curve)
    return out


def sync_curves(pooled: Rows, names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Synchronisation curve per model from the ``sync_marginal`` rows: distance to the reference against
    the number of exemplars n (condition ``sync@<n>``, note ``n_exemplars``), one series per feature,
    each point with its noise floor (note ``noise_floor``)."""
    per_model: dict[str, dict[str, list[dict[str, Any]]]] = {}
    model_names: dict[str, str] = {}
    for row in pooled:
        if norm_name(row["estimator"]) != "sync_marginal" or row["feature"] is None:
            continue
        note = row["note"]
        match = re.fullmatch(r"sync@(\d+)", str(row["condition"]))
        n = note.extra.get("n_exemplars")
        n = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) else int(match.group(1)) if match else None
        value = _curve_value(row)
        if n is None or value is None:
            continue
        per_model.setdefault(row["model"], {}).setdefault(str(row["feature"]), []).append({"n": n, **value, "noise_floor": note.number("noise_floor")})
        model_names[row["model"]] = row["model_name"]
    rank = {m: i for i, m in enumerate(names)}
    out = []
    for model in sorted(per_model, key=lambda m: (rank.get(m, len(rank)), m)):
        features = [{"feature": f, "points": sorted(points, key=lambda p: p["n"])} for f, points in per_model[model].items()]
        out.append({"model": model, "model_name": names.get(model, model_names[model]), "features": features})
    return out
