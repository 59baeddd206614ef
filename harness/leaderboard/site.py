"""The static site: ``index.html``, one page per task section and per model, ``assets/``.

Opens from disk (file://): no server, no network, no inline script. Pages carry a strict
Content-Security-Policy; Jinja autoescaping renders every user-supplied string (model names,
task names, outputs, notes) as text; charts are inline SVG built in :mod:`harness.leaderboard.svg`.
Every number shows its flags as tags in the same cell, and a withheld interval reads
``no interval (reason)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jinja2

from harness.leaderboard import svg
from harness.leaderboard.document import document_of
from harness.leaderboard.fmt import FLAG_MEANINGS, flag_legend, fmt_interval, fmt_number, fmt_triple, has_interval, withheld_reason
from harness.leaderboard.markdown import cells_text, labels, provenance_rows, rank_text, section_flags, verdict
from harness.leaderboard.rendering import shown_names
from harness.stats.flags import describe

HERE = Path(__file__).parent
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:"
# Note fields worth a column of their own, when an estimator reports them.
NOTE_KEYS = ("debiased", "noise_floor", "p_no_shift", "bound", "max_measured", "trts", "tsts", "similarity", "deff", "ess", "kl",
             "unparsed")


def environment() -> jinja2.Environment:
    """Jinja environment over the package's templates, autoescaping everything."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(iv=fmt_triple, num=fmt_number, verdict=verdict, rank=rank_text, cells=cells_text, score=score_value,
                       flag_words=lambda f: describe([f]), flag_meaning=lambda f: FLAG_MEANINGS.get(f, describe([f])))
    env.globals.update(csp=CSP)
    return env


def value_text(entry: dict[str, Any], flags: list[str], reason: str | None = None) -> str:
    """The number of a cell without its flags (they are tags beside it): interval or ``no interval (reason)``."""
    lower, upper = entry.get("lower"), entry.get("upper")
    if not has_interval(lower, upper):
        reason = reason or withheld_reason(entry.get("note"), flags)
    return fmt_interval(entry.get("point"), lower, upper, None if has_interval(lower, upper) else reason)


def score_value(model: dict[str, Any]) -> str:
    """A ranked model's score as shown in the ranking (its flags are tags beside it)."""
    if not model.get("score"):
        return "n/a"
    return value_text(model["score"], model.get("flags") or [], model.get("no_interval"))


