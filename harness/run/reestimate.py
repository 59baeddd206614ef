"""Re-estimation: every estimate of a finished run recomputed from the tables it wrote, without a model.

A run directory holds what the estimate phase read: the task (``manifest.task``), the reference table
with its world draws (``reference.parquet``), the draws (``draws.parquet``), the field probabilities
(``field_probs.parquet``, when the task has a synchronisation curve), the seed, and, since runs record
it, the estimators and bootstrap size (``manifest.estimation``). The estimate phase's own functions
run on them (:mod:`harness.run.estimate`), so given the same tables the numbers are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from harness import eventloop
from harness.durable import atomic_write_bytes
from harness.errors import DataError, RunStoreError, UsageError
from harness.protocols import BuildContext
from harness.records import FIELD_PROBS_FILE, MANIFEST_FILE, Manifest, read_manifest, write_manifest
from harness.reference import RESERVED, ReferenceTable, content_hash
from harness.registry import Registries
from harness.run.config import EstimationSettings
from harness.run.estimate import estimate_draws, with_run_columns, write_estimates
from harness.run.load import build_loaded, check_estimators
from harness.run.session import PhaseClock
from harness.summary import summary_markdown
from harness.taskspec import TaskSpec
from harness.worlds.draws import close_world

DRAWS_FILE, REFERENCE_FILE = "draws.parquet", "reference.parquet"
# What re-estimation never replaces unless asked (--overwrite); it also rewrites summary.md, their
# rendering (a summary of other estimates would be wrong); anything else in a run directory is only read.
OUTPUT_FILES = ("estimates.parquet", "estimates.json")
# What a copy under --out carries besides the outputs: the tables the estimates are recomputed from.
INPUT_FILES = (MANIFEST_FILE, DRAWS_FILE, REFERENCE_FILE, FIELD_PROBS_FILE)
# n_boot of runs whose manifest does not record it: the default of `mimic run` (EstimationSettings)
# for every run written before manifests recorded ``estimation``.
DEFAULT_N_BOOT = EstimationSettings().n_boot


@dataclass
class ShippedRun:
    """A run directory's tables, read and checked: everything the estimate phase needs but a model."""

    run_dir: Path
    manifest: Manifest
    task: TaskSpec
    reference: pl.DataFrame  # with world_draws when the task has a world
    draws: pl.DataFrame


@dataclass
class Reestimated:
    """One run's recomputed estimates and the settings they were made with."""

    run: ShippedRun
    estimates: pl.DataFrame
    settings: EstimationSettings
    n_boot_recorded: bool  # False: the manifest did not say, DEFAULT_N_BOOT was assumed


def read_shipped_run(run_dir: str | Path) -> ShippedRun:
    """Read a run's manifest, task, reference and draws; a missing or mismatched table is a one-line DataError."""
    run_dir = Path(run_dir)
    try:
        manifest = read_manifest(run_dir)
    except RunStoreError as exc:  # to `mimic estimate` a broken run is bad input: exit 2
        raise DataError(exc.message, exc.hint) from None
    if not manifest.task or not manifest.run_id:
        raise DataError(f"{run_dir / MANIFEST_FILE} records no task or run_id", "point at a run directory written by `mimic run`")
    try:
        task = TaskSpec.from_dict(manifest.task)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{run_dir / MANIFEST_FILE}: its task is not readable ({type(exc).__name__}: {exc})",
                        "the run was written by an incompatible harness; re-run it") from None
    reference, draws = read_table(run_dir, REFERENCE_FILE), read_table(run_dir, DRAWS_FILE)
    source = reference.drop([c for c in reference.columns if c in RESERVED or c.startswith("feat_")])
    digest = content_hash(source)
    if digest != manifest.reference_hash:
        raise DataError(f"{run_dir / REFERENCE_FILE} hashes to {digest}, but the run was measured against reference "
                        f"{manifest.reference_hash}", "restore the run's own reference.parquet (it was replaced or edited)")
    return ShippedRun(run_dir, manifest, task, reference, draws)


