"""World ``python-exec``: does the item's function run without raising on a random input?

Precisely: the item's function is its first top-level ``def``. When the whole text
parses as Python, the whole text runs (so its imports and helpers exist) and that function is
called; otherwise the ``def`` block alone is cut out of the text (prose around code). No ``def``,
or a block that does not compile, is R=0 on every draw. A draw calls the function once on inputs
drawn from the draw's seed (see :func:`draw_call`) in :mod:`harness.sandbox`; R=1 when the call
returns without raising within the limits. Anything else (exception, timeout, memory, output
over the cap, forbidden operation) is R=0.
"""

from __future__ import annotations

import ast
import asyncio
import os
import random
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from harness.errors import TaskError
from harness.itemcode import compile_item, parse_item
from harness.protocols import BuildContext
from harness.sandbox import Call, CallResult, SandboxLimits, SandboxPool
from harness.worlds import check_options

_DEF_LINE = re.compile(r"^def\s+[A-Za-z_]\w*\s*\(", re.M)
_ALPHABET = string.ascii_letters + string.digits + " _-"
# Mixed inputs: how often each kind of value is drawn for a parameter.
_MIXED_KINDS = (("int", 0.30), ("float", 0.15), ("str", 0.20), ("list", 0.25), ("none", 0.10))
_TYPED = {"int": "int", "float": "float", "str": "str", "bool": "bool", "list": "list", "List": "list",
          "Sequence": "list", "Iterable": "list", "None": "none"}


def _parses(source: str) -> ast.Module | None:
    try:
        return parse_item(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _first_def(tree: ast.Module) -> ast.FunctionDef | None:
    return next((node for node in tree.body if isinstance(node, ast.FunctionDef)), None)


def extract_function(text: str) -> tuple[str, ast.FunctionDef] | None:
    """Return (source to run, the function's AST node) for an item's text, or None when it has
    no top-level ``def`` that compiles."""
    tree = _parses(text)
    if tree is not None and (node := _first_def(tree)) is not None and _compiles(text):
        return text, node
    match = _DEF_LINE.search(text)
    if match is None:
        return None
    lines = text[match.start():].splitlines()
    # The block ends before a later line at column 0; a signature closed at column 0 ("):")
    # may need a later cut, so try each cut in turn and keep the first that compiles.
    cuts = [i for i in range(1, len(lines)) if lines[i].strip() and not lines[i][0].isspace()][:20] + [len(lines)]
    for cut in cuts:
        block = "\n".join(lines[:cut]) + "\n"
        tree = _parses(block)
        if tree is not None and (node := _first_def(tree)) is not None and _compiles(block):
            return block, node
    return None


def _compiles(source: str) -> bool:
    try:
        compile_item(source)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def _value(rng: random.Random, kind: str) -> Any:
    if kind == "int":
        return rng.randint(-20, 100)
    if kind == "float":
        return round(rng.uniform(-100.0, 100.0), 3)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "str":
        return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 8)))
    if kind == "list":
        element = "int" if rng.random() < 0.7 else "str"
        return [_value(rng, element) for _ in range(rng.randint(0, 5))]
    if kind == "none":
        return None
    return _value(rng, rng.choices([k for k, _ in _MIXED_KINDS], [w for _, w in _MIXED_KINDS])[0])


def _annotated_kind(annotation: ast.expr | None) -> str:
    """The kind an annotation asks for (``int``, ``list[str]`` -> list...), or ``mixed``."""
    if isinstance(annotation, ast.Name):
        return _TYPED.get(annotation.id, "mixed")
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return "none"
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        return _TYPED.get(annotation.value.id, "mixed")
    return "mixed"


def draw_call(node: ast.FunctionDef, seed: int, inputs: str = "mixed") -> Call:
    """The call a draw makes: one value per required parameter, drawn with ``random.Random(seed)``.

    ``mixed`` draws each value's kind at random (ints, floats, short strings, small lists, None);
    ``typed`` follows simple annotations (``int``, ``str``, ``list[int]``...) and mixes elsewhere.
    Parameters with defaults, ``*args`` and ``**kwargs`` get nothing.
    """
    rng = random.Random(seed)
    args = node.args
    positional = args.posonlyargs + args.args
    required = positional[: len(positional) - len(args.defaults)]
    keyword_only = [a for a, default in zip(args.kwonlyargs, args.kw_defaults) if default is None]

    def one(arg: ast.arg) -> Any:
        return _value(rng, _annotated_kind(arg.annotation) if inputs == "typed" else "mixed")

    return Call(args=[one(a) for a in required], kwargs={a.arg: one(a) for a in keyword_only}, seed=seed)


class PythonExecWorld:
    """R = the item's function runs without raising on a random input. All draws of one item go to
    one sandbox server in one request; each draw is its own forked, limited process."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), inputs: str = "mixed", concurrency: int = 2):
        self.limits = limits
        self.inputs = inputs
        self.concurrency = concurrency
        self._pool = SandboxPool(limits, size=concurrency)  # servers start on first use, then stay

    async def outcomes(self, texts: Sequence[str], seeds: Sequence[int]) -> list[CallResult]:
        """One call result (ok, reason) per (text, seed); the same text's seeds share a sandbox."""
        if len(texts) != len(seeds):
            raise ValueError(f"{len(texts)} texts but {len(seeds)} seeds")
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            by_text.setdefault(text, []).append(i)
        out: list[CallResult | None] = [None] * len(texts)

        async def one(text: str, where: list[int]) -> None:
            found = extract_function(text)
            if found is None:
                for i in where:
                    out[i] = CallResult(False, "no-function")
                return
            source, node = found
            calls = [draw_call(node, seeds[i], self.inputs) for i in where]
            run = await self._pool.run(source, node.name, calls)
            for i, result in zip(where, run.results):
                out[i] = result

        await asyncio.gather(*(one(text, where) for text, where in by_text.items()))
        return [r for r in out if r is not None]

    async def draw(self, texts: Sequence[str], seeds: Sequence[int]) -> list[bool]:
        """Draw R once per (text, seed)."""
        return [r.ok for r in await self.outcomes(texts, seeds)]

    async def aclose(self) -> None:
        """Stop the sandbox servers (they also stop when the process exits)."""
        await asyncio.to_thread(self._pool.close)


def create_python_exec(options: Mapping[str, Any], ctx: BuildContext) -> PythonExecWorld:
    """Factory: options ``timeout_s`` (2), ``memory_mb`` (256), ``inputs`` (mixed|typed), ``concurrency``."""
    opts = check_options(options, {"timeout_s", "memory_mb", "inputs", "concurrency"}, "python-exec")
    timeout_s, memory_mb = float(opts.get("timeout_s", 2.0)), int(opts.get("memory_mb", 256))
    inputs = str(opts.get("inputs", "mixed"))
    concurrency = int(opts.get("concurrency", max(1, min(4, os.cpu_count() or 1))))
    if not 0 < timeout_s <= 600 or memory_mb < 64 or concurrency < 1:
        raise TaskError("world python-exec: timeout_s must be in (0, 600], memory_mb >= 64, concurrency >= 1",
                        "fix the world options in the task file")
    if inputs not in ("mixed", "typed"):
        raise TaskError(f"world python-exec: inputs must be 'mixed' or 'typed', not {inputs!r}", "set inputs: mixed")
    return PythonExecWorld(SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb), inputs, concurrency)