def _estimate_rows(estimates: list[dict[str, Any]], label: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of the sortable estimates table: display text plus the raw value each column sorts by."""
    rows = []
    for e in estimates:
        note = e.get("note") or {}
        extras = {k: note.get(k) for k in NOTE_KEYS if isinstance(note.get(k), (int, float)) and not isinstance(note.get(k), bool)}
        flags = list(e.get("flags") or [])
        rows.append({**e, "label": label.get(e["model"], e["model_name"]), "value": value_text(e, flags), "extras": extras,
                     "flags": flags, "withheld": not has_interval(e.get("lower"), e.get("upper")),
                     "tags": [k for k, v in note.items() if v is True and k not in flags]})  # other yes/no notes, e.g. in_floor
    return rows


def _estimate_groups(estimates: list[dict[str, Any]], label: dict[str, str]) -> list[dict[str, Any]]:
    """One sortable table per estimator, with a column for each note field that estimator reports."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _estimate_rows(estimates, label):
        groups.setdefault(row["estimator"], []).append(row)
    return [{"estimator": name, "rows": rows, "note_keys": [k for k in NOTE_KEYS if any(k in r["extras"] for r in rows)]}
            for name, rows in groups.items()]


def _forest_rows(models: list[dict[str, Any]], label: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": label[m["model"]], "model": m["model"], "value": m["score"]} for m in models if m["score"]]


def _section_view(section: dict[str, Any], doc: dict[str, Any], colours: dict[str, str], only: str | None = None) -> dict[str, Any]:
    """Everything a template shows for one section (restricted to one model on a model page)."""
    label = labels(section["models"])
    keep = (lambda m: m == only) if only else (lambda m: True)
    latents = []
    for chart in section["charts"]["latents"]:
        series = [s for s in chart["series"] if s["model"] is None or keep(s["model"])]
        if len(series) > 1:
            latents.append({"chart": chart, "svg": svg.bar_chart({**chart, "series": series}, colours)})
    # The task page compares models on their unconditioned outputs; a model page shows every condition.
    main = (lambda c: True) if only else (lambda c: c in ("none", "reference"))
    forcing = [c for c in section["charts"]["forcing"] if (c["model"] is None or keep(c["model"])) and main(c["condition"])]
    bound = [p for p in section["charts"]["bound"] if keep(p["model"])]
    transfer = [t for t in section["charts"]["transfer"] if keep(t["model"]) and main(t["condition"])]
    goodhart = [c for c in section["charts"].get("goodhart", []) if keep(c["model"])]
    sync = [c for c in section["charts"].get("sync", []) if keep(c["model"])]
    models = [m for m in section["models"] if keep(m["model"])]
    runs = [r for r in doc["runs"] if r["run_id"] in section["runs"] and keep(r["model"])]
    header, prov = provenance_rows(runs)
    return {
        "section": section, "label": label, "models": models, "legend": flag_legend(section_flags(section)),
        "score_svg": svg.forest_chart(_forest_rows(models, label), "synchronisation score with 95% interval", 0.0, 1.0, colours=colours) if any(m["score"] for m in models) else None,
        "latents": latents,
        "forcing_svg": svg.curve_chart(forcing, colours) if forcing else None,
        "bound_svg": svg.bound_chart(bound, colours) if bound else None,
        "transfer_svg": svg.forest_chart([{"name": f"{label.get(t['model'], t['model_name']) if not only else t['condition']} · {t['feature']}",
                                           "model": t["model"], "value": t["gap"]} for t in transfer],
                                         "transfer gap TSTS - TRTS with 95% interval", zero_line=True, colours=colours) if transfer else None,
        "goodhart_svgs": svg.goodhart_charts(goodhart, colours) if goodhart else [],
        "sync_svgs": svg.sync_charts(sync) if sync else [],
        "estimates": _estimate_groups([e for e in section["estimates"] if keep(e["model"])], label),
        "provenance": (header, prov),
        "page": f"{section['id']}.html",
    }


class SiteWriter:
    """Writes the static HTML site into ``out_dir``."""

    def __init__(self, options: dict[str, Any] | None = None):
        if options:
            from harness.errors import UsageError

            raise UsageError(f"the html leaderboard writer takes no options (got {', '.join(map(str, options))})",
                             "leave them out; it always writes index.html, a page per task and model, and assets/")

    def write(self, data, out_dir: Path) -> list[Path]:
        """Render every page and copy the assets; returns the files written (index.html first)."""
        doc = document_of(data)
        env = environment()
        out_dir.mkdir(parents=True, exist_ok=True)
        colours = svg.colour_map([m["model"] for m in doc["models"]])
        sections = [_section_view(s, doc, colours) for s in doc["sections"]]
        names = shown_names(doc["models"])  # with the rendering where some model was not a plain completion
        nav = {"sections": [(v["page"], f"{v['section']['task']} v{v['section']['task_version']}") for v in sections],
               "models": [(f"{m['id']}.html", names[m["model"]]) for m in doc["models"]]}
        common = {"doc": doc, "nav": nav, "names": names}
        written = [self._page(env, out_dir, "index.html", "index.html", sections=sections, **common)]
        for view in sections:
            written.append(self._page(env, out_dir, view["page"], "task.html", view=view, **common))
        for model in doc["models"]:
            views = [_section_view(s, doc, colours, only=model["model"]) for s in doc["sections"] if s["id"] in model["sections"]]
            written.append(self._page(env, out_dir, f"{model['id']}.html", "model.html", model=model, views=views, **common))
        assets = out_dir / "assets"
        assets.mkdir(exist_ok=True)
        for asset in sorted((HERE / "assets").iterdir()):
            if asset.is_file():
                shutil.copyfile(asset, assets / asset.name)
                written.append(assets / asset.name)
        return written

    @staticmethod
    def _page(env: jinja2.Environment, out_dir: Path, name: str, template: str, **context: Any) -> Path:
        path = out_dir / name
        path.write_text(env.get_template(template).render(**context), encoding="utf-8")
        return path
