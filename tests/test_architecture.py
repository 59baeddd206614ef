"""The tree's shape, as issue 15's "Done when" states it, checked on the source text alone.

Each test enforces one requirement of that list: ``test_no_module_over_600_lines`` ("no module over
600 lines"), ``test_no_function_over_80_lines`` and ``test_no_function_over_8_parameters`` ("no
function over 80 lines or with more than 8 parameters"; the house rule, applied to methods and
nested functions too), ``test_no_import_cycle_among_harness_modules`` ("no import cycle"),
``test_architecture_packages_exist`` and ``test_builtin_modules_only_register`` ("the tree shows
the architecture: harness/run/, harness/stats/, harness/leaderboard/, harness/builtin/ (registration
only), harness/testing/, harness/cli/"), and ``test_stats_imports_no_higher_layer`` ("harness/stats/
is the one home of statistics", which the leaderboard, the CLI and the built-in plugins use, not the
other way round). The shipped code is ``harness/`` and the plugin packages (not their ``build/``
copies). Only :mod:`ast` is used: nothing under test is imported, so the checks take well under a second.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"
SHIPPED = (HARNESS, ROOT / "plugins/mimic-openai/mimic_openai", ROOT / "plugins/mimic-gguf/src/mimic_gguf",
           ROOT / "plugins/mimic-lmeval/mimic_lmeval")

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 8
MAX_BUILTIN_HELPER_LINES = 10
ARCHITECTURE_PACKAGES = ("run", "stats", "leaderboard", "builtin", "testing", "cli")
STATS_MUST_NOT_IMPORT = ("harness.builtin", "harness.leaderboard", "harness.cli", "harness.testing")


def _files(root: Path) -> list[Path]:
    """The Python files of one shipped package, without build/ copies."""
    return sorted(p for p in root.rglob("*.py") if "build" not in p.relative_to(root).parts)


def _shipped_files() -> list[Path]:
    missing = [str(r.relative_to(ROOT)) for r in SHIPPED if not r.is_dir()]
    assert not missing, f"shipped package folder(s) not found: {', '.join(missing)} (update SHIPPED in {Path(__file__).name})"
    return [p for root in SHIPPED for p in _files(root)]


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every def and async def (methods and nested functions too), with a dotted qualified name."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield prefix + child.name, child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _length(node: ast.AST) -> int:
    """Lines from the ``def`` line to the last line of the body (decorators not counted)."""
    return node.end_lineno - node.lineno + 1


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Positional-only, positional, keyword-only, *args and **kwargs, less a leading self or cls."""
    a = fn.args
    positional = [*a.posonlyargs, *a.args]
    count = len(positional) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
    return count - 1 if positional and positional[0].arg in ("self", "cls") else count


def _report(what: str, violations: list[str]) -> str:
    return f"{len(violations)} {what}:\n  " + "\n  ".join(violations)


def test_no_module_over_600_lines():
    too_long = []
    for path in _shipped_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{_where(path, 1)}: {lines} lines (limit {MAX_MODULE_LINES})")
    assert not too_long, _report(f"module(s) over {MAX_MODULE_LINES} lines", too_long)


