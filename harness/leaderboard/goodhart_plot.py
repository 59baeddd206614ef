"""The Goodhart chart: control success and latent shift against KL from the pool, one curve per model.

Reads only the estimates table (rows of estimator ``goodhart_curve``, see :mod:`harness.stats.goodhart`):

- top panel: ``_success`` (the selected items' world success rate) against ``note.kl`` in nats;
- bottom panel: ``_shift`` (mean latent distance from F(H | R=1)) against the same KL, the reference
  noise floor as a grey band (2.5-97.5% of the split-half distance), each model's predicted bound
  2(1 - m_K) as a dashed line (as text when it lies above the panel), and the score's KL budget;
- the tilt sweep (with the pool at KL 0) is a line with its 95% band; ``reward@K`` (squares) and
  ``best-of-n`` (triangles) are single points with error bars; low-ESS points are hollow.

matplotlib is an optional dependency (``pip install 'mimic-harness[plots]'``); it is imported on use.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl

from harness.errors import DataError, UsageError

PANELS = (("_success", "control success  E_Q[r]"), ("_shift", "latent shift  mean D(F(H|R=1), Q(H))"))
MARKERS = {"reward": "s", "best-of-n": "^"}


def pool_of(condition: str) -> str:
    """The pool a curve condition belongs to: ``tilt@0.1/prompt:5`` -> ``prompt:5``; the pool's own row is its name."""
    if "/" in condition:
        return condition.split("/", 1)[1]
    return "none" if condition.startswith(("tilt@", "reward@", "best-of-")) else condition


def curve_points(estimates: pl.DataFrame, task: str | None = None, pool: str = "none") -> dict[str, dict[str, list[dict]]]:
    """model label -> feature -> points {kl, point, lower, upper, control, low_ess, note}, sorted by KL."""
    rows = estimates.filter(pl.col("estimator") == "goodhart_curve")
    if task is not None and "task" in rows.columns:
        rows = rows.filter(pl.col("task") == task)
    label = "model_name" if "model_name" in rows.columns else "model" if "model" in rows.columns else None
    out: dict[str, dict[str, list[dict]]] = {}
    for r in rows.iter_rows(named=True):
        if r["feature"] not in dict(PANELS) or pool_of(r["condition"]) != pool:
            continue
        note = json.loads(r["note"]) if isinstance(r["note"], str) else dict(r["note"] or {})
        if note.get("kl") is None:
            continue
        name = str(r[label]) if label and r[label] is not None else "model"
        out.setdefault(name, {}).setdefault(r["feature"], []).append({
            "kl": float(note["kl"]), "point": r["point"], "lower": r["lower"], "upper": r["upper"],
            "control": note.get("control", "tilt"), "low_ess": bool(note.get("low_ess")), "note": note,
            "condition": r["condition"]})
    for features in out.values():
        for points in features.values():
            points.sort(key=lambda p: p["kl"])
    return out


def _budget(estimates: pl.DataFrame, task: str | None) -> float | None:
    rows = estimates.filter(pl.col("estimator") == "goodhart_score")
    if task is not None and "task" in rows.columns:
        rows = rows.filter(pl.col("task") == task)
    for note in rows["note"].to_list():
        budget = json.loads(note).get("budget") if isinstance(note, str) else None
        if budget is not None:
            return float(budget)
    return None


