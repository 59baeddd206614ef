"""The draw cache: sampled completions and world draws, shared by every run on a machine.

One SQLite file (WAL mode, so parallel runs can read while one writes) under ``results/cache/``
or ``$MIMIC_CACHE_DIR``. A completion's key is ``GenerationRequest.cache_key(model_id)``: model,
sampling parameters, prompt, sample index and seed. Two samples of one prompt therefore never
collapse into one entry (lm-eval's cache does that), and any change of a sampling parameter misses.
A world draw's key is (world name + options, text, seed). A log-likelihood's key is (model id,
context, continuation): the exact scores the field-probabilities phase asks for are cached like draws.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from harness.errors import RunStoreError
from harness.mimic import Completion, TokenLogprob

CACHE_FILE = "draws.sqlite"
T = TypeVar("T")
_CHUNK = 500  # SQLite's default limit on bound parameters is 999

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS world_draws (
    key TEXT PRIMARY KEY, world TEXT NOT NULL, value INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS loglikelihoods (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, value REAL NOT NULL, created REAL NOT NULL);
"""


def default_cache_dir(out_dir: str | Path = "results") -> Path:
    """``$MIMIC_CACHE_DIR`` when set, else ``<out_dir>/cache``."""
    env = os.environ.get("MIMIC_CACHE_DIR")
    return Path(env) if env else Path(out_dir) / "cache"


def world_id(name: str, options: Mapping[str, Any]) -> str:
    """A world's identity in cache keys: its registry name plus its options."""
    return name + json.dumps(dict(options), sort_keys=True, default=str, separators=(",", ":"))


def world_key(world: str, text: str, seed: int) -> str:
    """Cache key of one world draw: (world name+options, text, seed)."""
    material = json.dumps([world, text, int(seed)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def loglikelihood_key(model_id: str, context: str, continuation: str) -> str:
    """Cache key of one log P(continuation | context) under a model."""
    material = json.dumps([model_id, context, continuation], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def completion_to_json(completion: Completion) -> str:
    """Serialise a completion (logprobs included) for the cache."""
    data: dict[str, Any] = {
        "text": completion.text, "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
    }
    if completion.logprobs is not None:
        data["logprobs"] = [[t.token, t.logprob, t.top] for t in completion.logprobs]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def completion_from_json(text: str) -> Completion:
    """Inverse of :func:`completion_to_json`."""
    data = json.loads(text)
    logprobs = data.get("logprobs")
    return Completion(
        text=data["text"], finish_reason=data["finish_reason"], prompt_tokens=int(data.get("prompt_tokens", 0)),
        completion_tokens=int(data.get("completion_tokens", 0)),
        logprobs=tuple(TokenLogprob(t, float(lp), dict(top)) for t, lp, top in logprobs) if logprobs is not None else None,
    )


class DrawCache:
    """Completions and world draws on disk. Open with :meth:`open`; safe to share across processes."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._db = connection
        self.hits = 0
        self.misses = 0

    @classmethod
    def open(cls, cache_dir: str | Path | None = None) -> DrawCache:
        """Open (creating if needed) the cache in ``cache_dir`` (default: :func:`default_cache_dir`)."""
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = directory / CACHE_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; a power cut can lose the last commits,
            # which only costs re-generating them (the run log, not the cache, is the record).
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RunStoreError(f"cannot open the draw cache {path}: {exc}", "delete it, or pass --no-cache / set MIMIC_CACHE_DIR") from None
        except OSError as exc:
            raise RunStoreError(f"cannot create the cache directory {directory}: {exc.strerror}", "set MIMIC_CACHE_DIR to a writable directory") from None
        return cls(path, db)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> DrawCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- completions --------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        """The cached completions among ``keys`` (missing keys are absent from the result)."""
        found = self._lookup("completions", keys, completion_from_json)
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, model_id: str, items: Iterable[tuple[str, Completion]]) -> None:
        """Store completions under their keys (one transaction)."""
        self._store("completions", "model", model_id, [(key, completion_to_json(c)) for key, c in items])

    # -- world draws --------------------------------------------------------------------------
    def get_world(self, keys: Sequence[str]) -> dict[str, bool]:
        """Cached world draws among ``keys``."""
        return self._lookup("world_draws", keys, bool)

    def put_world(self, world: str, items: Iterable[tuple[str, bool]]) -> None:
        """Store world draws (key, outcome)."""
        self._store("world_draws", "world", world, [(key, int(bool(value))) for key, value in items])

    # -- log-likelihoods ---------------------------------------------------------------------
    def get_loglikelihoods(self, keys: Sequence[str]) -> dict[str, float]:
        """Cached log-likelihoods among ``keys``."""
        return self._lookup("loglikelihoods", keys, float)

    def put_loglikelihoods(self, model_id: str, items: Iterable[tuple[str, float]]) -> None:
        """Store log-likelihoods (key, value) of one model."""
        self._store("loglikelihoods", "model", model_id, [(key, float(value)) for key, value in items])

    def _lookup(self, table: str, keys: Sequence[str], convert: Callable[[Any], T]) -> dict[str, T]:
        found: dict[str, T] = {}
        for chunk in _chunks(list(dict.fromkeys(keys))):
            marks = ",".join("?" * len(chunk))
            for key, value in self._query(f"SELECT key, value FROM {table} WHERE key IN ({marks})", chunk):
                found[key] = convert(value)
        return found

    def _store(self, table: str, owner_column: str, owner: str, items: list[tuple[str, Any]]) -> None:
        now = time.time()
        rows = [(key, owner, value, now) for key, value in items]
        if rows:
            self._write(f"INSERT OR REPLACE INTO {table} (key, {owner_column}, value, created) VALUES (?, ?, ?, ?)", rows)

    # -- maintenance --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Entry counts (per model and per world) and the size on disk."""
        models = {m: n for m, n in self._query("SELECT model, COUNT(*) FROM completions GROUP BY model ORDER BY model", [])}
        worlds = {w: n for w, n in self._query("SELECT world, COUNT(*) FROM world_draws GROUP BY world ORDER BY world", [])}
        size = sum(p.stat().st_size for p in self.path.parent.glob(CACHE_FILE + "*") if p.is_file())
        return {"path": str(self.path), "completions": sum(models.values()), "world_draws": sum(worlds.values()),
                "models": models, "worlds": worlds, "bytes": size}

    def clear(self, model: str | None = None) -> int:
        """Delete entries (only one model's completions when ``model`` is given); returns how many."""
        if model is not None:
            return (self._write("DELETE FROM completions WHERE model = ?", [(model,)])
                    + self._write("DELETE FROM loglikelihoods WHERE model = ?", [(model,)]))
        removed = sum(self._write(f"DELETE FROM {table}", [()]) for table in ("completions", "loglikelihoods", "world_draws"))
        self._db.execute("VACUUM")
        return removed

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        try:
            return self._db.execute(sql, list(params)).fetchall()
        except sqlite3.Error as exc:
            raise RunStoreError(f"draw cache {self.path} could not be read: {exc}", "delete the cache file or pass --no-cache") from None

    def _write(self, sql: str, rows: list[tuple]) -> int:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count = self._db.executemany(sql, rows).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return count
        except sqlite3.Error as exc:
            hint = "free disk space" if "full" in str(exc).lower() else "delete the cache file or pass --no-cache"
            raise RunStoreError(f"draw cache {self.path} could not be written: {exc}", hint) from None


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
