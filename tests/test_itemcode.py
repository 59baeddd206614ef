"""Compiling a model's code: the compiler's warnings about the item never reach the terminal."""

from __future__ import annotations

import threading
import warnings

import pytest

from harness.extractors import analyse_python
from harness.itemcode import compile_item, parse_item
from harness.worlds.python_exec import _compiles

NOISY = 'def f():\n    x = (1, 2)(3)\n    return "\\d"\n'  # "'tuple' object is not callable", invalid escape


def test_plain_compile_warns_so_the_check_below_has_power():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compile(NOISY, "<item>", "exec")
    assert any(issubclass(w.category, SyntaxWarning) for w in seen)


def test_item_compiles_emit_no_warning_and_errors_still_raise():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        compile_item(NOISY)
        compile_item(parse_item(NOISY))
        assert _compiles(NOISY)
        analyse_python.cache_clear()
        assert analyse_python(NOISY)["compiles"] == 1.0
    assert seen == []
    with pytest.raises(SyntaxError):
        compile_item("def f(:\n")


def test_threads_leave_the_filters_as_they_found_them():
    before = list(warnings.filters)
    threads = [threading.Thread(target=lambda: [compile_item(NOISY) for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings.filters == before
