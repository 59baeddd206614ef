"""Reference sources (registered by the ``builtin-sources`` plugin): csv, parquet, jsonl, hf, python-stdlib.

Options shared by the table sources: ``path`` (a relative path is taken from the task file's
folder: ``harness.reference.load_reference`` resolves it), ``limit`` (keep the first N rows),
``filter`` ({column: value or [values]}: keep rows equal to / in them), ``rename`` ({old: new}),
applied in the order rename, filter, limit.

Size limit: the csv, jsonl and parquet sources refuse a file larger than ``MAX_REFERENCE_BYTES``
(512 MiB; override with the environment variable ``MIMIC_MAX_REFERENCE_BYTES``, in bytes) before
reading any of it, so a runaway file (or one enormous line) fails in one line instead of filling memory.

``hf`` calls ``datasets.load_dataset(path, name, split=..., data_files=..., revision=..., cache_dir=...)``
(needs the ``hf`` extra; a hub dataset needs the network, a local ``json``/``csv`` file does not).

``python-stdlib`` samples top-level functions from the installed Python standard library with
``ast``: files are visited in a seeded order and up to ``per_module`` functions of
``min_lines..max_lines`` lines are drawn from each until ``n`` are found. Columns: ``module``,
``name``, ``lineno``, ``source``, ``n_lines``, ``has_docstring``. Deterministic for a seed and a
Python version (the content hash tells versions apart).
"""

from __future__ import annotations

import ast
import json
import os
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from harness.errors import DataError

TABLE_OPTIONS = {"path", "limit", "filter", "rename"}
MAX_REFERENCE_BYTES = 512 * 2**20
MAX_BYTES_ENV = "MIMIC_MAX_REFERENCE_BYTES"


def max_reference_bytes() -> int:
    """The largest reference file the file sources read: ``$MIMIC_MAX_REFERENCE_BYTES`` or 512 MiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return MAX_REFERENCE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{MAX_BYTES_ENV}={raw!r} is not a positive number of bytes", f"unset {MAX_BYTES_ENV} or set it to e.g. 1073741824")
    return value


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()).split(" This error occurred")[0]
    return (text[:200] + "...") if len(text) > 200 else text


def _check_options(kind: str, options: Mapping[str, Any], allowed: set[str]) -> dict[str, Any]:
    extra = sorted(set(options) - allowed)
    if extra:
        raise ValueError(f"unknown option(s) {', '.join(extra)} for source {kind} (allowed: {', '.join(sorted(allowed))})")
    return dict(options)


def _positive_int(options: Mapping[str, Any], name: str, default: int | None) -> int | None:
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"option `{name}` must be a positive integer, got {value!r}")
    return value


def postprocess(frame: pl.DataFrame, options: Mapping[str, Any], label: str) -> pl.DataFrame:
    """Apply ``rename``, ``filter`` and ``limit``; an empty result is a DataError."""
    rename = options.get("rename") or {}
    if not isinstance(rename, Mapping):
        raise ValueError(f"option `rename` must be a mapping {{old: new}}, got {rename!r}")
    missing = [old for old in rename if old not in frame.columns]
    if missing:
        raise DataError(f"{label}: option `rename` names column {missing[0]!r}, which is not in the data "
                        f"(columns: {', '.join(frame.columns)})", "fix the column name")
    frame = frame.rename({str(k): str(v) for k, v in rename.items()})
    conditions = options.get("filter") or {}
    if not isinstance(conditions, Mapping):
        raise ValueError(f"option `filter` must be a mapping {{column: value}}, got {conditions!r}")
    for column, wanted in conditions.items():
        if column not in frame.columns:
            raise DataError(f"{label}: option `filter` names column {column!r}, which is not in the data "
                            f"(columns: {', '.join(frame.columns)})", "fix the column name")
        values = wanted if isinstance(wanted, list) else [wanted]
        try:
            frame = frame.filter(pl.col(column).is_in(pl.Series(values).cast(frame.schema[column]).implode()))
        except Exception as exc:  # polars: a value of the wrong type for the column
            raise DataError(f"{label}: option `filter.{column}` value {wanted!r} does not fit column type {frame.schema[column]}: "
                            f"{_first_line(exc)}", "write the value with the column's type") from None
    limit = _positive_int(options, "limit", None)
    if limit is not None:
        frame = frame.head(limit)
    if frame.height == 0:
        why = " after `filter`" if conditions else ""
        raise DataError(f"{label}: the reference table has no rows{why}", "point `path` at a file with data, or loosen the filter")
    return frame


def _locate_bad_text(path: Path) -> str | None:
    """Where a text file stops being UTF-8 (line number), or None when it decodes."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return f"line {line} has bytes that are not UTF-8 (byte {exc.start})"
    return None


