"""The run's records, typed and declared once: the draws table and its key, the estimates table and
its notes, and the run manifest with its one reader and one writer.

Everything that writes or reads a run directory (the run package, the store, the leaderboard, the
CLI) takes these names from here, so a column or a manifest field is declared in one place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from harness.durable import atomic_write_bytes
from harness.errors import RunStoreError
from harness.modelspec import ModelSpec
from harness.stats.flags import flags_of

# -- draws ------------------------------------------------------------------------------------------
DRAWS_BASE_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "task": pl.Utf8, "task_version": pl.Int64, "pool": pl.Utf8, "context_id": pl.Int64,
    "sample_index": pl.Int64, "seed": pl.Int64, "model": pl.Utf8, "n_exemplars": pl.Int64,
    "exemplar_ids": pl.List(pl.Int64), "prompt_hash": pl.Utf8, "text": pl.Utf8, "completion": pl.Utf8,
    "finish_reason": pl.Utf8, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "cached": pl.Boolean,
    # how the context was shown (completion | chat | chat+prefill: harness.chat.renderings), and whether the
    # draw has an item (false: a chat answer with no block in the item format; text and features null)
    "rendering": pl.Utf8, "item_parsed": pl.Boolean,
}
DRAWS_SORT = ["pool", "n_exemplars", "context_id", "sample_index"]  # plan order of the draws table


class DrawKey(NamedTuple):
    """What identifies a draw within a run (a plain tuple too: equal and hashed as one)."""

    task: str
    pool: str
    n_exemplars: int
    context_id: int
    sample_index: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> DrawKey:
        """The key of a draws row (a log line or a table row)."""
        return cls(*(row[c] for c in DRAW_KEY_COLUMNS))


DRAW_KEY_COLUMNS: tuple[str, ...] = DrawKey._fields

# -- estimates --------------------------------------------------------------------------------------
# The run columns the run adds to every estimate row (the leaderboard can fill them from the manifest).
RUN_COLUMNS = ("run_id", "model", "model_name", "task", "task_version", "reference_hash")
RUN_COLUMN_TYPES: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "model": pl.Utf8, "model_name": pl.Utf8, "task": pl.Utf8, "task_version": pl.Int64,
    "reference_hash": pl.Utf8,
}
# What an estimator's rows become (``note`` is a JSON object as text).
ESTIMATE_SCHEMA: dict[str, pl.DataType] = {
    "estimator": pl.Utf8, "condition": pl.Utf8, "feature": pl.Utf8, "point": pl.Float64, "lower": pl.Float64,
    "upper": pl.Float64, "n": pl.Int64, "method": pl.Utf8, "note": pl.Utf8,
}
# A run's ``estimates.parquet``: the run columns, then the estimator's.
ESTIMATES_SCHEMA: dict[str, pl.DataType] = {**RUN_COLUMN_TYPES, **ESTIMATE_SCHEMA}


def json_safe(value: Any) -> Any:
    """A JSON-ready copy: NaN and infinities become null (JSON has neither), tuples become lists,
    mapping keys become text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def note_dict(note: Any) -> dict[str, Any]:
    """The ``note`` column's value (a JSON object as text, or already a dict) as a dict; anything else is empty."""
    if isinstance(note, EstimateNote):
        return note.to_dict()
    if isinstance(note, Mapping):
        return dict(note)
    try:
        value = json.loads(note) if note else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class EstimateNote:
    """An estimate's ``note``, parsed: the fields every reader looks at, and the rest as written."""

    flags: tuple[str, ...] = ()  # the note's own ``flags`` (legacy boolean flags stay in ``extra``)
    no_interval: str | None = None  # why the interval is withheld, in words
    contexts_needed: int | float | None = None  # contexts an interval would need (a mean when pooled)
    extra: Mapping[str, Any] = field(default_factory=dict)  # every other key, in the order written

    @classmethod
    def parse(cls, note: Any) -> EstimateNote:
        """Parse the ``note`` column (JSON text, a dict, or missing) once."""
        if isinstance(note, EstimateNote):
            return note
        raw = note_dict(note)
        flags = raw.pop("flags", None)
        reason = raw.pop("no_interval", None)
        return cls(tuple(str(f) for f in flags) if isinstance(flags, (list, tuple)) else (),
                   str(reason) if reason else None, raw.pop("contexts_needed", None), raw)

    def all_flags(self, method: str | None = None) -> list[str]:
        """Every flag that qualifies the estimate: the note's, its legacy boolean keys', and a
        by-construction ``method``'s (:func:`harness.stats.flags.flags_of`)."""
        return flags_of(self.to_dict(), method)

    def number(self, key: str) -> float | None:
        """A numeric note field as a finite float; None when absent, not a number, NaN or infinite."""
        value = self.extra.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        """The note as a JSON-ready dict (what ``estimates.json`` and the leaderboard document hold)."""
        out = dict(self.extra)
        if self.flags:
            out["flags"] = list(self.flags)
        if self.no_interval:
            out["no_interval"] = self.no_interval
        if self.contexts_needed is not None:
            out["contexts_needed"] = self.contexts_needed
        return out


