"""Which rendering each run and model on a board used, and how the board says so.

A run's rendering (``completion``, ``chat`` or ``chat+prefill``: :mod:`harness.chat.renderings`) is its
manifest's ``plan.rendering``; a run written before chat renderings existed has none and was a
completion run. A model's rendering is its runs' renderings, comma-joined when they differ.

Two renderings of one task are two conditions: a model shown the few-shot document and one shown a
conversation answer different prompts. The board ranks them together (the score measures the same
latents against the same reference data), but every label then carries its rendering
(``SmolLM2 (chat)``) and the section says, in a note written from the data, that the renderings
differ. A board whose models all ran through completion reads as it did before renderings existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.chat.renderings import CHAT, CHAT_PREFILL, COMPLETION
from harness.records import Manifest

# What each rendering shows the model, in words (for the notes).
SHOWN = {
    COMPLETION: "the few-shot document",
    CHAT: "a conversation, its item parsed from the answer",
    CHAT_PREFILL: "a conversation whose answer continues the pool's prefix",
}


def run_rendering(manifest: Manifest) -> str:
    """The rendering a run used: ``plan.rendering`` of its manifest, ``completion`` when absent (older runs)."""
    return str((manifest.plan or {}).get("rendering") or COMPLETION)


def renderings_of(manifests: Iterable[Manifest]) -> str:
    """The renderings of several runs, sorted and comma-joined (``completion`` when there are none)."""
    parts = {part for m in manifests for part in run_rendering(m).split(",") if part}
    return ",".join(sorted(parts)) or COMPLETION


def rendering_of(entry: Mapping[str, Any]) -> str:
    """The rendering of a document entry (a model or a run); ``completion`` for a document written before the field."""
    return str(entry.get("rendering") or COMPLETION)


def shows_renderings(entries: Iterable[Mapping[str, Any]]) -> bool:
    """Whether labels should carry the rendering: some entry was not rendered as a plain completion."""
    return any(rendering_of(e) != COMPLETION for e in entries)


def with_rendering(name: str, rendering: str) -> str:
    """``SmolLM2 (chat)``: a model's name with its rendering."""
    return f"{name} ({rendering.replace(',', ', ')})"


def shown_names(models: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """model id -> the name its charts, navigation and page titles show: the display name, with the
    rendering where some model of ``models`` was not rendered as a plain completion."""
    show = shows_renderings(models)
    return {m["model"]: with_rendering(str(m["model_name"]), rendering_of(m)) if show else str(m["model_name"]) for m in models}


def _shown(rendering: str) -> str:
    return " and ".join(f"{r} ({SHOWN.get(r, 'an unknown rendering')})" for r in rendering.split(","))


def differing_notes(models: Sequence[Mapping[str, Any]]) -> list[str]:
    """The section notes that say renderings differ: between models, and within a model that pools runs of several."""
    notes = []
    renderings = {rendering_of(m) for m in models}
    if len(renderings) > 1:
        each = "; ".join(f"{m['model_name']} through {_shown(rendering_of(m))}" for m in models)
        notes.append(f"renderings differ in this section: {each}. The models are ranked together on the same latents and "
                     "reference data, but they answered different prompts, so each rank is a model in its rendering, not the "
                     "model alone; the labels say which rendering each row used")
    for m in models:
        if "," in rendering_of(m):
            notes.append(f"{m['model_name']}: its runs used different renderings ({rendering_of(m).replace(',', ', ')}); "
                         "their estimates are pooled as one model")
    return notes


def comparison_note(task: Any, rendering_a: str, rendering_b: str) -> str | None:
    """The note of a comparison whose two sides used different renderings (None when they agree)."""
    if rendering_a == rendering_b:
        return None
    return (f"{task}: the renderings differ (A through {_shown(rendering_a)}, B through {_shown(rendering_b)}): the two "
            "sides answered different prompts, so each difference is between a model in its rendering and the other in its "
            "own, not between the models alone")
