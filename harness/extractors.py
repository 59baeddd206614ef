"""Feature extractors: the built-in feature types (registered by the ``builtin-features`` plugin).

Each factory ``factory(options, ctx)`` returns an object with ``kind`` and ``extract(texts)``.
Text features accept ``after: <Field>``: measure only the text after the first line starting with
``<Field>:`` (e.g. the review body after ``Review:``); items without that line give null.

| type | options | kind |
|---|---|---|
| ``regex_count`` | ``pattern`` (Rust/polars regex), ``ignore_case``, ``binary`` | numeric / binary |
| ``keyword_count`` | ``words`` (list), ``ignore_case`` (default true), ``binary`` | numeric / binary |
| ``length_words`` | | numeric: whitespace-separated words |
| ``length_lines`` | | numeric: non-blank lines |
| ``vader`` | ``label`` (positive/neutral/negative at +-0.05) | numeric compound / categorical |
| ``header_field`` | ``field``, ``numeric``, ``lowercase``, ``values`` (allowed categories) | numeric / categorical |
| ``python_ast`` | ``measure`` (see ``PYTHON_MEASURES``; ``python_lines`` = ``lines``...), ``require_compiles``, ``first_definition`` (measure only the first top-level def/class) | binary / numeric |
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from harness.itemcode import compile_item, parse_item

FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ \-]*$")
_RUST_META = set("\\.+*?()|[]{}^$#&-~")


def rust_escape(text: str) -> str:
    """Escape a literal for the polars (Rust) regex engine, which rejects some of Python's escapes."""
    return "".join("\\" + ch if ch in _RUST_META else ch for ch in text)


def _options(options: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
    extra = sorted(set(options) - allowed - {"after"})
    if extra:
        raise ValueError(f"unknown option(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed | {'after'}))})")
    return dict(options)


def _flag(options: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"option `{name}` must be true or false, got {value!r}")
    return value


def _field_name(value: Any, option: str) -> str:
    if not isinstance(value, str) or not FIELD_RE.match(value):
        raise ValueError(f"option `{option}` must be a header name such as Rating (letters, digits, space, _ or -), got {value!r}")
    return value


def section(texts: pl.Series, after: str | None) -> pl.Series:
    """The texts themselves, or (``after``) what follows the first ``<after>:`` line start; null when absent."""
    if after is None:
        return texts
    return texts.str.extract(rf"(?ims)^[ \t]*{rust_escape(after)}:[ \t]*(.*)\z", 1)


class RegexCount:
    """Number of (non-overlapping) regex matches, or 0/1 presence with ``binary``."""

    def __init__(self, pattern: str, binary: bool = False, after: str | None = None):
        self.pattern, self.binary, self.after = pattern, binary, after
        self.kind = "binary" if binary else "numeric"

    def extract(self, texts: pl.Series) -> pl.Series:
        """Count matches per text (Float64)."""
        counts = section(texts, self.after).str.count_matches(self.pattern).cast(pl.Float64)
        return (counts > 0).cast(pl.Float64) if self.binary else counts


def _after(options: Mapping[str, Any]) -> str | None:
    return _field_name(options["after"], "after") if options.get("after") is not None else None


def _checked_pattern(pattern: str) -> str:
    try:  # polars compiles the regex lazily: run it once so a bad pattern fails while loading the task
        pl.Series([""]).str.count_matches(pattern)
    except Exception as exc:  # polars raises ComputeError with a multi-line message
        detail = " ".join(str(exc).split()).split(" This error occurred")[0]
        raise ValueError(f"option `pattern` is not a valid regex: {detail[:200]}") from None
    return pattern


def regex_count(options: Mapping[str, Any], ctx: Any = None) -> RegexCount:
    """Factory for ``regex_count``."""
    options = _options(options, {"pattern", "binary", "ignore_case"})
    pattern = options.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"option `pattern` must be a non-empty regex string, got {pattern!r}")
    if _flag(options, "ignore_case"):
        pattern = "(?i)" + pattern
    return RegexCount(_checked_pattern(pattern), _flag(options, "binary"), _after(options))


def keyword_count(options: Mapping[str, Any], ctx: Any = None) -> RegexCount:
    """Factory for ``keyword_count``: whole-word occurrences of any of ``words``."""
    options = _options(options, {"words", "binary", "ignore_case"})
    words = options.get("words")
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"option `words` must be a non-empty list of words, got {words!r}")
    alternatives = "|".join(rust_escape(w.strip()) for w in sorted(set(words), key=len, reverse=True))
    flags = "(?i)" if _flag(options, "ignore_case", True) else ""
    return RegexCount(_checked_pattern(rf"{flags}\b(?:{alternatives})\b"), _flag(options, "binary"), _after(options))