def read_table(run_dir: Path, name: str) -> pl.DataFrame:
    """A Parquet table of the run; missing or unreadable is a one-line DataError."""
    path = run_dir / name
    if not path.is_file():
        hint = "finish the run first (`mimic run --resume RUN_ID`) or copy the file back" if name == DRAWS_FILE else \
            "copy the run's own file back (scripts/publish.sh ships it)"
        raise DataError(f"{run_dir} has no {name}: estimates cannot be recomputed without it", hint)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # a corrupt file: polars raises several types
        raise DataError(f"{path} is unreadable: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}",
                        "copy the run's own file back") from None


def settings_for(manifest: Manifest, registries: Registries, estimators: Sequence[str] | None,
                 n_boot: int | None) -> tuple[EstimationSettings, bool]:
    """The estimation settings the run used (``manifest.estimation``, else the estimators in its
    components), overridden where given; and whether n_boot is known (False: :data:`DEFAULT_N_BOOT`
    was assumed for a run that did not record it)."""
    record = manifest.estimation or {}
    if estimators is None:
        estimators = record.get("estimators") or [c["name"] for c in manifest.components if c.get("kind") == "estimator"]
    check_estimators(registries, estimators)
    names = tuple(estimators) if estimators else tuple(registries.estimators.names())
    known = n_boot is not None or isinstance(record.get("n_boot"), int)
    chosen = n_boot if n_boot is not None else int(record.get("n_boot") or DEFAULT_N_BOOT)
    return EstimationSettings(names, chosen), known


def reestimate(run: ShippedRun, registries: Registries, settings: EstimationSettings) -> pl.DataFrame:
    """The run's estimates recomputed from its tables: the estimate phase's functions, the run's seed."""
    ctx = BuildContext(registries=registries)
    reference = run.reference.drop("world_draws") if "world_draws" in run.reference.columns else run.reference
    loaded = build_loaded(run.task, ReferenceTable(reference, str(run.manifest.reference_hash)), ctx, run.reference)
    try:
        estimates = estimate_draws(loaded, settings, run.draws, int(run.manifest.seed or 0), run.run_dir, PhaseClock())
    finally:
        eventloop.run(close_world(loaded.world))
    model = run.manifest.model
    values = {"run_id": run.manifest.run_id, "model": model.model_id, "model_name": model.display_name,
              "task": run.task.name, "task_version": run.task.version, "reference_hash": run.manifest.reference_hash}
    return with_run_columns(estimates, values)


def output_dir(run: ShippedRun, out: Path | None) -> Path:
    """Where a run's re-estimates go: its own directory, or ``out/<run folder name>``."""
    return run.run_dir if out is None else out / run.run_dir.name


def check_writable(run: ShippedRun, out: Path | None, overwrite: bool) -> None:
    """A one-line usage error when writing would replace estimates already there (and not asked to)."""
    target = output_dir(run, out)
    present = [name for name in OUTPUT_FILES if (target / name).exists()]
    if present and not overwrite:
        where = "in place" if target.resolve() == run.run_dir.resolve() else f"under {out}"
        raise UsageError(f"{target} already has {', '.join(present)}: re-estimating {where} would replace them",
                         "pass --overwrite to replace them, or --out DIR to write a copy of the run elsewhere")


def write_reestimated(result: Reestimated, out: Path | None) -> Path:
    """Write the estimates (and summary.md) into the run directory or a copy of it under ``out``.

    A copy carries the run's input tables, so it is a run directory `mimic leaderboard` reads. The
    manifest is rewritten only when the estimation record changes (a run that did not record it, or
    other settings): the record always says how the estimates beside it were made.
    """
    run, target = result.run, output_dir(result.run, out)
    if target.resolve() != run.run_dir.resolve():
        target.mkdir(parents=True, exist_ok=True)
        for name in INPUT_FILES:
            if (run.run_dir / name).is_file():
                atomic_write_bytes(target / name, (run.run_dir / name).read_bytes())
    write_estimates(target, result.estimates)
    record = {"estimators": list(result.settings.estimators or ()), "n_boot": result.settings.n_boot}
    manifest = run.manifest
    if manifest.estimation != record:
        manifest = Manifest.from_dict({**manifest.to_dict(), "estimation": record})
        write_manifest(target, manifest)
    atomic_write_bytes(target / "summary.md", summary_markdown(manifest, result.estimates).encode("utf-8"))
    return target


def check_out_dir(out: Path) -> None:
    """Fail early when ``out`` exists as a file (a copy needs a folder there)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder", "pass a folder (it is created if needed)")