def figure(estimates: pl.DataFrame, *, task: str | None = None, pool: str = "none", title: str | None = None) -> Any:
    """A matplotlib Figure of the Goodhart curves of every model in ``estimates`` (one task, one pool)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("drawing curves needs matplotlib", "pip install 'mimic-harness[plots]'") from None
    data = curve_points(estimates, task, pool)
    if not data:
        raise DataError(f"no goodhart_curve rows for task {task or '(any)'} and pool {pool}",
                        "run with the goodhart_curve estimator (plugin builtin-goodhart) and a tilt control with betas")
    fig = Figure(figsize=(7.5, 7.0), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    colours = [f"C{i}" for i in range(10)]
    budget = _budget(estimates, task)
    for ax, (feature, ylabel) in zip(axes, PANELS):
        top, floors = 0.0, set()
        for i, (model, features) in enumerate(sorted(data.items())):
            colour, points = colours[i % len(colours)], features.get(feature, [])
            top = max([top, *(p["upper"] for p in points if p["upper"] == p["upper"])])
            _draw_model(ax, points, colour, model)
            if feature == "_shift" and points:
                top = max(top, _draw_floor_and_bound(ax, points, colour, top, i, floors))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if budget is not None and feature == "_shift":
            ax.axvline(budget, color="0.4", linestyle=":", linewidth=1)
            ax.text(budget, 0.02, f" score budget {budget:g} nats", transform=ax.get_xaxis_transform(), fontsize=8, color="0.3")
        ax.set_ylim(bottom=0.0, top=max(top * 1.1, 0.05))
    axes[0].legend(fontsize=8, loc="lower right")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("KL from the pool (nats)")
    fig.suptitle(title or f"Goodhart curves: {task or 'task'}" + ("" if pool == "none" else f" (pool {pool})"))
    return fig


def _draw_model(ax, points: list[dict], colour: str, model: str) -> None:
    """The tilt line with its band, then reward / best-of-n points with error bars; low-ESS points hollow."""
    sweep = [p for p in points if p["control"] in ("pool", "tilt")]
    if sweep:
        kl = [p["kl"] for p in sweep]
        ax.plot(kl, [p["point"] for p in sweep], color=colour, label=f"{model}: tilt sweep", linewidth=1.5)
        ax.fill_between(kl, [p["lower"] for p in sweep], [p["upper"] for p in sweep], color=colour, alpha=0.18, linewidth=0)
    for p in points:
        marker = MARKERS.get(p["control"], "o")
        face = "none" if p["low_ess"] else colour
        if p["control"] in MARKERS:
            ax.errorbar([p["kl"]], [p["point"]], yerr=[[p["point"] - p["lower"]], [p["upper"] - p["point"]]], fmt=marker,
                        color=colour, mfc=face, capsize=3, markersize=6)
            ax.annotate(p["condition"].split("/")[0], (p["kl"], p["point"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=7, color=colour)
        else:
            ax.plot([p["kl"]], [p["point"]], marker=marker, color=colour, mfc=face, markersize=4, linestyle="none")


def _draw_floor_and_bound(ax, points: list[dict], colour: str, top: float, index: int, floors: set) -> float:
    """The reference noise-floor band (grey, once per reference) and the model's bound 2(1 - m_K); returns the new top."""
    note = points[0]["note"]
    lo, hi = note.get("noise_floor_lower"), note.get("noise_floor_upper")
    if lo is not None and hi is not None:
        if (round(lo, 6), round(hi, 6)) not in floors:  # runs on one reference share one floor: draw it once
            floors.add((round(lo, 6), round(hi, 6)))
            ax.axhspan(lo, hi, color="0.5", alpha=0.15, linewidth=0, label="reference noise floor" if len(floors) == 1 else None)
        top = max(top, hi)
    bound = note.get("bound")
    if bound is not None:
        if bound <= max(top * 1.25, 0.05):
            ax.axhline(bound, color=colour, linestyle="--", linewidth=1, label="predicted bound 2(1-m_K)" if index == 0 else None)
            top = max(top, bound)
        else:
            ax.text(0.99, 0.97 - 0.06 * index, f"2(1-m_K) = {bound:.2f}, above the axis", transform=ax.transAxes, ha="right", va="top",
                    fontsize=8, color=colour)
    return top


def to_svg(fig: Any) -> str:
    """The figure as SVG text (no timestamp, fixed ids: the same data gives the same text)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "mimic-harness", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def goodhart_chart(estimates: pl.DataFrame, out: str | Path | None = None, *, task: str | None = None,
                   pool: str = "none", title: str | None = None) -> str:
    """Draw the chart; return its SVG text and, with ``out``, also write it (``.svg``, or ``.png`` at 150 dpi)."""
    fig = figure(estimates, task=task, pool=pool, title=title)
    svg = to_svg(fig)
    if out is not None:
        path = Path(out)
        if path.suffix.lower() == ".svg":
            path.write_text(svg, encoding="utf-8")
        elif path.suffix.lower() == ".png":
            fig.savefig(path, format="png", dpi=150, metadata={"Software": None})
        else:
            raise UsageError(f"cannot write a chart to {path.name}", "name the output FILE.svg or FILE.png")
    return svg