def _diagnose_jsonl(path: Path) -> str:
    """The first line of a JSON-lines file that is not a JSON object."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})"
        if not isinstance(value, dict):
            return f"line {number} is a JSON {type(value).__name__}, not an object"
    return "rows have inconsistent types"


class FileSource:
    """A csv, parquet or jsonl table read with polars."""

    def __init__(self, kind: str, options: Mapping[str, Any]):
        options = _check_options(kind, options, TABLE_OPTIONS)
        path = options.get("path")
        if not isinstance(path, (str, Path)) or not str(path):
            raise ValueError(f"option `path` is required: the {kind} file to read")
        self.kind, self.path, self.options = kind, Path(path), options
        _positive_int(options, "limit", None)  # fail while building, before any reading

    def load(self) -> pl.DataFrame:
        """Read the file; missing, empty, non-UTF-8 or unparseable files raise DataError."""
        label = f"{self.kind} file {self.path}"
        if not self.path.is_file():
            raise DataError(f"{label} does not exist", "fix `reference.path` (relative paths start at the task file's folder)")
        size, limit = self.path.stat().st_size, max_reference_bytes()
        if size > limit:  # refuse before reading: polars would load it all into memory
            raise DataError(f"{label} is {size:,} bytes, larger than the {limit:,}-byte limit for reference files",
                            f"use a smaller file, or raise the limit with {MAX_BYTES_ENV}=BYTES if you have the memory")
        try:
            if self.kind == "csv":
                frame = pl.read_csv(self.path, infer_schema_length=10000)
            elif self.kind == "jsonl":
                frame = pl.read_ndjson(self.path, infer_schema_length=None)
            else:
                frame = pl.read_parquet(self.path)
        except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
            if self.kind == "parquet":
                raise DataError(f"{label} is not a readable Parquet file: {_first_line(exc)}", "rewrite it with polars or pyarrow") from None
            where = _locate_bad_text(self.path)
            if where is None and self.kind == "jsonl":
                where = _diagnose_jsonl(self.path)
            raise DataError(f"{label}: {where or _first_line(exc)}",
                            "save it as UTF-8" if where and "UTF-8" in where else f"fix the {self.kind} syntax") from None
        if frame.width == 0:
            raise DataError(f"{label} has no columns", f"write a header row / fields into the {self.kind} file")
        return postprocess(frame, self.options, label)


def csv_source(options: Mapping[str, Any], ctx: Any = None) -> FileSource:
    """Factory for ``csv``."""
    return FileSource("csv", options)


def parquet_source(options: Mapping[str, Any], ctx: Any = None) -> FileSource:
    """Factory for ``parquet``."""
    return FileSource("parquet", options)


def jsonl_source(options: Mapping[str, Any], ctx: Any = None) -> FileSource:
    """Factory for ``jsonl``."""
    return FileSource("jsonl", options)


class HFSource:
    """A Hugging Face ``datasets`` split, converted to polars."""

    def __init__(self, options: Mapping[str, Any]):
        self.options = _check_options("hf", options, TABLE_OPTIONS | {"name", "split", "data_files", "revision", "cache_dir"})
        if not isinstance(self.options.get("path"), str) or not self.options["path"]:
            raise ValueError("option `path` is required: a dataset name (e.g. yelp_review_full), a builder (json, csv) or a folder")
        if not isinstance(self.options.get("split", "train"), str):
            raise ValueError(f"option `split` must be a split name such as train, got {self.options['split']!r}")
        _positive_int(self.options, "limit", None)

    def load(self) -> pl.DataFrame:
        """Call ``datasets.load_dataset`` and apply rename/filter/limit."""
        try:
            import datasets
        except ImportError:
            raise DataError("reference source hf needs the `datasets` package", "pip install 'mimic-harness[hf]'") from None
        o = self.options
        split = o.get("split", "train")
        if o.get("limit") and not o.get("filter"):
            split = f"{split}[:{o['limit']}]"  # let datasets slice instead of materialising every row
        kwargs = {k: o[k] for k in ("data_files", "revision", "cache_dir") if o.get(k) is not None}
        label = f"hf dataset {o['path']}" + (f" ({o['name']})" if o.get("name") else "")
        try:
            ds = datasets.load_dataset(o["path"], o.get("name"), split=split, **kwargs)
            frame = pl.from_arrow(ds.with_format("arrow")[:])
        except Exception as exc:  # datasets raises many types (network, missing files, bad configs)
            raise DataError(f"{label} could not be loaded: {type(exc).__name__}: {_first_line(exc)}",
                            "check path/name/split; offline, point `path: json` and `data_files` at a local file") from None
        assert isinstance(frame, pl.DataFrame)
        return postprocess(frame, o, label)


def hf_source(options: Mapping[str, Any], ctx: Any = None) -> HFSource:
    """Factory for ``hf``."""
    return HFSource(options)


# encodings/ holds ~120 near-identical codec modules that would crowd the sample
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3", "turtledemo", "encodings"}


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's .py files (tests and third-party packages excluded), sorted."""
    root = root or Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]  # prune: site-packages alone can be huge
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class StdlibSource:
    """A seeded sample of top-level functions from the standard library's source."""

    def __init__(self, options: Mapping[str, Any]):
        o = _check_options("python-stdlib", options, {"n", "seed", "min_lines", "max_lines", "per_module", "modules", "root"})
        self.n = _positive_int(o, "n", 200)
        self.seed = o.get("seed", 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"option `seed` must be a non-negative integer, got {self.seed!r}")
        self.min_lines = _positive_int(o, "min_lines", 3)
        self.max_lines = _positive_int(o, "max_lines", 40)
        self.per_module = _positive_int(o, "per_module", 2)
        modules = o.get("modules")
        if modules is not None and (not isinstance(modules, list) or not all(isinstance(m, str) for m in modules)):
            raise ValueError(f"option `modules` must be a list of module names, got {modules!r}")
        self.modules = tuple(modules) if modules else None
        self.root = Path(o["root"]) if o.get("root") else Path(sysconfig.get_paths()["stdlib"])

    def _wanted(self, module: str) -> bool:
        return self.modules is None or any(module == m or module.startswith(m + ".") for m in self.modules)

    def load(self) -> pl.DataFrame:
        """Sample functions (see the module docstring)."""
        if not self.root.is_dir():
            raise DataError(f"python-stdlib: folder {self.root} does not exist", "remove option `root` to use the running Python's library")
        files = [p for p in stdlib_files(self.root) if self._wanted(_module_name(p, self.root))]
        rng = np.random.default_rng(self.seed)
        rows: list[dict[str, Any]] = []
        for index in rng.permutation(len(files)):
            path = files[int(index)]
            try:
                text = path.read_text(encoding="utf-8")
                tree = ast.parse(text)
            except (UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
                continue  # a few stdlib files are data or need another encoding: not candidates
            lines = text.splitlines()
            found = []
            for node in tree.body:
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.end_lineno is None:
                    continue
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                size = node.end_lineno - start + 1
                if self.min_lines <= size <= self.max_lines:
                    found.append((start, node))
            if not found:
                continue
            take = sorted(rng.choice(len(found), size=min(self.per_module, len(found)), replace=False))
            module = _module_name(path, self.root)
            for i in take:
                start, node = found[int(i)]
                source = "\n".join(line.rstrip() for line in lines[start - 1 : node.end_lineno])
                rows.append({"module": module, "name": node.name, "lineno": start, "source": source,
                             "n_lines": node.end_lineno - start + 1, "has_docstring": ast.get_docstring(node) is not None})
                if len(rows) == self.n:
                    return pl.DataFrame(rows, schema={"module": pl.Utf8, "name": pl.Utf8, "lineno": pl.Int64, "source": pl.Utf8,
                                                      "n_lines": pl.Int64, "has_docstring": pl.Boolean})
        raise DataError(f"python-stdlib: only {len(rows)} functions of {self.min_lines}-{self.max_lines} lines found, "
                        f"{self.n} requested", "lower `n`, raise `max_lines` or widen `modules`")


def stdlib_source(options: Mapping[str, Any], ctx: Any = None) -> StdlibSource:
    """Factory for ``python-stdlib``."""
    return StdlibSource(options)

