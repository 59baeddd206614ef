"""The findings of a leaderboard in words, written from the runs' manifests and estimates.

``results/published/README.md`` (and ``README.md`` beside every leaderboard) is this text: how the
board was made, the synchronisation score per task and whether the models are distinguishable,
control success, which of the three comparisons (score, forcing-set mass, Goodhart-proneness) the paired
intervals decide (:mod:`harness.leaderboard.paired_prose`), the forcing-set rows, Goodhart-proneness and the
synchronisation curves. Every
number comes from the leaderboard document with its interval, or ``no interval (reason)``, and its
flags (:func:`harness.leaderboard.fmt.fmt_row`), so the prose cannot drift from the estimates; the
closing sentence counts what the data decided. Nothing here is typed by hand about results.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.leaderboard.fmt import fmt_row, md_cell, md_escape
from harness.leaderboard.markdown import labels, rank_text
from harness.leaderboard.paired_prose import question
from harness.leaderboard.rendering import rendering_of, shows_renderings, with_rendering
from harness.leaderboard.score import norm_name
from harness.records import Manifest
from harness.stats import flags as fl

MARKER = "<!-- written by `mimic report` from the runs' manifests and estimates; regenerate it, do not edit it -->"
_K_FEATURE = re.compile(r"^K=(\d+)$")
_AT = re.compile(r"@(\d+(?:\.\d+)?)$")


def _value(entry: Mapping[str, Any] | None) -> str:
    """One estimate as prose shows it: interval or ``no interval (reason)``, then its flags."""
    return md_cell(fmt_row(entry))


def _code(text: Any) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _rows(section: Mapping[str, Any], estimator: str) -> list[dict[str, Any]]:
    return [e for e in section["estimates"] if norm_name(e["estimator"]) == estimator]


def _heading(section: Mapping[str, Any]) -> str:
    return f"### {md_escape(section['task'])} v{section['task_version']} (reference {md_escape(section['reference_hash'])})"


def _model_order(section: Mapping[str, Any]) -> list[str]:
    return [m["model"] for m in section["models"]]


def _sections_with(doc: Mapping[str, Any], estimator: str):
    """(section, its rows of ``estimator``, model labels) for each section that has such rows."""
    for section in doc["sections"]:
        rows = _rows(section, estimator)
        if rows:
            yield section, rows, labels(section["models"])


def _by_model(section: Mapping[str, Any], rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by model, in ranking order."""
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in _model_order(section)}
    for row in rows:
        out.setdefault(row["model"], []).append(row)
    return {m: rs for m, rs in out.items() if rs}


def _at_number(condition: str) -> float:
    found = _AT.search(str(condition))
    return float(found.group(1)) if found else -1.0


# -- how the board was made ---------------------------------------------------------------------

def _span(values: Iterable[Any]) -> str:
    shown = sorted({str(v) for v in values if v is not None})
    return ", ".join(shown) if shown else "not recorded"


def _seconds(manifest: Manifest) -> float | None:
    timings = manifest.timings or {}
    if isinstance(timings.get("total"), (int, float)):
        return float(timings["total"])
    phases = [v for v in timings.values() if isinstance(v, (int, float))]
    return float(sum(phases)) if phases else None


def _sampling_lines(manifests: Sequence[Manifest]) -> list[str]:
    """The sampling time over every invocation that called a model, and the machines it ran on."""
    sampled = [m for m in manifests if isinstance(m.sampling, dict) and isinstance(m.sampling.get("seconds"), (int, float))]
    if not sampled:
        return []
    seconds = sum(float(m.sampling["seconds"]) for m in sampled)
    machines = [m.sampling.get("machine") or {} for m in sampled]
    kinds = sorted({_machine_text(machine) for machine in machines})
    loads = sorted(float(x["load_average"][0]) for x in machines if isinstance(x.get("load_average"), list) and x["load_average"])
    per_run = ", ".join(f"{_code(str(m.run_id))} {float(m.sampling['seconds']):.1f} s" for m in sorted(sampled, key=lambda m: str(m.run_id)))
    load = (f"; load average (1 min) when each run ended: {loads[0]:.1f}" + (f"-{loads[-1]:.1f}" if loads[-1] != loads[0] else "")
            if loads else "")
    return [f"- Sampling wall time (model calls, over every invocation that made them; {len(sampled)} of {len(manifests)} run(s) "
            f"recorded it): {seconds:.0f} s = {seconds / 60:.1f} min in all ({per_run}).",
            "- Machine(s): " + "; ".join(kinds) + load + "."]


