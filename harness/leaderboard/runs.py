"""Find run directories, read their tables, and merge them into :class:`LeaderboardData`.

A run directory holds ``manifest.json`` and an estimates table (``estimates.parquet``, else
``estimates.json``); ``draws.parquet`` (else ``draws.jsonl``) and ``reference.parquet`` are read
when present, for charts, example outputs and paired comparisons. See docs/contracts.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from harness.errors import DataError, RunStoreError, UsageError
from harness.modelspec import is_secret_option
from harness.protocols import LeaderboardData
from harness.records import ESTIMATES_SCHEMA, MANIFEST_FILE, Manifest, read_manifest

# Columns an estimator must write; the run columns can be filled in from the manifest.
_ESTIMATOR_COLUMNS = ("condition", "estimator", "feature", "point", "lower", "upper")
_REDACTED = "[redacted]"

Say = Callable[[str], None]


def scrub_secrets(value: Any) -> Any:
    """A copy of manifest data with every secret-looking option dropped, at any depth.

    Writers use ``ModelSpec.public()`` already; this guards against a manifest written by an older
    or third-party runner that smuggled an ``api_key`` into options, components or task options.
    """
    if isinstance(value, dict):
        return {k: scrub_secrets(v) for k, v in value.items() if not is_secret_option(str(k))}
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value]
    return value


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each is a run dir (has manifest.json) or a parent of runs."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"results path {path} does not exist", "pass run directories or a folder that contains them (e.g. results/runs)")
        if path.is_file():
            raise UsageError(f"results path {path} is a file, not a run directory", "pass the folder that holds manifest.json")
        if (path / MANIFEST_FILE).is_file():
            found.append(path)
            continue
        found.extend(sorted(m.parent for m in path.rglob(MANIFEST_FILE)))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        shown = ", ".join(str(p) for p in paths)
        raise DataError(f"no run directories (with a manifest.json) under {shown}", "run `mimic run` first, or point at results/runs")
    return unique


def run_manifest(run_dir: Path) -> Manifest:
    """The run's manifest, secrets scrubbed; a broken or foreign file is a one-line error naming it."""
    try:
        manifest = read_manifest(run_dir)
    except RunStoreError as exc:  # to the leaderboard a broken run is bad input: a usage error, exit 2
        raise DataError(exc.message, exc.hint) from None
    if manifest.run_id is None:
        raise DataError(f"{run_dir / MANIFEST_FILE} is not a run manifest (no run_id)", "point at run directories written by `mimic run`")
    return scrubbed(manifest)


def scrubbed(manifest: Manifest) -> Manifest:
    """A copy of ``manifest`` without secret-looking options (:func:`scrub_secrets`)."""
    return Manifest.from_dict(scrub_secrets(manifest.to_dict()))


def _read_estimates_json(path: Path) -> pl.DataFrame:
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = data.get("estimates", data.get("rows")) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError("expected a list of row objects")
    for row in rows:
        if isinstance(row.get("note"), (dict, list)):
            row["note"] = json.dumps(row["note"], sort_keys=True)
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def read_estimates(run_dir: Path, manifest: Manifest) -> pl.DataFrame | None:
    """The run's estimates in the contract's column types, or None when the run wrote none yet."""
    parquet, js = run_dir / "estimates.parquet", run_dir / "estimates.json"
    try:
        if parquet.is_file():
            frame = pl.read_parquet(parquet)
        elif js.is_file():
            frame = _read_estimates_json(js)
        else:
            return None
    except Exception as exc:  # corrupt parquet/JSON: polars and json raise many types
        raise DataError(f"estimates of run {run_dir.name} are unreadable: {type(exc).__name__}: {exc}", "re-run the estimation, or leave the run out") from None
    missing = [c for c in _ESTIMATOR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"estimates of run {run_dir.name} lack columns {missing}", "the run was written by an incompatible harness; re-run it")
    defaults = {
        "run_id": manifest.run_id, "model": manifest.model.model_id, "model_name": manifest.model.name,
        "task": manifest.task_name, "task_version": manifest.task_version,
        "reference_hash": manifest.reference_hash, "n": None, "method": "", "note": "{}",
    }
    for column, default in defaults.items():
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(default).alias(column))
    frame = frame.with_columns(pl.col(c).cast(t, strict=False) for c, t in ESTIMATES_SCHEMA.items())
    return frame.select(list(ESTIMATES_SCHEMA)).with_columns(pl.col("note").fill_null("{}"), pl.col("method").fill_null(""))


def read_draws(run_dir: Path) -> pl.DataFrame | None:
    """The run's draws (Parquet, else the run store's checked log), or None when absent or unreadable."""
    from harness.store import load_draws  # the store owns the log format (crc32 lines, torn tails)

    if not ((run_dir / "draws.parquet").is_file() or (run_dir / "draws.jsonl").is_file()):
        return None
    try:
        frame = load_draws(run_dir)
    except Exception:
        return None  # draws only feed charts, examples and paired intervals: never block the leaderboard
    return frame if frame.height else None


def read_reference(run_dir: Path) -> pl.DataFrame | None:
    """The reference table the run used, when it was saved."""
    path = run_dir / "reference.parquet"
    try:
        return pl.read_parquet(path) if path.is_file() else None
    except Exception:
        return None


def load_runs(paths: Iterable[str | Path], *, with_draws: bool = True, say: Say | None = None) -> LeaderboardData:
    """Merge every run under ``paths`` into one :class:`LeaderboardData`.

    Runs without estimates are skipped and a run id seen twice is read once; both are reported
    through ``say``. Runs whose status is not ``complete`` are kept and flagged in provenance.
    Each estimate's note is parsed once, here (``LeaderboardData.notes``).
    """
    say = say or (lambda message: None)
    frames, manifests, run_dirs, draws, references = [], [], {}, {}, {}
    for run_dir in find_run_dirs(paths):
        manifest = run_manifest(run_dir)
        run_id = str(manifest.run_id)
        if run_id in run_dirs:
            say(f"run {run_id} appears twice (again at {run_dir}); reading it once")
            continue
        estimates = read_estimates(run_dir, manifest)
        if estimates is None or estimates.is_empty():
            say(f"skipped run {run_id} ({run_dir}): no estimates yet (status {manifest.status or 'unknown'})")
            continue
        if manifest.status not in (None, "complete"):
            say(f"run {run_id} has status {manifest.status}: its estimates come from the draws it finished")
        frames.append(estimates.with_columns(pl.lit(run_id).alias("run_id")))
        manifests.append(replace(manifest, run_id=run_id))
        run_dirs[run_id] = run_dir
        if with_draws:
            run_draws = read_draws(run_dir)
            if run_draws is not None:
                draws[run_id] = run_draws
            reference = read_reference(run_dir)
            ref_hash = manifest.reference_hash
            if reference is not None and ref_hash and ref_hash not in references:
                references[str(ref_hash)] = reference
    if not frames:
        raise DataError("none of the runs found has estimates", "wait for the runs to finish, or re-run them")
    return LeaderboardData(estimates=pl.concat(frames, how="vertical"), manifests=manifests, draws=draws, references=references,
                           run_dirs=run_dirs)

