"""Small builders shared by the test modules that drive `mimic run` end to end."""

from __future__ import annotations


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