def estimates_json(estimates: pl.DataFrame) -> str:
    """``estimates.json``: the rows as a JSON list; ``note`` decoded; NaN/inf become null (strict JSON)."""
    rows = estimates.to_dicts()
    for row in rows:
        if isinstance(row.get("note"), str):
            try:
                row["note"] = json.loads(row["note"])
            except ValueError:
                pass
    return json.dumps(json_safe(rows), indent=2, ensure_ascii=False, default=str) + "\n"


# -- manifest ---------------------------------------------------------------------------------------
MANIFEST_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
FIELD_PROBS_FILE = "field_probs.parquet"  # optional run table: the exact header-field distributions (run/fieldprobs.py)


@dataclass
class ManifestModel:
    """The model block of a manifest: the public spec (no secret option) and the ids it makes."""

    backend: str | None = None
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    model_id: str | None = None
    display_name: str | None = None

    @property
    def name(self) -> str | None:
        """The name shown for the model: its display name, else its id."""
        return self.display_name or self.model_id

    def spec(self) -> dict[str, Any]:
        """The public model spec: backend, model, options, label."""
        return {"backend": self.backend, "model": self.model, "options": self.options, "label": self.label}

    def model_spec(self) -> ModelSpec:
        """The spec to open the model again (a secret option was never stored: pass the spec again for it)."""
        return ModelSpec(self.backend or "", self.model or "", dict(self.options or {}), self.label)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ManifestModel:
        """Read a manifest's ``model`` object (missing keys are None, unknown keys are dropped)."""
        data = data or {}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data and data[f.name] is not None})

    def to_dict(self) -> dict[str, Any]:
        """The ``model`` object as written (every key, in spec order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Manifest:
    """A run's ``manifest.json``: what was run, with which components, how far it got, at what cost."""

    run_id: str | None = None
    status: str | None = None  # running | complete | interrupted | budget | failed
    harness_version: str | None = None
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> version
    components: list[dict[str, Any]] = field(default_factory=list)  # kind, name, plugin, version
    model: ManifestModel = field(default_factory=ManifestModel)
    task: dict[str, Any] = field(default_factory=dict)  # TaskSpec.to_dict()
    task_name: str | None = None
    task_version: int | None = None
    reference_hash: str | None = None
    seed: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # the plan options the user set
    plan: dict[str, Any] = field(default_factory=dict)  # pools, contexts, samples_per_context, n_exemplars...
    counts: dict[str, int] = field(default_factory=dict)  # planned, done, cached
    usage: dict[str, Any] = field(default_factory=dict)  # tokens and cost, in total and per pool
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per phase
    draws_schema: dict[str, str] = field(default_factory=dict)  # column -> dtype name
    created: str | None = None
    finished: str | None = None
    calls: dict[str, Any] | None = None  # call statistics, once generation ran
    cpu_seconds: dict[str, float] | None = None  # CPU seconds per phase, once the run ended
    executor: dict[str, Any] | None = None  # --executor ray: address, workers, shards, resubmitted (absent: local)
    estimation: dict[str, Any] | None = None  # estimators (in order) and n_boot, once estimates are written
    # Sampling over all invocations that called the model: wall seconds of their generate and field
    # probability phases, their model calls, and the machine of the last one (harness.machine).
    sampling: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this harness does not know, kept as read

    _OPTIONAL = ("calls", "cpu_seconds", "executor", "estimation", "sampling")  # written only once known

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Read a manifest's JSON object (``schema_version`` is checked by :func:`read_manifest`, not here)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["model"] = ManifestModel.from_dict(data.get("model") if isinstance(data.get("model"), Mapping) else None)
        extra = {k: v for k, v in data.items() if k not in known and k != "schema_version"}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (``schema_version`` first)."""
        out: dict[str, Any] = {"schema_version": MANIFEST_SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (f.name in self._OPTIONAL and value is None):
                continue
            out[f.name] = value.to_dict() if isinstance(value, ManifestModel) else value
        return {**out, **self.extra}


def read_manifest(run_dir: str | Path) -> Manifest:
    """Read a run's manifest (no lock needed: it is only ever replaced atomically); checks its schema version."""
    path = Path(run_dir) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunStoreError(f"{run_dir} has no {MANIFEST_FILE}", "check the run id with `ls results/runs`") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunStoreError(f"{path} is not readable JSON: {exc}", "restore it or delete the run directory") from None
    if not isinstance(data, dict):
        raise RunStoreError(f"{path} is not a run manifest (not a JSON object)", "point at run directories written by `mimic run`")
    if data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise RunStoreError(
            f"{path} has schema_version {data.get('schema_version')!r}; this harness reads {MANIFEST_SCHEMA_VERSION}",
            "use the harness version that wrote it, or rerun",
        )
    return Manifest.from_dict(data)


def write_manifest(run_dir: str | Path, manifest: Manifest) -> Path:
    """Replace a run's manifest atomically (temp file + fsync + rename); returns its path."""
    path = Path(run_dir) / MANIFEST_FILE
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False, default=str, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
