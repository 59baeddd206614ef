"""``leaderboard.md``: GitHub-flavoured tables rendered from the leaderboard document.

Every number carries its flags beside it and a withheld interval reads ``no interval (reason)``
(:func:`harness.leaderboard.fmt.fmt_row`); the score column shows the score's own flags and how
many of the task's cells the model was measured on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.chat.renderings import COMPLETION
from harness.leaderboard.fmt import flag_legend, fmt_row, fmt_triple, md_cell, md_escape
from harness.leaderboard.paired_markdown import comparison_flags, comparison_lines
from harness.leaderboard.paired_prose import decision_lines
from harness.leaderboard.rendering import shown_names, rendering_of


def labels(models: list[dict[str, Any]]) -> dict[str, str]:
    """Display label per model id: its name, with its rendering where some model of the list was not
    rendered as a completion (``SmolLM2 (chat)``); a label two models share gets the id appended."""
    names = shown_names(models)
    shown = list(names.values())
    return {m: name if shown.count(name) == 1 else f"{name} ({m})" for m, name in names.items()}


def verdict(vs_next: dict[str, Any] | None) -> str:
    """The ranking note beside a difference with the next model."""
    if not vs_next:
        return ""
    text = fmt_triple(vs_next)
    if vs_next.get("distinguishable"):
        return text + " (distinguishable)"
    if vs_next.get("lower") is None or vs_next.get("upper") is None:
        return text + " (not distinguishable: no interval to decide on)"
    return text + " (not distinguishable: interval contains 0)"


def rank_text(model: dict[str, Any]) -> str:
    """The rank as shown: the label (``1=`` for a shared rank) when the ranking gives one."""
    label = model.get("rank_label")
    return str(label) if label else str(model["rank"] or "–")


def score_text(model: dict[str, Any]) -> str:
    """A model's score with its interval (or ``no interval (reason)``) and the score's flags."""
    if not model.get("score"):
        return "n/a"
    return fmt_row({**model["score"], "flags": model.get("flags") or [], "no_interval": model.get("no_interval")})


def cells_text(model: dict[str, Any]) -> str:
    """``5 of 6 measured`` when the ranking says how many cells were measured, else the cell count."""
    measured = model.get("n_measured")
    return f"{measured} of {model['n_cells']} measured" if measured is not None else str(model["n_cells"])


def section_flags(section: dict[str, Any]) -> list[str]:
    """Every flag shown in a section (its estimates' and its scores')."""
    found = {f for e in section["estimates"] for f in e.get("flags") or []}
    return sorted(found | {f for m in section["models"] for f in m.get("flags") or []} | comparison_flags(section))


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |", *("| " + " | ".join(r) + " |" for r in rows)]


def _spec(spec: dict[str, Any]) -> str:
    options = spec.get("options") or {}
    text = f"{spec.get('backend')}:{spec.get('model')}"
    return text + ("?" + "&".join(f"{k}={v}" for k, v in sorted(options.items())) if options else "")


def provenance_rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the provenance table (plain text; callers escape for their format)."""
    header = ["Run", "Model", "Spec", "Status", "Harness", "Plugins", "Task", "Reference", "Seed", "Samples done/planned (cached)", "Plan C×S, k"]
    rows = []
    for r in runs:
        plan, counts = r.get("plan") or {}, r.get("counts") or {}
        plugins = ", ".join(f"{k} {v}" for k, v in sorted((r.get("plugins") or {}).items()))
        rows.append([
            str(r["run_id"]), str(r.get("model_name")), _spec(r.get("spec") or {}), str(r.get("status")), str(r.get("harness_version")),
            plugins, f"{r.get('task')} v{r.get('task_version')}", str(r.get("reference_hash")), str(r.get("seed")),
            f"{counts.get('done', 'n/a')}/{counts.get('planned', 'n/a')} ({counts.get('cached', 0)})",
            f"{plan.get('contexts', '?')}×{plan.get('samples_per_context', '?')}, k={plan.get('n_exemplars', '?')}"
            + ("" if rendering_of(r) == COMPLETION else f", {rendering_of(r)}"),
        ])
    return header, rows


