"""Durable file writes: a reader sees the old file or the new one, never a mix, and an OS error
(a full disk, a read-only folder) becomes one :class:`RunStoreError` saying what to do."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import polars as pl

from harness.errors import RunStoreError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        unlink_quietly(tmp)
        raise store_error(f"could not write {path}", exc) from exc


def atomic_write_frame(path: Path, frame: pl.DataFrame) -> None:
    """Write a Parquet file atomically (temp file, fsync, rename).

    The table is serialised in memory first and written with :func:`atomic_write_bytes`: polars
    reports a failed file write (a full disk) as a ComputeError that may not even name the OS
    error, and would leave its temporary file behind.
    """
    buffer = io.BytesIO()
    try:
        frame.write_parquet(buffer)
    except pl.exceptions.PolarsError as exc:
        text = " ".join(str(exc).split())[:200]
        raise RunStoreError(f"could not write {path}: {text}", "rerun with --debug and report it") from exc
    atomic_write_bytes(path, buffer.getvalue())


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (where the filesystem can fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    """Remove a file if it is there; a failure leaves it (it is a leftover, not data)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def store_error(what: str, exc: OSError) -> RunStoreError:
    """An OS error while writing a run, as one line with what to do about it."""
    if exc.errno == errno.ENOSPC:
        return RunStoreError(f"{what}: no space left on device", "free disk space, then run the same command again to resume")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunStoreError(f"{what}: permission denied", "choose a writable --out directory")
    return RunStoreError(f"{what}: {exc.strerror or exc}", "check the disk and the --out directory, then rerun to resume")
