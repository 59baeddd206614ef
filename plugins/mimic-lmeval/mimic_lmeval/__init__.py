"""mimic-harness backend ``lm-eval``: sample any model lm-evaluation-harness can load.

``lm-eval:NAME?ARGS`` builds lm-eval's model ``NAME`` with ``ARGS`` as its model args, e.g.
``lm-eval:hf?pretrained=EleutherAI/pythia-70m&device=cpu`` or
``lm-eval:local-completions?base_url=http://127.0.0.1:8000/v1/completions&model=m&tokenizer_backend=none``.
"""

from __future__ import annotations

from harness import hookimpl

from mimic_lmeval.backend import LmEvalMimic, create_lmeval_mimic

__all__ = ["LmEvalMimic", "create_lmeval_mimic", "register_mimics"]


@hookimpl
def register_mimics(register):
    """Register the ``lm-eval`` backend."""
    register(
        "lm-eval",
        create_lmeval_mimic,
        "any lm-evaluation-harness model: lm-eval:hf?pretrained=..., lm-eval:local-completions?base_url=..., vllm, gguf",
    )
