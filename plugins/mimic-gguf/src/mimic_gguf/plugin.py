"""The ``gguf`` backend's registration: model names, options and the factory.

Model names::

    gguf:default                      Gemma 3 270M base (embedded; assembled once into the user cache)
    gguf:smollm2                      SmolLM2-135M-Instruct (chat template: the "controlled" mimic)
    gguf:/abs/path/model.gguf         any GGUF file
    gguf:NAME?path=/abs/model.gguf    any GGUF file under a name of your choice

Options: ``n_ctx`` (KV cells shared by every sequence, default 3072: see ``ContextConfig``), ``n_threads`` (default: every
usable core), ``n_batch`` (default 512), ``max_sequences`` (sequences decoded together, default 32),
``prefix_sharing`` (1: a prompt starts from the cached cells of the longest prompt prefix it shares
with an earlier one; 0: only requests with the same prompt share cells; default 1), ``path``.
"""

from __future__ import annotations

from typing import Any

from harness import ModelSpec, ModelSpecError, hookimpl, usable_cores

from mimic_gguf.files import resolve_model_file
from mimic_gguf.mimic import GGUFMimic
from mimic_gguf.model import ContextConfig, LoadedModel

# The options' defaults are ContextConfig's (model.py says why n_ctx is 3072).
DEFAULTS = {"n_ctx": ContextConfig.n_ctx, "n_batch": ContextConfig.n_batch, "max_sequences": ContextConfig.max_sequences,
            "prefix_sharing": int(ContextConfig.prefix_sharing)}
_INT_OPTIONS = {"n_ctx": (64, 1 << 20), "n_threads": (1, 1024), "n_batch": (1, 1 << 16), "max_sequences": (1, 254),
                "prefix_sharing": (0, 1)}
_KNOWN = set(_INT_OPTIONS) | {"path"}
# Options that change speed only, never the text a seed targets: left out of the model id. Which
# requests share a decode step already depends on when calls arrive (continuous batching), so the
# slot count and whether a prompt's first cells are copied from a cached prefix or decoded again
# change the batch shapes, and so only the float rounding of the logits, as timing does. n_ctx
# stays in the id: it caps prompts and generations.
_SPEED_ONLY = {"n_threads", "max_sequences", "prefix_sharing"}


def context_config(options: dict[str, Any]) -> ContextConfig:
    """Validate the spec's options and turn them into a :class:`ContextConfig`."""
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise ModelSpecError(
            f"unknown gguf option(s): {', '.join(unknown)}",
            f"use only {', '.join(sorted(_KNOWN))}",
        )
    values: dict[str, int] = {}
    for name, (low, high) in _INT_OPTIONS.items():
        raw = options.get(name, DEFAULTS.get(name, usable_cores() if name == "n_threads" else None))
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            raise ModelSpecError(f"gguf option {name}={raw!r} must be an integer in [{low}, {high}]", f"pass e.g. ?{name}={DEFAULTS.get(name, 2)}")
        values[name] = raw
    # A decode step holds one token per sequence, so a batch must fit every sequence.
    values["n_batch"] = max(values["n_batch"], values["max_sequences"])
    sharing = bool(values.pop("prefix_sharing"))
    return ContextConfig(**values, prefix_sharing=sharing)


def model_id_for(spec: ModelSpec) -> str:
    """``gguf:<model>`` plus a short hash of the options that can change outputs (no secrets, no thread count)."""
    kept = {k: v for k, v in spec.options.items() if k not in _SPEED_ONLY}
    return ModelSpec(spec.backend, spec.model, kept).model_id


def create_gguf(spec: ModelSpec, ctx=None) -> GGUFMimic:
    """Factory for ``gguf:<name>``: resolve the file, load it, and wrap it as a mimic."""
    config = context_config(dict(spec.options))
    path = resolve_model_file(spec.model, spec.option("path"))
    return GGUFMimic(model_id_for(spec), LoadedModel(path, config))


@hookimpl
def register_mimics(register):
    """Register the gguf backend."""
    register(
        "gguf",
        create_gguf,
        "GGUF models in process via llama.cpp: gguf:default (embedded Gemma 3 270M base), gguf:smollm2, gguf:/path/model.gguf",
    )
