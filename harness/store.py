"""The run store: one directory per run with a manifest, a durable draw log, a lock and Parquet.

Layout (``docs/contracts.md``): ``results/runs/<run_id>/`` holds ``manifest.json`` (written
atomically), ``draws.jsonl`` (append-only; each line a JSON object ending in a ``crc32`` field
over the rest of the line), ``draws.parquet`` (the log compacted when a run ends), ``lock``.

Durability rule: a draw counts as done only once its line is fsync'd. A crash can leave at most
a torn tail (the lines of one unfinished append); reopening drops it. A bad line followed by a
good one cannot come from a crash, so it is reported instead of being silently skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from harness.durable import atomic_write_bytes, atomic_write_frame, store_error, unlink_quietly
from harness.errors import RunStoreError
from harness.records import MANIFEST_FILE, DrawKey, Manifest, read_manifest, write_manifest

LOG = "draws.jsonl"
PARQUET = "draws.parquet"
LOCK = "lock"

_CRC_TAIL = re.compile(rb',"crc32":(\d+)\}$')


def slug(text: str, limit: int = 40) -> str:
    """A filesystem-safe, lower-case fragment of ``text`` (model ids contain ``:``, ``/``, ``#``)."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (cleaned[:limit].rstrip("-")) or "x"


def make_run_id(task_name: str, task_version: int, model_id: str, seed: int, overrides: Mapping[str, Any], reference_hash: str) -> str:
    """Deterministic run id: the same evaluation (task, model, seed, plan, reference) finds the same run."""
    material = json.dumps(
        {"task": task_name, "version": task_version, "model": model_id, "seed": seed,
         "overrides": {k: v for k, v in sorted(overrides.items()) if v is not None}, "reference": reference_hash},
        sort_keys=True, default=str,
    )
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()[:8]
    model_part = slug(model_id.split("#", 1)[0].replace(":", "-"), 32)
    return f"{slug(task_name, 32)}-{model_part}-{digest}"


def encode_line(row: Mapping[str, Any]) -> bytes:
    """One log line: the row as compact JSON with a trailing ``crc32`` of the JSON before it."""
    if not row:
        raise ValueError("cannot log an empty row")
    payload = json.dumps(row, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    crc = zlib.crc32(payload)
    return payload[:-1] + b',"crc32":' + str(crc).encode() + b"}\n"


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The row of one log line (without its newline), or None when torn or its crc is wrong."""
    match = _CRC_TAIL.search(line)
    if not match:
        return None
    payload = line[: match.start()] + b"}"
    if zlib.crc32(payload) != int(match.group(1)):
        return None
    try:
        row = json.loads(payload)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


@dataclass
class LogScan:
    """What reading a draw log found: rows, valid byte length, and the torn tail dropped."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    valid_bytes: int = 0
    dropped_bytes: int = 0


def scan_log(path: Path) -> LogScan:
    """Parse ``draws.jsonl``; the invalid tail after the last good line is measured, not kept.

    Raises :class:`RunStoreError` when a bad line is followed by a good one (not a crash artefact).
    """
    scan = LogScan()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return scan
    pos, bad_at = 0, None
    while pos < len(data):
        end = data.find(b"\n", pos)
        complete = end >= 0
        line = data[pos:end] if complete else data[pos:]
        row = decode_line(line) if complete else None
        if row is None:
            if bad_at is None:
                bad_at = pos
        else:
            if bad_at is not None:
                lineno = data.count(b"\n", 0, bad_at) + 1
                raise RunStoreError(
                    f"{path} line {lineno} is corrupt but later lines are intact (not a crash artefact)",
                    "restore the file from a backup or delete the run directory and rerun",
                )
            scan.rows.append(row)
            scan.valid_bytes = end + 1
        pos = end + 1 if complete else len(data)
    scan.dropped_bytes = len(data) - scan.valid_bytes
    return scan


class RunStore:
    """An open, locked run directory. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self.recovered_bytes = 0  # size of a torn tail dropped on open
        self._lock_fd: int | None = None
        self._log_fd: int | None = None
        self._rows: list[dict[str, Any]] = []
        self._keys: set[tuple] = set()

    @classmethod
    def open(cls, run_dir: str | Path) -> RunStore:
        """Create or reopen a run directory: take the lock, then recover the draw log."""
        store = cls(Path(run_dir))
        try:
            store.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(f"cannot create run directory {store.run_dir}", exc) from exc
        store._acquire_lock()
        try:
            store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lock ---------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        path = self.run_dir / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(f"cannot open lock file {path}", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunStoreError(
                f"run {self.run_id} is in use by another `mimic run` (pid {holder})",
                "wait for it to finish, or stop it; then run the same command again to resume",
            ) from None
        # The pid is informational (for the message above); flock is what excludes.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Close the log and release the lock."""
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- manifest -----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        """Path of ``manifest.json``."""
        return self.run_dir / MANIFEST_FILE

    def has_manifest(self) -> bool:
        """True once a manifest has been written."""
        return self.manifest_path.exists()

    def read_manifest(self) -> Manifest:
        """The current manifest."""
        return read_manifest(self.run_dir)

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace the manifest atomically (temp file + fsync + rename)."""
        write_manifest(self.run_dir, manifest)

    # -- draw log -----------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """Path of ``draws.jsonl``."""
        return self.run_dir / LOG

    def _recover(self) -> None:
        scan = scan_log(self.log_path)
        if scan.dropped_bytes:
            try:
                os.truncate(self.log_path, scan.valid_bytes)
            except OSError as exc:
                raise store_error(f"cannot drop the torn tail of {self.log_path}", exc) from exc
            self.recovered_bytes = scan.dropped_bytes
        for row in scan.rows:
            key = DrawKey.of(row)
            if key not in self._keys:  # a shard merged twice must not double-count
                self._keys.add(key)
                self._rows.append(row)
        try:
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(f"cannot open {self.log_path} for appending", exc) from exc

    def done_keys(self) -> set[tuple]:
        """Keys of every durably recorded draw."""
        return set(self._keys)

    def __contains__(self, key: tuple) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict[str, Any]]:
        """Every recorded row (in log order)."""
        return list(self._rows)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows and fsync once; on return they are durable. Returns how many were new.

        On an OS error (a full disk) the partial write is cut off again, so the log stays exactly
        as it was, and a :class:`RunStoreError` says what happened.
        """
        if self._log_fd is None:
            raise RunStoreError(f"run store {self.run_id} is closed", "reopen it with RunStore.open")
        fresh = [dict(r) for r in rows if DrawKey.of(r) not in self._keys]
        if not fresh:
            return 0
        data = b"".join(encode_line(r) for r in fresh)
        start = os.lseek(self._log_fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._log_fd, view)
                view = view[written:]
            os.fsync(self._log_fd)
        except OSError as exc:
            try:
                os.ftruncate(self._log_fd, start)
            except OSError:
                pass  # the torn tail is dropped on the next open anyway
            raise store_error(f"could not append to {self.log_path}", exc) from exc
        for row in fresh:
            key = DrawKey.of(row)
            self._keys.add(key)
            self._rows.append(row)
        stale = self.run_dir / PARQUET
        if stale.exists():  # the Parquet copy must never lag the log
            unlink_quietly(stale)
        return len(fresh)

    # -- tables -------------------------------------------------------------------------------
    def frame(self, schema: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
        """The recorded draws as a DataFrame (columns cast to ``schema`` when given)."""
        return rows_to_frame(self._rows, schema)

    def compact(self, schema: Mapping[str, pl.DataType] | None = None, *, frame: pl.DataFrame | None = None) -> Path:
        """Write ``draws.parquet`` (atomically) from the log, or from ``frame`` when the caller built it already."""
        path = self.run_dir / PARQUET
        atomic_write_frame(path, frame if frame is not None else self.frame(schema))
        return path

    def write_frame(self, name: str, frame: pl.DataFrame) -> Path:
        """Write another table of the run (``estimates.parquet``...) atomically."""
        path = self.run_dir / name
        atomic_write_frame(path, frame)
        return path

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file of the run (``estimates.json``, ``summary.md``) atomically."""
        path = self.run_dir / name
        atomic_write_bytes(path, text.encode("utf-8"))
        return path


def rows_to_frame(rows: list[Mapping[str, Any]], schema: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Build a draws DataFrame from log rows; ``schema`` fixes dtypes (all-null columns included)."""
    if schema:
        columns = list(schema)
        extra = sorted({k for r in rows for k in r} - set(columns))
        data = {c: [r.get(c) for r in rows] for c in [*columns, *extra]}
        frame = pl.DataFrame({c: pl.Series(c, data[c], dtype=schema[c], strict=False) for c in columns})
        if extra:
            frame = frame.hstack(pl.DataFrame({c: data[c] for c in extra}, infer_schema_length=None))
        return frame
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows, infer_schema_length=None)


def load_draws(run_dir: str | Path, schema: Mapping[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Read a run's draws without locking it: Parquet when present (it never lags), else the log."""
    run_dir = Path(run_dir)
    parquet = run_dir / PARQUET
    if parquet.exists():
        return pl.read_parquet(parquet)
    if schema is None:
        try:
            schema = schema_from_manifest(read_manifest(run_dir))
        except RunStoreError:
            schema = None
    seen: set[tuple] = set()
    rows = []
    for row in scan_log(run_dir / LOG).rows:
        if DrawKey.of(row) not in seen:
            seen.add(DrawKey.of(row))
            rows.append(row)
    return rows_to_frame(rows, schema)


_DTYPES = {"Utf8": pl.Utf8, "String": pl.Utf8, "Int64": pl.Int64, "Float64": pl.Float64, "Boolean": pl.Boolean,
           "List(Int64)": pl.List(pl.Int64), "List(Boolean)": pl.List(pl.Boolean)}


def schema_to_json(schema: Mapping[str, pl.DataType]) -> dict[str, str]:
    """A draws schema as plain names (stored in the manifest so an unfinished log reads typed)."""
    out = {}
    for name, dtype in schema.items():
        text = str(dtype).replace("String", "Utf8")
        if text not in _DTYPES:
            raise ValueError(f"column {name}: dtype {dtype} is not a draws dtype")
        out[name] = text
    return out


def schema_from_manifest(manifest: Manifest) -> dict[str, pl.DataType] | None:
    """The draws schema recorded in a manifest (``draws_schema``), if any."""
    raw = manifest.draws_schema
    if not raw:
        return None
    return {name: _DTYPES[text] for name, text in raw.items() if text in _DTYPES}
