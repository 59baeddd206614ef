"""Which rendering a model gets (the draws column ``rendering``), and the model-spec option that forces one.

- ``completion``: the few-shot document (preamble, exemplars, separator, the pool's prefix); the item
  is prefix + completion. What a model that declares ``Capability.COMPLETION`` gets (and one that
  declares neither COMPLETION nor CHAT: the path every backend had before chat renderings).
- ``chat+prefill``: a conversation (:mod:`harness.chat.messages`) that ends with an assistant message
  holding the pool's prefix, which the backend continues; the item is prefix + answer, as for
  completions. What a chat-only model gets when it declares ``Capability.ASSISTANT_PREFILL``.
- ``chat``: the conversation without prefill; the item is parsed from the answer
  (:func:`harness.chat.parse.parse_item`), and an answer without one is an unparsed draw. What any
  other chat-only model gets.

A model spec forces one with the option ``rendering=completion|chat|chat+prefill`` (in a URL the ``+``
reads as a space; both spellings are accepted). The harness takes the option out before the backend
sees it (:func:`backend_spec`, in :func:`harness.factories.create_mimic`), and it becomes part of the
run's model id (:func:`run_model_id`): it changes what is sampled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.errors import ModelSpecError
from harness.mimic import Capability
from harness.modelspec import ModelSpec

COMPLETION, CHAT, CHAT_PREFILL = "completion", "chat", "chat+prefill"
RENDERINGS = (COMPLETION, CHAT, CHAT_PREFILL)
RENDERING_OPTION = "rendering"


def forced_rendering(spec: ModelSpec) -> str | None:
    """The rendering a model spec forces (option ``rendering``), or None when it leaves it to the capabilities."""
    value = spec.options.get(RENDERING_OPTION)
    if value is None:
        return None
    text = str(value).strip().replace(" ", "+")
    if text not in RENDERINGS:
        raise ModelSpecError(f"model option rendering={value!r} is unknown", f"use rendering={', '.join(RENDERINGS)}")
    return text


def backend_spec(spec: ModelSpec) -> ModelSpec:
    """The spec a backend factory sees: without the harness's ``rendering`` option."""
    if RENDERING_OPTION not in spec.options:
        return spec
    return ModelSpec(spec.backend, spec.model, {k: v for k, v in spec.options.items() if k != RENDERING_OPTION}, spec.label)


def run_model_id(model_id: str, spec: ModelSpec) -> str:
    """The model id a run records: the backend's, plus the forced rendering (unchanged when none is forced)."""
    forced = forced_rendering(spec)
    return model_id if forced is None else f"{model_id}?{RENDERING_OPTION}={forced}"


def choose_rendering(capabilities: Iterable[Capability], forced: str | None = None, model: str = "the model") -> str:
    """The rendering a model gets: ``forced`` if its backend can take it, else by its declared capabilities."""
    caps = frozenset(capabilities)
    can = {COMPLETION: Capability.COMPLETION in caps or Capability.CHAT not in caps,
           CHAT: Capability.CHAT in caps,
           CHAT_PREFILL: Capability.CHAT in caps and Capability.ASSISTANT_PREFILL in caps}
    if forced is not None:
        if not can[forced]:
            declared = ", ".join(sorted(c.value for c in caps)) or "none"
            raise ModelSpecError(f"{model} cannot take rendering={forced}: its backend declares {declared}",
                                 "drop the rendering option, or pick one the backend supports")
        return forced
    if Capability.COMPLETION in caps or Capability.CHAT not in caps:
        return COMPLETION
    return CHAT_PREFILL if can[CHAT_PREFILL] else CHAT


def rendering_for(mimic: Any, spec: ModelSpec) -> str:
    """The rendering a run gives ``mimic`` (built from ``spec``)."""
    return choose_rendering(getattr(mimic, "capabilities", frozenset()), forced_rendering(spec), spec.display_name)
