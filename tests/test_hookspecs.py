"""Every hook is specified with a pytest-style docstring and documented for plugin authors."""

import inspect
import re
from pathlib import Path

import pytest

from harness import hookspecs
from harness.plugins import get_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hook_names():
    pm = get_plugin_manager(load_entrypoints=False)
    return sorted(name for name in dir(pm.hook) if not name.startswith("_"))


@pytest.mark.parametrize("name", hook_names())
def test_hookspec_docstring_is_pytest_style(name):
    spec = getattr(hookspecs, name)
    doc = inspect.getdoc(spec)
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary[0].isupper() and summary.endswith("."), f"{name}: summary must be one imperative sentence"
    for param in inspect.signature(spec).parameters:
        assert f":param {param}:" in doc, f"{name} does not document :param {param}:"


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_for_plugin_authors(name):
    headings = re.findall(r"^### (\w+)$", DOCS.read_text(), flags=re.M)
    assert name in headings, f"docs/plugins.md has no section for {name}"
