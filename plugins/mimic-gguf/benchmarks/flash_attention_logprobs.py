"""How far ggml's CPU flash attention moves the embedded models' next-token log-probabilities.

Flash attention would make long generation runs cheaper (in a unified KV cache it skips the cells of
other sequences, which the plain kernel computes and masks), but the backend keeps it off for
generation too if it changes the distribution being measured. For a few short prompts this prints,
per model, the largest difference over the top-5 next-token log-probabilities between
``flash_attention`` on and off (greedy, one token, one sequence), and between 1 and 2 threads with
it off, for scale.

Usage: .venv/bin/python plugins/mimic-gguf/benchmarks/flash_attention_logprobs.py
"""

from __future__ import annotations

import asyncio

import llama_cpp as C

from harness.mimic import GenerationRequest
from harness.modelspec import parse_model_spec

from mimic_gguf import model as model_module
from mimic_gguf.plugin import create_gguf

PROMPTS = ["Rating: 5\nReview:", "Reviews from a book club.\n\nRating: 3\nReview: The plot was slow.\n###\nRating:",
           "def add(a, b):\n    return", "The capital of France is", "Once upon a time, in a land far away, there lived a"]


def top_logprobs(spec: str, flash: bool) -> list[dict[str, float]]:
    """Top-5 next-token log-probabilities of each prompt, with flash attention on or off."""
    # The backend always loads with flash attention off; flip the constant it reads for this load.
    saved = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
    model_module.C.LLAMA_FLASH_ATTN_TYPE_DISABLED = C.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else saved
    try:
        mimic = create_gguf(parse_model_spec(spec))
    finally:
        model_module.C.LLAMA_FLASH_ATTN_TYPE_DISABLED = saved
    try:
        requests = [GenerationRequest(prompt=p, max_tokens=1, top_logprobs=5, temperature=0.0, seed=1) for p in PROMPTS]
        return [c.logprobs[0].top for c in asyncio.run(mimic.generate(requests))]
    finally:
        asyncio.run(mimic.aclose())


def largest_gaps(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[float]:
    return [max(abs(x[t] - y[t]) if t in y else float("inf") for t in x) for x, y in zip(a, b)]


def main() -> None:
    for name in ("gguf:default", "gguf:smollm2"):
        off1 = top_logprobs(f"{name}?n_threads=1", False)
        off2 = top_logprobs(f"{name}?n_threads=2", False)
        on1 = top_logprobs(f"{name}?n_threads=1", True)
        print(f"{name}: flash on vs off, largest top-5 logprob gap per prompt (nats): "
              f"{', '.join(f'{g:.4f}' for g in largest_gaps(off1, on1))}; 2 vs 1 threads, off: "
              f"{', '.join(f'{g:.1e}' for g in largest_gaps(off1, off2))}")


if __name__ == "__main__":
    main()
