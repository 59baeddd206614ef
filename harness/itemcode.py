"""Compiling a model's code without letting the compiler's warnings reach the user's terminal.

A mimic's code draws the compiler's SyntaxWarnings ("'tuple' object is not callable", invalid
escape sequences). They are about the item, not the run, and printed mid-progress they read as
the harness's own warnings. ``warnings.catch_warnings`` swaps the process's filter list and is not
thread-safe (features and worlds compile from worker threads), so every compile of item code goes
through one lock.
"""

from __future__ import annotations

import ast
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType

_LOCK = threading.Lock()


@contextmanager
def _silenced() -> Iterator[None]:
    with _LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def compile_item(source: str | ast.Module, filename: str = "<item>") -> CodeType:
    """``compile(source, filename, "exec")`` with the compiler's warnings silenced; errors still raise."""
    with _silenced():
        return compile(source, filename, "exec", dont_inherit=True)


def parse_item(source: str) -> ast.Module:
    """``ast.parse(source)`` with the parser's warnings silenced; a SyntaxError still raises."""
    with _silenced():
        return ast.parse(source)
