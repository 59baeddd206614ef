"""Plugin ``builtin-features``: registers the feature extractors of :mod:`harness.extractors`."""

from __future__ import annotations

from harness.extractors import header_field, keyword_count, length_lines, length_words, python_ast, regex_count, vader
from harness.hookspecs import hookimpl


@hookimpl
def register_features(register):
    """Register the built-in feature extractors."""
    register("regex_count", regex_count, "count regex matches (binary: presence)")
    register("keyword_count", keyword_count, "count whole-word occurrences of listed words")
    register("length_words", length_words, "number of words")
    register("length_lines", length_lines, "number of non-blank lines")
    register("vader", vader, "VADER sentiment (compound score, or a label)")
    register("header_field", header_field, "value of a `Field: value` header line")
    register("python_ast", python_ast, "a measure of the item's Python code via ast (parses, compiles, lines...)")
