"""Load a task's reference table: source rows + ``ref_id`` + ``text`` (rendered exemplar) + ``feat_*``.

The content hash (``reference_hash``) is the sha256 of the source rows (after the source's own
rename/filter/limit, before anything is added), serialised one JSON object per row with sorted
keys, first 16 hex digits. It ties every result to the exact data it was measured against.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from harness.errors import DataError, HarnessError, PluginError, TaskError
from harness.factories import create_component
from harness.featurize import build_features, compute_features
from harness.paths import display_path
from harness.protocols import BuildContext
from harness.registry import Registries
from harness.taskspec import TaskSpec
from harness.tasks import template_env, template_variables

RESERVED = ("ref_id", "text", "world_draws")
FILE_SOURCES = ("csv", "parquet", "jsonl")


@dataclass(frozen=True)
class ReferenceTable:
    """The reference rows (source columns, ``ref_id``, ``text``, ``feat_*``) and their content hash."""

    frame: pl.DataFrame
    hash: str


def _where(task: TaskSpec) -> str:
    return display_path(task.source_path) if task.source_path else f"task {task.name}"


def resolve_options(task: TaskSpec) -> dict[str, Any]:
    """The source options with relative ``path`` / ``data_files`` taken from the task file's folder.

    A relative ``path`` is rewritten when the file exists there, or always for the file sources
    (so their "missing file" error shows where it looked); an ``hf`` name such as ``json`` is kept.
    """
    options = dict(task.reference.options)
    if task.source_path is None:
        return options
    base = task.source_path.parent

    def resolve(value: Any, always: bool) -> Any:
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            candidate = base / value
            if always or candidate.exists():
                return str(candidate)
        return value

    if "path" in options:
        options["path"] = resolve(options["path"], task.reference.type in FILE_SOURCES)
    files = options.get("data_files")
    if isinstance(files, str):
        options["data_files"] = resolve(files, True)
    elif isinstance(files, list):
        options["data_files"] = [resolve(f, True) for f in files]
    elif isinstance(files, dict):
        options["data_files"] = {k: resolve(v, True) if isinstance(v, str) else [resolve(f, True) for f in v]
                                 for k, v in files.items()}
    return options


def content_hash(frame: pl.DataFrame) -> str:
    """sha256 over the rows in a canonical serialisation (sorted-key JSON lines), first 16 hex."""
    digest = hashlib.sha256()
    for row in frame.iter_rows(named=True):
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def load_source(task: TaskSpec, registries: Registries, ctx: BuildContext) -> pl.DataFrame:
    """Build the task's reference source and return its rows (errors name the task file)."""
    where, kind = _where(task), task.reference.type
    if kind not in registries.reference_sources:
        known = ", ".join(registries.reference_sources.names()) or "none installed"
        raise TaskError(f"{where}: field `reference.type` names unknown reference source {kind!r} (known: {known})",
                        "use a known source or install the plugin that adds it")
    try:
        source = create_component(registries.reference_sources, kind, resolve_options(task), ctx, where=f"{where}: field `reference`")
    except PluginError as exc:  # bad options: a mistake in the task file
        raise TaskError(exc.message, exc.hint) from exc
    try:
        frame = source.load()
    except DataError as exc:
        raise DataError(f"{where}: field `reference`: {exc.message}", exc.hint) from exc
    except HarnessError:
        raise
    except Exception as exc:  # a third-party source must not crash with a traceback
        plugin = registries.reference_sources.get(kind).plugin
        raise PluginError(f"{where}: reference source {kind!r} (plugin {plugin}) failed: {type(exc).__name__}: {exc}",
                          "check the source's options and data") from exc
    if not isinstance(frame, pl.DataFrame):
        raise PluginError(f"reference source {kind!r} returned {type(frame).__name__}, not a polars DataFrame",
                          "its load() must return pl.DataFrame")
    if frame.height == 0:
        raise DataError(f"{where}: field `reference`: the reference table has no rows", "point the source at data with rows")
    clash = [c for c in frame.columns if c in RESERVED or c.startswith("feat_")]
    if clash:
        raise DataError(f"{where}: field `reference`: column {clash[0]!r} clashes with a column the harness adds",
                        f"rename it in the source, e.g. rename: {{{clash[0]}: {clash[0]}_src}}")
    return frame


def render_texts(task: TaskSpec, frame: pl.DataFrame) -> list[str]:
    """Render every row with ``render.exemplar``; template columns must exist and be non-null."""
    where = _where(task)
    used = template_variables(task.render.exemplar)
    missing = sorted(used - set(frame.columns))
    if missing:
        raise TaskError(f"{where}: field `render.exemplar` uses column {missing[0]!r}, which the reference data lacks "
                        f"(columns: {', '.join(frame.columns)})", "fix the template or the source's columns (see `rename`)")
    for column in sorted(used):
        nulls = frame[column].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0])
            raise DataError(f"{where}: field `reference`: row {row} has a null in column {column!r}, used by render.exemplar",
                            "filter those rows out of the source or fill the value")
    template = template_env().from_string(task.render.exemplar)
    texts = []
    for i, row in enumerate(frame.select(sorted(used)).iter_rows(named=True) if used else ({} for _ in range(frame.height))):
        try:
            texts.append(template.render(**row))
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise DataError(f"{where}: field `render.exemplar` fails on reference row {i}: {type(exc).__name__}: {exc}",
                            "fix the template or the data in that row") from None
    return texts


def load_reference(task: TaskSpec, registries: Registries, ctx: BuildContext) -> ReferenceTable:
    """Load, hash, render and featurize the task's reference data (no ``world_draws``: the runner adds them)."""
    frame = load_source(task, registries, ctx)
    digest = content_hash(frame)
    texts = pl.Series("text", render_texts(task, frame), dtype=pl.Utf8)
    features = build_features(task, registries, ctx)
    frame = frame.with_columns(pl.int_range(0, frame.height, dtype=pl.Int64).alias("ref_id"), texts)
    frame = frame.hstack(compute_features(features, frame["text"]))
    return ReferenceTable(frame=frame, hash=digest)