class LengthWords:
    """Number of whitespace-separated words."""

    kind = "numeric"

    def __init__(self, after: str | None = None):
        self.after = after

    def extract(self, texts: pl.Series) -> pl.Series:
        """Word counts (Float64)."""
        return section(texts, self.after).str.count_matches(r"\S+").cast(pl.Float64)


class LengthLines:
    """Number of non-blank lines (trailing newlines and blank spacer lines do not count)."""

    kind = "numeric"

    def __init__(self, after: str | None = None):
        self.after = after

    def extract(self, texts: pl.Series) -> pl.Series:
        """Line counts (Float64)."""
        return section(texts, self.after).str.count_matches(r"(?m)^[^\n]*\S[^\n]*$").cast(pl.Float64)


def length_words(options: Mapping[str, Any], ctx: Any = None) -> LengthWords:
    """Factory for ``length_words``."""
    return LengthWords(_after(_options(options, set())))


def length_lines(options: Mapping[str, Any], ctx: Any = None) -> LengthLines:
    """Factory for ``length_lines``."""
    return LengthLines(_after(_options(options, set())))


@functools.lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # the lexicon ships in the package

    return SentimentIntensityAnalyzer()


class Vader:
    """VADER compound sentiment in [-1, 1], or its label (positive >= 0.05, negative <= -0.05, else neutral)."""

    def __init__(self, label: bool = False, after: str | None = None):
        self.label, self.after = label, after
        self.kind = "categorical" if label else "numeric"

    def extract(self, texts: pl.Series) -> pl.Series:
        """Score every text (VADER is rule-based per text, so this loops in Python)."""
        analyzer = _vader()
        scores = [None if t is None else analyzer.polarity_scores(t)["compound"] for t in section(texts, self.after).to_list()]
        compound = pl.Series(texts.name, scores, dtype=pl.Float64)
        if not self.label:
            return compound
        return pl.select(
            pl.when(compound >= 0.05).then(pl.lit("positive"))
            .when(compound <= -0.05).then(pl.lit("negative"))
            .when(compound.is_not_null()).then(pl.lit("neutral"))
            .otherwise(None)
        ).to_series().alias(texts.name)


def vader(options: Mapping[str, Any], ctx: Any = None) -> Vader:
    """Factory for ``vader``."""
    options = _options(options, {"label"})
    return Vader(_flag(options, "label"), _after(options))


class HeaderField:
    """The value of the first ``Field: value`` line: a number (``numeric``) or a category."""

    def __init__(self, field: str, numeric: bool, lowercase: bool, values: tuple[str, ...] | None):
        self.field, self.numeric, self.lowercase, self.values = field, numeric, lowercase, values
        self.kind = "numeric" if numeric else "categorical"

    def extract(self, texts: pl.Series) -> pl.Series:
        """Parse the field from every text; null when the line is absent or (numeric) not a number."""
        head = rf"(?im)^[ \t]*{rust_escape(self.field)}[ \t]*:[ \t]*"
        if self.numeric:
            return texts.str.extract(head + r"([-+]?\d+(?:\.\d+)?)", 1).cast(pl.Float64, strict=False)
        values = texts.str.extract(head + r"([^\n]*?)[ \t\r]*$", 1)
        if self.lowercase:
            values = values.str.to_lowercase()
        values = pl.select(pl.when(values.str.len_chars() > 0).then(values)).to_series()
        if self.values is not None:
            values = pl.select(pl.when(values.is_in(list(self.values))).then(values)).to_series()
        return values.alias(texts.name)


def header_field(options: Mapping[str, Any], ctx: Any = None) -> HeaderField:
    """Factory for ``header_field``."""
    options = _options(options, {"field", "numeric", "lowercase", "values"})
    if options.pop("after", None) is not None:
        raise ValueError("option `after` is not supported by header_field (the first matching line anywhere is used)")
    field = _field_name(options.get("field"), "field")
    lowercase = _flag(options, "lowercase")
    values = options.get("values")
    if values is not None:
        if not isinstance(values, list) or not values:
            raise ValueError(f"option `values` must be a non-empty list of categories, got {values!r}")
        values = tuple(str(v).lower() if lowercase else str(v) for v in values)
    return HeaderField(field, _flag(options, "numeric"), lowercase, values)