def estimate_matrix(section: dict[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per estimator: rows (condition, feature), one column per model in rank order, formatted cells."""
    label = labels(section["models"])
    order = [m["model"] for m in section["models"]]
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    by_est: dict[str, dict[tuple[str, str], dict[str, dict[str, Any]]]] = {}
    for e in section["estimates"]:
        by_est.setdefault(e["estimator"], {}).setdefault((e["condition"], e["feature"]), {})[e["model"]] = e
    for est, cells in by_est.items():
        models = [m for m in order if any(m in c for c in cells.values())]
        rows = [[md_escape(cond), md_escape(feat), *(md_cell(fmt_row(cells[(cond, feat)][m])) if m in cells[(cond, feat)] else "—" for m in models)]
                for cond, feat in cells]
        out[est] = (["Condition", "Feature", *(label[m] for m in models)], rows)
    return out


def render(doc: dict[str, Any]) -> str:
    """The whole Markdown page."""
    lines = ["# Mimic leaderboard", ""]
    n_models = len(doc["models"])
    lines += [f"Generated by mimic-harness {doc['generator']['version']} from {len(doc['runs'])} run(s), {n_models} model(s), "
              f"{len(doc['sections'])} section(s) (one per task, task version and reference data hash).", ""]
    for message in doc["messages"]:
        lines += [f"> **Note:** {md_escape(message)}", ""]
    lines += ["## Synchronisation score", "", md_escape(str(doc["score"]["definition"]).rstrip(". ")) + ". Higher is better; 1 = the latents move exactly as "
              "the reference data predicts. Every number is a point estimate with its 95% interval, or \"no interval (reason)\" "
              "where no calibrated interval exists at that design; flags beside a number qualify it. \"Difference with next\" is a "
              "model's score minus the next one's, with its interval; `mimic compare A B` compares two models row by row.", ""]
    for section in doc["sections"]:
        label = labels(section["models"])
        lines += [f"## Task {md_escape(section['task'])} v{section['task_version']} · reference {md_escape(section['reference_hash'])}", ""]
        lines += [f"Score over {len(section['score_cells'])} (condition, latent) cell(s): "
                  + (", ".join(md_escape(f"{c['condition']}/{c['feature']}") for c in section["score_cells"]) or "none") + ".", ""]
        for note in section["notes"]:
            lines += [f"- {md_escape(note)}"]
        if section["notes"]:
            lines.append("")
        rows = [[md_escape(rank_text(m)), md_escape(label[m["model"]]), md_cell(score_text(m)), md_cell(verdict(m["vs_next"])),
                 md_cell(cells_text(m)), str(len(m["runs"]))] for m in section["models"]]
        lines += _table(["Rank", "Model", "Synchronisation score", "Difference with next", "Cells", "Runs"], rows, ["---:", "---", "---", "---", "---:", "---:"])
        lines.append("")
        lines += comparison_lines(section, label)
        decided = decision_lines(section, label)
        lines += ["### Which comparisons the data decided", "", *decided] if decided else []
        legend = flag_legend(section_flags(section))
        if legend:
            lines += ["Flags in this section: " + "; ".join(md_cell(item) for item in legend) + ".", ""]
        for est, (header, rows) in estimate_matrix(section).items():
            lines += [f"### {md_escape(est)}", ""]
            lines += _table([md_escape(h) for h in header], rows)
            lines.append("")
        runs = [r for r in doc["runs"] if r["run_id"] in section["runs"]]
        header, rows = provenance_rows(runs)
        lines += ["### Provenance", ""]
        lines += _table(header, [[md_escape(c) for c in r] for r in rows])
        lines.append("")
    return "\n".join(lines)


class MarkdownWriter:
    """Writes ``leaderboard.md``."""

    def __init__(self, options: dict[str, Any] | None = None):
        self.filename = str((options or {}).get("filename", "leaderboard.md"))

    def write(self, data, out_dir: Path) -> list[Path]:
        """Render the document of ``data`` into ``out_dir``."""
        from harness.leaderboard.document import document_of

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / self.filename
        path.write_text(render(document_of(data)), encoding="utf-8")
        return [path]