def _machine_text(machine: Mapping[str, Any]) -> str:
    return f"{md_escape(machine.get('cpu') or 'unknown CPU')}, {machine.get('cores', '?')} usable core(s), {md_escape(machine.get('system') or '')}"


def _plan_line(task: str, manifests: Sequence[Manifest]) -> str:
    plans = {(p.get("contexts"), p.get("samples_per_context"), p.get("n_exemplars"), tuple(p.get("pools") or []),
              tuple(p.get("context_sizes") or [])) for p in (m.plan or {} for m in manifests)}
    parts = []
    for contexts, samples, k, pools, sizes in sorted(plans, key=str):
        text = f"{contexts} contexts x {samples} samples per pool, {k} exemplars per context"
        text += f", pools {', '.join(_code(p) for p in pools)}" if pools else ""
        text += (f", context sizes {', '.join(str(n) for n in sizes)} for the synchronisation curves" if len(sizes) > 1
                 else ", no synchronisation curve")
        parts.append(text)
    return f"- {md_escape(task)}: " + "; ".join(parts)


def _renderings_line(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """How each model was shown its tasks, when some run was not a plain completion (else nothing: the old board)."""
    if not shows_renderings(runs):
        return []
    shown = sorted({(str(r["model_name"]), str(r["task"]), rendering_of(r)) for r in runs})
    return ["- Renderings (how each model was shown the task: the few-shot document as a completion, or a conversation): "
            + "; ".join(f"{md_escape(with_rendering(name, rendering))} on {md_escape(task)}" for name, task, rendering in shown)
            + ". Models in different renderings answered different prompts; where one task has several, its section says so."]


def made(doc: Mapping[str, Any], manifests: Sequence[Manifest]) -> list[str]:
    """How the board was made, from the manifests: models, tasks, seeds, plan, draws, dates, time."""
    runs = doc["runs"]
    models = sorted({(r["model_name"], f"{(r.get('spec') or {}).get('backend')}:{(r.get('spec') or {}).get('model')}") for r in runs}, key=str)
    tasks = sorted({(r["task"], r["task_version"], r["reference_hash"]) for r in runs}, key=str)
    counts = [r.get("counts") or {} for r in runs]
    done, planned, cached = (sum(int(c.get(k) or 0) for c in counts) for k in ("done", "planned", "cached"))
    lines = ["## How this board was made", "",
             f"- {len(runs)} run(s) of {len(models)} model(s) on {len(tasks)} task(s), harness version(s) {_span(r.get('harness_version') for r in runs)}.",
             "- Models: " + "; ".join(f"{md_escape(name)} ({_code(spec)})" for name, spec in models) + ".",
             *_renderings_line(runs),
             "- Tasks: " + "; ".join(f"{md_escape(t)} v{v} (reference data hash {_code(h)})" for t, v, h in tasks) + ".",
             f"- Seeds: {_span(r.get('seed') for r in runs)}.", "- Plan:"]
    by_task: dict[str, list[Manifest]] = {}
    for m in manifests:
        by_task.setdefault(str(m.task_name), []).append(m)
    lines += ["  " + _plan_line(task, ms) for task, ms in sorted(by_task.items())]
    lines.append(f"- Draws: {done} of {planned} planned ({cached} read from the draw cache).")
    created = sorted(str(r["created"]) for r in runs if r.get("created"))
    finished = sorted(str(r["finished"]) for r in runs if r.get("finished"))
    if created:
        lines.append(f"- Dates: first run created {created[0]}" + (f", last finished {finished[-1]}." if finished else "."))
    seconds = {str(m.run_id): _seconds(m) for m in manifests}
    known = {k: v for k, v in seconds.items() if v is not None}
    if known:
        per_run = ", ".join(f"{_code(k)} {v:.1f} s" for k, v in sorted(known.items()))
        lines.append(f"- Wall time of each run's last invocation (the manifests' phase timings; an invocation that found its draws "
                     f"already made only re-estimates): {sum(known.values()):.1f} s in all ({per_run}).")
    lines += _sampling_lines(manifests)
    statuses = Counter(str(r.get("status")) for r in runs)
    if set(statuses) != {"complete"}:
        lines.append("- Run status: " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ".")
    return lines + [""]


# -- the synchronisation score ------------------------------------------------------------------

def _shared(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two neighbouring models share a rank (the ranking did not decide between them)."""
    la, lb = a.get("rank_label"), b.get("rank_label")
    if la and lb:
        return str(la) == str(lb)
    return not (a.get("vs_next") or {}).get("distinguishable")


def score_pairs(section: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any], bool]]:
    """Neighbouring scored models of a section and whether the ranking decided between them."""
    scored = [m for m in section["models"] if m.get("score")]
    return [(a, b, not _shared(a, b)) for a, b in zip(scored, scored[1:])]


def _score_line(m: Mapping[str, Any], label: Mapping[str, str]) -> str:
    score = {**m["score"], "flags": m.get("flags") or [], "no_interval": m.get("no_interval")}
    measured = m.get("n_measured")
    cells = f"{measured} of {m['n_cells']} cells measured" if measured is not None else f"{m['n_cells']} cells"
    rank = f"rank {md_escape(rank_text(m))}" if m.get("rank_label") or m.get("rank") else "unranked"
    return f"- {rank}: **{md_escape(label[m['model']])}** {_value(score)} ({cells}, {len(m['runs'])} run(s))"


def sync_scores(doc: Mapping[str, Any]) -> tuple[list[str], int, int]:
    """The score per task with its interval and flags, and which neighbours are distinguishable;
    returns the lines, the comparisons made and the comparisons decided."""
    lines = ["## Synchronisation score", "",
             f"Definition: {md_escape(str(doc['score']['definition']).rstrip('. '))}. Higher is better (1: the latents move as the reference predicts).", ""]
    made_, decided = 0, 0
    for section in doc["sections"]:
        label = labels(section["models"])
        lines += [_heading(section), ""]
        lines += [_score_line(m, label) for m in section["models"] if m.get("score")]
        lines += [f"- {md_escape(label[m['model']])}: not scored" for m in section["models"] if not m.get("score")]
        for a, b, is_decided in score_pairs(section):
            made_, decided = made_ + 1, decided + is_decided
            diff = a.get("vs_next")
            shown = f" (difference {_value(diff)})" if diff else ""
            verdict = "distinguishable" if is_decided else "**not distinguishable**"
            lines.append(f"- {md_escape(label[a['model']])} vs {md_escape(label[b['model']])}: {verdict}{shown}.")
        lines += [f"- {md_escape(n)}" for n in section["notes"]]
        lines.append("")
    return lines, made_, decided


# -- control success, forcing set, Goodhart, curves --------------------------------------------

def control(doc: Mapping[str, Any]) -> list[str]:
    """Control success of every control condition; rows true by construction are set apart."""
    lines = ["## Control success", "", "The share of a condition's outputs whose proxy hits the target.", ""]
    for section, rows, label in _sections_with(doc, "control_success"):
        lines += [_heading(section), ""]
        for model, ms in _by_model(section, rows).items():
            found = [r for r in ms if fl.BY_CONSTRUCTION not in r.get("flags", [])]
            built = [r for r in ms if fl.BY_CONSTRUCTION in r.get("flags", [])]
            text = "; ".join(f"{_code(r['condition'])} {_value(r)}" for r in sorted(found, key=lambda r: str(r["condition"])))
            line = f"- {md_escape(label[model])}: {text or 'no measured control'}"
            if built:
                line += ". By construction, not findings: " + "; ".join(f"{_code(r['condition'])} {_value(r)}" for r in built)
            lines.append(line + ".")
        lines.append("")
    return lines if len(lines) > 4 else []


def format_adherence(doc: Mapping[str, Any]) -> list[str]:
    """Format adherence of chat-rendered models: the share of answers that held a parsable item, per condition."""
    lines = ["## Format adherence", "", "The share of a chat-rendered model's answers that held an item in the task's format; "
             "the others (refusals, chatter, another format) are draws without an item.", ""]
    for section, rows, label in _sections_with(doc, "format_adherence"):
        lines += [_heading(section), ""]
        for model, ms in _by_model(section, rows).items():
            parts = []
            for r in sorted(ms, key=lambda r: (r["condition"] != "none", str(r["condition"]))):
                unparsed = (r.get("note") or {}).get("unparsed")
                counted = f" ({unparsed:g} of {r['n']} answers unparsed)" if r.get("runs") == 1 and isinstance(unparsed, (int, float)) and r.get("n") else ""
                parts.append(f"{_code(r['condition'])} {_value(r)}{counted}")
            lines.append(f"- {md_escape(label[model])}: " + "; ".join(parts) + ".")
        lines.append("")
    return lines if len(lines) > 4 else []


def _k_rows(rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out = {}
    for r in rows:
        found = _K_FEATURE.match(str(r["feature"]))
        if found:
            out[int(found.group(1))] = r
    return out


def _forcing_model(rows: list[dict[str, Any]], k_max: int) -> list[str]:
    """One model's forcing rows: m_K of its unconditioned outputs and of each reward@K selection,
    and each bound check (predicted bound 2(1 - m) against the measured shift)."""
    parts = []
    none = _k_rows(r for r in rows if r["condition"] == "none").get(k_max)
    if none:
        parts.append(f"unconditioned outputs m_{k_max} {_value(none)}")
    for r in sorted((r for r in rows if str(r["condition"]).startswith("reward@")), key=lambda r: _at_number(r["condition"])):
        k = int(_at_number(r["condition"]))
        if str(r["feature"]) == f"K={k}" and k > 1:  # reward@1 only selects on one draw: its m_1 says nothing new
            parts.append(f"{_code(r['condition'])} selections m_{k} {_value(r)}")
        elif r["feature"] == "bound":
            note = r.get("note") or {}
            measured = note.get("max_measured")
            verdict = "exceeds it" if fl.BOUND_EXCEEDED in r.get("flags", []) else "is within it"
            seen = f"; the measured reward@1 vs {r['condition']} shift (largest over latents, a plug-in without interval) {measured:.3f} {verdict}" \
                if isinstance(measured, (int, float)) else ""
            parts.append(f"{_code(r['condition'])} predicted bound 2(1 - m) {_value(r)}{seen}")
    return parts


def forcing(doc: Mapping[str, Any]) -> list[str]:
    """Forcing-set mass m_K of the reference and of each model, and the bound checks."""
    lines = ["## Forcing set", "", "m_K: the share of successful items that succeed on all K world draws.", ""]
    for section, rows, label in _sections_with(doc, "forcing_mass"):
        reference = _k_rows(r for r in rows if r["condition"] == "reference")
        k_max = max(reference or _k_rows(rows) or {0: None})
        lines += [_heading(section), ""]
        if reference:
            lines.append(f"- reference: m_{k_max} {_value(reference[k_max])}")
        for model, ms in _by_model(section, [r for r in rows if r["condition"] != "reference"]).items():
            parts = _forcing_model(ms, k_max)
            if parts:
                lines.append(f"- {md_escape(label[model])}: " + "; ".join(parts) + ".")
        lines.append("")
    return lines if len(lines) > 4 else []


def goodhart(doc: Mapping[str, Any]) -> list[str]:
    """Goodhart-proneness (mean latent distance to F(H | R=1) at the KL budget), lower is better."""
    lines = ["## Goodhart-proneness", "",
             "How far the latents drift from what success looks like in the reference, F(H | R=1), once the pool is "
             "tilted towards the world's reward up to the KL budget; lower is better.", ""]
    for section, rows, label in _sections_with(doc, "goodhart_score"):
        lines += [_heading(section), ""]
        for model, ms in _by_model(section, rows).items():
            overall = [r for r in ms if r["feature"] == "_all"]
            latents = sorted((r for r in ms if r["feature"] != "_all"), key=lambda r: str(r["feature"]))
            budget = next((r["note"].get("budget") for r in ms if isinstance((r.get("note") or {}).get("budget"), (int, float))), None)
            at = f" at {budget:g} nats" if budget is not None else ""
            text = "; ".join(f"{_code(r['condition'])}{at} {_value(r)}" for r in overall) or "no overall score"
            if latents:
                text += "; per latent: " + "; ".join(f"{md_escape(r['feature'])} {_value(r)}" for r in latents)
            lines.append(f"- {md_escape(label[model])}: {text}.")
        lines.append("")
    return lines if len(lines) > 4 else []


def _n_of(row: Mapping[str, Any]) -> float:
    n = (row.get("note") or {}).get("n_exemplars")
    return float(n) if isinstance(n, (int, float)) else _at_number(row["condition"])


def _curve_text(rows: list[dict[str, Any]]) -> str:
    rows = sorted(rows, key=_n_of)
    first, last = rows[0], rows[-1]
    band = (last.get("note") or {}).get("in_floor")
    where = "" if band is None else (" (inside the no-shift band)" if band else " (outside the no-shift band)")
    if len(rows) == 1:
        return f"n={_n_of(first):g} {_value(first)}{where}"
    return f"n={_n_of(first):g} {_value(first)} -> n={_n_of(last):g} {_value(last)}{where}"


def sync_curves(doc: Mapping[str, Any]) -> list[str]:
    """Each feature's marginal distance to the reference at the smallest and largest context size."""
    lines = ["## Synchronisation curves", "",
             "Distance between each feature's distribution in the unconditioned outputs and the reference, from the "
             "smallest to the largest number of exemplars n in the context.", ""]
    for section, rows, label in _sections_with(doc, "sync_marginal"):
        lines += [_heading(section), ""]
        for model, ms in _by_model(section, rows).items():
            features: dict[str, list[dict[str, Any]]] = {}
            for r in ms:
                features.setdefault(str(r["feature"]), []).append(r)
            lines.append(f"- {md_escape(label[model])}: " + "; ".join(f"{md_escape(f)} {_curve_text(rs)}" for f, rs in sorted(features.items())) + ".")
        lines.append("")
    return lines if len(lines) > 4 else []


# -- the closing sentence -----------------------------------------------------------------------

def closing(doc: Mapping[str, Any], comparisons: int, decided: int) -> list[str]:
    """What the data decided: comparisons decided, rows without an interval, flags by frequency."""
    rows = [e for s in doc["sections"] for e in s["estimates"]]
    withheld = sum(1 for e in rows if e.get("point") is not None and (e.get("lower") is None or e.get("upper") is None))
    flagged = Counter(f for e in rows for f in e.get("flags") or [] if f in fl.KNOWN)
    n_flagged = sum(1 for e in rows if e.get("flags"))
    if comparisons == 0:
        first = "No two models share a task here, so no ranking was decided."
    elif decided == 0:
        first = f"None of the {comparisons} comparison(s) between neighbouring models on the synchronisation score was decided: at this size the board does not show one model synchronising better than another."
    elif decided == comparisons:
        first = f"All {comparisons} comparison(s) between neighbouring models on the synchronisation score were decided."
    else:
        first = f"{decided} of {comparisons} comparisons between neighbouring models on the synchronisation score were decided; the others are ties."
    common = ", ".join(f"{fl.describe([f])} {n}" for f, n in flagged.most_common(5))
    second = (f"Of {len(rows)} estimates, {withheld} have no interval and {n_flagged} carry flags"
              + (f" (most often: {common})." if common else "."))
    return ["## In short", "", f"{first} {second}", ""]


def render_report(doc: Mapping[str, Any], manifests: Sequence[Manifest]) -> str:
    """The whole findings page (Markdown) of a leaderboard document and its runs' manifests."""
    scores, comparisons, decided = sync_scores(doc)
    lines = [MARKER, "", "# Leaderboard findings", "",
             f"Written by {doc['generator']['name']} {doc['generator']['version']} (`mimic report`) from the runs' manifests and "
             "estimates. Every number is a point estimate with its 95% interval, or \"no interval (reason)\" where no calibrated "
             "interval exists at that design; flags follow the number they qualify.", ""]
    for part in (made(doc, manifests), scores, question(doc, labels), control(doc), format_adherence(doc), forcing(doc), goodhart(doc), sync_curves(doc),
                 closing(doc, comparisons, decided)):
        lines += part
    return "\n".join(lines).rstrip() + "\n"