PYTHON_MEASURES = {
    "parses": "binary",  # ast.parse succeeds
    "compiles": "binary",  # the parsed tree also compiles (catches `return` outside a function...)
    "has_docstring": "binary",  # the module or any def/class in it has a docstring
    "has_type_hints": "binary",  # any annotated argument, return or assignment
    "lines": "numeric",  # non-blank lines that are not only a comment
    "branches": "numeric",  # if / elif / ternary / for / while / except / match case / comprehension if
    "returns": "numeric",  # return statements
    "calls": "numeric",  # call expressions
}
_FENCE_RE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def code_of(text: str) -> str:
    """The code in an item: the first fenced block when there is one, else the whole text."""
    match = _FENCE_RE.search(text)
    return match.group(1) if match else text


_DEFINITION_RE = re.compile(r"(?:async[ \t]+def|def|class)[ \t]|@")


def first_definition(code: str) -> str:
    """The code up to the end of its first top-level ``def``/``class`` (decorators and comments before it kept).

    A base model asked for one function often goes on writing more of them without the separator; the
    item is the first one, so what follows it (often cut off by the token limit) neither breaks its
    compilation nor adds to its lines. The definition ends at the first non-blank line back at column 0
    after its body started (a line starting with a closing bracket continues a multi-line signature).
    Code without a top-level definition is returned unchanged.
    """
    lines = code.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _DEFINITION_RE.match(line)), None)
    if start is None:
        return code
    i = start
    while i < len(lines) and lines[i].startswith("@"):  # decorators belong to the definition
        i += 1
    for j in range(i + 1, len(lines)):
        line = lines[j]
        if line.strip() and not line[0].isspace() and line[0] not in ")]}":
            return "".join(lines[:j])
    return code


@functools.lru_cache(maxsize=8192)  # the measures of one text are separate features: parse it once
def analyse_python(code: str) -> dict[str, float | None]:
    """All PYTHON_MEASURES for one piece of code; the non-binary ones are None when it does not parse."""
    try:
        tree = parse_item(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return {m: (0.0 if m in ("parses", "compiles") else None) for m in PYTHON_MEASURES}
    try:
        compile_item(tree)
        compiles = 1.0
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        compiles = 0.0
    docstring = hints = False
    branches = returns = calls = 0
    try:
        nodes = list(ast.walk(tree))
    except RecursionError:
        return {m: (1.0 if m == "parses" else compiles if m == "compiles" else None) for m in PYTHON_MEASURES}
    for node in nodes:
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            docstring = docstring or ast.get_docstring(node, clean=False) is not None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            args = a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x is not None]
            hints = hints or node.returns is not None or any(x.annotation is not None for x in args)
        elif isinstance(node, ast.AnnAssign):
            hints = True
        if isinstance(node, (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.match_case)):
            branches += 1
        elif isinstance(node, ast.comprehension):
            branches += len(node.ifs)
        elif isinstance(node, ast.Return):
            returns += 1
        elif isinstance(node, ast.Call):
            calls += 1
    lines = sum(1 for line in code.splitlines() if line.strip() and not line.strip().startswith("#"))
    return {"parses": 1.0, "compiles": compiles, "has_docstring": float(docstring), "has_type_hints": float(hints),
            "lines": float(lines), "branches": float(branches), "returns": float(returns), "calls": float(calls)}


class PythonAst:
    """One measure of the Python code in an item, computed with ``ast`` (the code is never run)."""

    def __init__(self, measure: str, require_compiles: bool = False, first_only: bool = False):
        self.measure, self.require_compiles, self.first_only = measure, require_compiles, first_only
        self.kind = PYTHON_MEASURES[measure]

    def extract(self, texts: pl.Series) -> pl.Series:
        """Measure every text; with ``require_compiles``, code that does not compile gives 0 (binary) or null."""
        out = []
        for text in texts.to_list():
            if text is None:
                out.append(None)
                continue
            code = code_of(text)
            result = analyse_python(first_definition(code) if self.first_only else code)
            value = result[self.measure]
            if self.require_compiles and result["compiles"] != 1.0:
                value = 0.0 if self.kind == "binary" else None
            out.append(value)
        return pl.Series(texts.name, out, dtype=pl.Float64)


def python_ast(options: Mapping[str, Any], ctx: Any = None) -> PythonAst:
    """Factory for ``python_ast``."""
    options = _options(options, {"measure", "require_compiles", "first_definition"})
    if options.pop("after", None) is not None:
        raise ValueError("option `after` is not supported by python_ast (the code is found in fences or the whole item)")
    measure = options.get("measure")
    if isinstance(measure, str) and measure.startswith("python_"):  # python_lines == lines, as task files may say
        measure = measure[len("python_"):]
    if measure not in PYTHON_MEASURES:
        raise ValueError(f"option `measure` must be one of {', '.join(PYTHON_MEASURES)}, got {measure!r}")
    return PythonAst(measure, _flag(options, "require_compiles"), _flag(options, "first_definition"))

