"""Which of a task's three comparisons the data decided, in words: the question behind the two models.

The question: does a base model (imitation first: a mimic) differ from an instruction-tuned one
(optimisation applied after imitation) in how it synchronises with the reference data, in how
much of its success lies in the forcing set, and in how Goodhart-prone it is? A model the runs
showed the task as a plain completion is read as the base model, one shown it through its chat
template (``chat``, ``chat+prefill``) as the instruction-tuned one; with exactly one of each in a
section the sentences name them so, otherwise they name the models. Every verdict and number is
read from the leaderboard document (the score's ranking, ``comparisons``), none is typed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.chat.renderings import COMPLETION
from harness.leaderboard.fmt import fmt_interval, md_cell, md_escape
from harness.leaderboard.paired_markdown import heading
from harness.leaderboard.rendering import rendering_of

QUESTION = ("The question behind the two embedded models: a base model, where imitation comes first, against an "
            "instruction-tuned one, where optimisation was applied after imitation. Per task, which of the three comparisons "
            "(synchronisation score, forcing-set mass under reward@K, Goodhart-proneness) the paired intervals decide.")
# What "a above b" means for each comparison, in words.
_ABOVE = {"score": "synchronises better with the reference data (higher score)",
          "forcing_mass": "keeps more of its successes under reward@K (higher forcing-set mass)",
          "goodhart": "is more Goodhart-prone (its latents move further at the KL budget)"}


def question_sides(section: Mapping[str, Any]) -> dict[str, str] | None:
    """{model id: "the base model" | "the instruction-tuned model"} when the section has one of each, else None."""
    base = [m["model"] for m in section["models"] if rendering_of(m) == COMPLETION]
    tuned = [m["model"] for m in section["models"] if rendering_of(m).startswith("chat") and "," not in rendering_of(m)]
    if len(base) != 1 or len(tuned) != 1 or len(section["models"]) != 2:
        return None
    return {base[0]: "the base model", tuned[0]: "the instruction-tuned model"}


def _score_pairs(section: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Neighbouring scored models with the score difference a - b (decided: its interval excludes 0)."""
    scored = [m for m in section["models"] if m.get("score")]
    out = []
    for a, b in zip(scored, scored[1:]):
        diff = dict(a.get("vs_next") or {})
        lower, upper = diff.get("lower"), diff.get("upper")
        diff["decided"] = lower is not None and upper is not None and (lower > 0 or upper < 0)
        out.append((a["model"], b["model"], diff))
    return out


def _comparison_pairs(comparison: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    models = comparison["models"]
    return [(a["model"], b["model"], a.get("vs_next") or {}) for a, b in zip(models, models[1:])]


def _interval(diff: Mapping[str, Any]) -> str:
    """The difference with its interval, or the point and why it has none."""
    reason = None if diff.get("lower") is not None and diff.get("upper") is not None else diff.get("no_interval")
    return md_cell(fmt_interval(diff.get("point"), diff.get("lower"), diff.get("upper"), reason))


def _verdict(kind: str, a: str, b: str, diff: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """``**decided**: X is more Goodhart-prone than Y (difference X − Y: ...)`` or ``not decided (...)``."""
    shown = f"{names[a]} − {names[b]}: {_interval(diff)}"
    if not diff.get("decided"):
        why = "no interval" if diff.get("lower") is None or diff.get("upper") is None else "interval contains 0"
        return f"not decided, {why} ({shown})"
    above, below = (a, b) if diff["lower"] > 0 else (b, a)
    return f"**decided**: {names[above]} {_ABOVE[kind]} than {names[below]} ({shown})"


def decisions(section: Mapping[str, Any], label: Mapping[str, str]) -> list[tuple[str, bool, str]]:
    """(comparison name, decided, sentence) for each neighbouring pair of each of the three comparisons."""
    names = {m: md_escape(label.get(m, m)) for m in label}
    out = [("synchronisation score", bool(d.get("decided")), _verdict("score", a, b, d, names)) for a, b, d in _score_pairs(section)]
    for comparison in section.get("comparisons") or []:
        title = md_escape(heading(comparison))
        out += [(title, bool(d.get("decided")), _verdict(comparison["statistic"], a, b, d, names)) for a, b, d in _comparison_pairs(comparison)]
    return out


def decision_lines(section: Mapping[str, Any], label: Mapping[str, str]) -> list[str]:
    """A section's verdicts as a list, framed by the question where the section holds one base and one tuned model."""
    found = decisions(section, label)
    if not found:
        return []
    n = sum(decided for _, decided, _ in found)
    sides = question_sides(section)
    if sides:
        roles = "; ".join(f"{role}: {md_escape(label.get(m, m))}" for m, role in sorted(sides.items(), key=lambda kv: kv[1]))
        framed = (f"The base model against the instruction-tuned one ({roles}; read from the renderings: a plain completion is the "
                  "base model, a chat template the instruction-tuned one)")
    else:
        framed = "Between neighbouring models"
    lines = [f"{framed}: {n} of {len(found)} comparison(s) decided.", ""]
    lines += [f"- {name}: {sentence}." for name, _, sentence in found]
    return lines + [""]


def question(doc: Mapping[str, Any], labels_of) -> list[str]:
    """The README part: the question, then each task's verdicts (``labels_of(models)``: display labels)."""
    parts = []
    for section in doc["sections"]:
        lines = decision_lines(section, labels_of(section["models"]))
        if lines:
            parts += [f"### {md_escape(section['task'])} v{section['task_version']} (reference {md_escape(section['reference_hash'])})", "", *lines]
    return ["## What the data decided", "", QUESTION, "", *parts] if parts else []