def _shipped_functions() -> Iterator[tuple[Path, str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for path in _shipped_files():
        for name, fn in _functions(_tree(path)):
            yield path, name, fn


def test_no_function_over_80_lines():
    too_long = [f"{_where(path, fn.lineno)}: {name} has {_length(fn)} lines (limit {MAX_FUNCTION_LINES})"
                for path, name, fn in _shipped_functions() if _length(fn) > MAX_FUNCTION_LINES]
    assert not too_long, _report(f"function(s) over {MAX_FUNCTION_LINES} lines", too_long)


def test_no_function_over_8_parameters():
    too_wide = [f"{_where(path, fn.lineno)}: {name} has {_parameters(fn)} parameters (limit {MAX_PARAMETERS})"
                for path, name, fn in _shipped_functions() if _parameters(fn) > MAX_PARAMETERS]
    assert not too_wide, _report(f"function(s) with more than {MAX_PARAMETERS} parameters", too_wide)


# --- imports ---------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _harness_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in _files(HARNESS)}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at module level and inside functions and classes alike (a lazy import
    is still a dependency), except those under ``if TYPE_CHECKING:``: that block never runs, it
    exists to name a type in an annotation without depending on its module at import or run time."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _import_nodes(node)


def _imported(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of each name an import in ``module`` brings in: ``import a.b`` gives a.b,
    ``from a.b import c`` gives a.b.c where that is a module of harness, else a.b; relative imports
    are resolved against the module's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _import_nodes(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            child = f"{base}.{alias.name}"
            yield node.lineno, child if child in _harness_modules() else base


def _dependencies(module: str, path: Path) -> dict[str, int]:
    """The harness modules ``module`` depends on, each with the first line that imports it.

    Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so each package on the
    way is a dependency too, except the importer's own ancestor packages: Python initialises those
    before the importer's first line, whatever it imports, so ``harness.stats.x`` importing
    ``harness.stats`` (or ``from harness import hookimpl``) adds no edge. Counting it would make every
    package whose ``__init__`` imports one of its own modules a cycle, though no import order can fail."""
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    if path.name == "__init__.py":
        ancestors.add(module)
    found: dict[str, int] = {}
    for line, name in _imported(module, path):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in _harness_modules() and target not in ancestors and target != module:
                found.setdefault(target, line)
    return found


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycle_among_harness_modules():
    modules = _harness_modules()
    graph = {name: _dependencies(name, path) for name, path in modules.items()}
    cycles = []
    for component in _strongly_connected(graph):
        if len(component) > 1:
            members = set(component)
            edges = [f"{_where(modules[a], line)} {a} imports {b}" for a in component for b, line in sorted(graph[a].items()) if b in members]
            cycles.append(f"{' <-> '.join(component)}: " + "; ".join(edges))
    assert not cycles, _report("import cycle(s) among harness modules (limit: none)", cycles)


def test_stats_imports_no_higher_layer():
    found = []
    for name, path in _harness_modules().items():
        if name == "harness.stats" or name.startswith("harness.stats."):
            for line, imported in _imported(name, path):
                if any(imported == bad or imported.startswith(bad + ".") for bad in STATS_MUST_NOT_IMPORT):
                    found.append(f"{_where(path, line)}: {name} imports {imported} (harness.stats may not import {', '.join(STATS_MUST_NOT_IMPORT)})")
    assert not found, _report("import(s) from harness.stats into a higher layer", found)


# --- the packages ----------------------------------------------------------------------------------


def test_architecture_packages_exist():
    missing = [f"harness/{name}/__init__.py" for name in ARCHITECTURE_PACKAGES if not (HARNESS / name / "__init__.py").is_file()]
    assert not missing, _report("architecture package(s) missing (the tree must have all of harness/"
                                + "/, harness/".join(ARCHITECTURE_PACKAGES) + "/)", missing)


def _is_hookimpl(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "hookimpl") or (isinstance(target, ast.Attribute) and target.attr == "hookimpl")


def _is_constant(node: ast.stmt) -> bool:
    """``NAME = ...`` or ``NAME: T = ...`` with an upper-case name (``__all__`` too)."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    names = [t for t in targets if isinstance(t, ast.Name)]
    return bool(names) and len(names) == len(targets) and all(t.id == "__all__" or t.id.lstrip("_").isupper() for t in names)


def _registration_problem(node: ast.stmt) -> str | None:
    """Why a top-level statement of a builtin module is more than registration (None when it is not)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)) or _is_constant(node):
        return None
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return None  # the docstring
    if isinstance(node, ast.If) and _is_type_checking(node.test) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in node.body):
        return None
    if isinstance(node, ast.ClassDef):
        return f"class {node.name} (builtin modules define no classes: move it to the module it registers)"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        if any(_is_hookimpl(d) for d in node.decorator_list):
            return None
        if node.name.startswith("_") and _length(node) <= MAX_BUILTIN_HELPER_LINES:
            return None
        if node.name.startswith("_"):
            return f"{node.name} has {_length(node)} lines (limit {MAX_BUILTIN_HELPER_LINES} for a private factory helper)"
        return (f"{node.name} ({_length(node)} lines) is public and not a @hookimpl (allowed: @hookimpl functions and private"
                f" factory helpers of <= {MAX_BUILTIN_HELPER_LINES} lines)")
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        return f"top-level assignment to {ast.unparse(node.targets[0] if isinstance(node, ast.Assign) else node.target)} (constants only: UPPER_CASE names)"
    return f"top-level {type(node).__name__} statement (allowed: imports, constants, @hookimpl functions, tiny private helpers)"


def test_builtin_modules_only_register():
    found = []
    for path in _files(HARNESS / "builtin"):
        for node in _tree(path).body:
            problem = _registration_problem(node)
            if problem:
                found.append(f"{_where(path, node.lineno)}: {problem}")
    assert not found, _report("definition(s) in harness/builtin beyond registration", found)
