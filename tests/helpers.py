"""Small builders shared by the test modules that drive `mimic run` end to end."""

from __future__ import annotations

import json
import random


def books_task_yaml(name: str, contexts: int, samples_per_context: int, max_tokens: int = 12) -> str:
    """A minimal review task over a local ``ref.jsonl`` (rating proxy, length latent, three controls)."""
    return f"""\
name: {name}
version: 1
reference: {{type: jsonl, path: ref.jsonl}}
render:
  exemplar: "Rating: {{{{ rating }}}}\\nReview: {{{{ review }}}}"
  separator: "\\n###\\n"
  open_prefix: "Rating:"
  prompt_prefix: "Rating: {{{{ value }}}}\\n"
  stop: ["###"]
features:
  rating: {{type: header_field, field: Rating, numeric: true}}
  length: {{type: length_words}}
proxy: {{feature: rating, values: [5]}}
latents: [length]
controls: [none, prompt, filter]
plan: {{contexts: {contexts}, samples_per_context: {samples_per_context}, exemplars: 2, seed: 0}}
generation: {{max_tokens: {max_tokens}}}
"""


def books_reference_jsonl(rows: int = 30, seed: int = 0) -> str:
    """The ``ref.jsonl`` that :func:`books_task_yaml` reads: seeded ratings and short word-salad reviews."""
    rng = random.Random(seed)
    lines = []
    for _ in range(rows):
        words = " ".join(rng.choice(["good", "bad", "slow", "warm", "dull"]) for _ in range(rng.randint(3, 8)))
        lines.append(json.dumps({"rating": rng.randint(1, 5), "review": words}))
    return "\n".join(lines) + "\n"
