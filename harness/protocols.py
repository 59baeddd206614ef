"""Protocols for the things plugins register (other than mimics, see ``harness.mimic``).

Every registry entry is a *factory*: ``factory(options: dict, ctx: BuildContext) -> component``
(mimic factories take ``(spec: ModelSpec, ctx)``). Components are plain objects that satisfy the
protocols below; no base classes to inherit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl

from harness.records import EstimateNote, Manifest

if TYPE_CHECKING:
    from harness.registry import Registries
    from harness.taskspec import TaskSpec

FeatureKind = Literal["categorical", "numeric", "binary"]


@dataclass(frozen=True)
class BuildContext:
    """What a factory may need besides its options: the registries (to build a judge mimic, say).

    ``concurrency`` is the run's ``--concurrency``: the calls it keeps in flight. A backend that
    sizes a connection pool (any HTTP backend) reads it when its spec sets no ``concurrency`` option.
    """

    registries: Registries
    cache_dir: Path | None = None
    concurrency: int | None = None


@runtime_checkable
class Feature(Protocol):
    """A deterministic function of an item's text.

    ``extract`` maps a Utf8 series to a series of the same length: Utf8 for ``categorical``,
    Float64 for ``numeric`` and ``binary`` (0.0/1.0). Unextractable items are null.
    """

    kind: FeatureKind

    def extract(self, texts: pl.Series) -> pl.Series:
        """Compute the feature for every text."""
        ...


@runtime_checkable
class World(Protocol):
    """A stochastic objective rho(R | x): one call of ``draw`` is one draw of R per item."""

    async def draw(self, texts: Sequence[str], seeds: Sequence[int]) -> list[bool]:
        """Draw R once for each (text, seed)."""
        ...


@runtime_checkable
class ExactWorld(World, Protocol):
    """A world that also knows rho(x) exactly (bookworld): enables exact checks."""

    def rho(self, texts: Sequence[str]) -> np.ndarray:
        """Return P(R=1 | x) for each text."""
        ...


@dataclass(frozen=True)
class Selection:
    """The output of a control: which draws of a pool it keeps, with what weight, at what cost.

    ``kept`` holds rows of the draws table (all its columns) plus a ``weight`` column that sums
    to 1. ``raw_draws`` counts the pool draws the control consumed to produce them.
    """

    condition: str  # e.g. "none", "prompt:5", "filter:5", "reward@4", "best-of-4", "tilt@0.1"
    control: str  # registry name of the control
    pool: str  # the generation pool it selected from
    target: Any  # the proxy value it conditions on, or None
    kept: pl.DataFrame
    raw_draws: int
    info: dict[str, Any] = field(default_factory=dict)  # kl, ess, flags...


@runtime_checkable
class Control(Protocol):
    """A control method: which pools it needs, and how it selects from them."""

    def pools(self, task: TaskSpec) -> list[str]:
        """Return the generation pools this control needs (``none`` or ``prompt:<value>``)."""
        ...

    def select(self, draws: pl.DataFrame, task: TaskSpec) -> list[Selection]:
        """Select from the draws table (all pools); one Selection per target/condition."""
        ...


@dataclass(frozen=True)
class Estimate:
    """One estimator result: a point estimate and a 95% interval."""

    estimator: str
    condition: str
    feature: str
    point: float
    lower: float
    upper: float
    n: int
    method: str  # e.g. "cluster-bootstrap-percentile", "wilson", "exact"
    note: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EstimationInputs:
    """Everything an estimator may read."""

    task: TaskSpec
    reference: pl.DataFrame  # reference rows: columns, ``text``, ``feat_*``, ``world_draws``
    draws: pl.DataFrame  # the draws table of the run
    selections: Sequence[Selection]
    seed: int = 0
    n_boot: int = 1000
    tables: Mapping[str, pl.DataFrame] = field(default_factory=dict)  # extra run tables, e.g. "field_probs"
    # ``prompt:<v>`` pools whose proxy the extractor reads off the prompt's own prefix (e.g. a
    # "Rating: 5" header the prompt wrote): their control success is 1 by construction.
    proxy_from_prompt: frozenset[str] = frozenset()


@runtime_checkable
class Estimator(Protocol):
    """Turns reference data and selections into estimates with intervals."""

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Compute this estimator's rows."""
        ...


@dataclass(frozen=True)
class LeaderboardData:
    """Merged runs handed to leaderboard writers.

    ``document`` is the leaderboard document (``harness/leaderboard/schema.json``) of these runs:
    ``mimic leaderboard`` builds it once and hands it to every writer, so the formats cannot
    disagree and none pays for building it again. It is None when a caller left it to the writer.
    """

    estimates: pl.DataFrame  # the estimates tables of all runs, concatenated
    manifests: list[Manifest]  # each run's manifest
    draws: Mapping[str, pl.DataFrame] = field(default_factory=dict)  # run_id -> draws (for examples, charts)
    references: Mapping[str, pl.DataFrame] = field(default_factory=dict)  # reference hash -> reference table
    document: Mapping[str, Any] | None = None
    run_dirs: Mapping[str, Path] = field(default_factory=dict)  # run_id -> the directory it was read from
    # Each distinct ``note`` of ``estimates`` (JSON text) parsed once, for every reader: ``notes[row["note"]]``.
    # Built here from ``estimates`` when not given.
    notes: Mapping[Any, EstimateNote] | None = None

    def __post_init__(self) -> None:
        if self.notes is None:  # a frozen dataclass: the one field it fills in itself
            texts = self.estimates["note"].to_list() if "note" in self.estimates.columns else []
            object.__setattr__(self, "notes", {text: EstimateNote.parse(text) for text in dict.fromkeys(texts)})


@runtime_checkable
class LeaderboardWriter(Protocol):
    """Writes one leaderboard format into a directory."""

    def write(self, data: LeaderboardData, out_dir: Path) -> list[Path]:
        """Write files under ``out_dir``; return their paths."""
        ...


@runtime_checkable
class ReferenceSource(Protocol):
    """Loads a reference table."""

    def load(self) -> pl.DataFrame:
        """Return the reference rows as a polars DataFrame."""
        ...


@dataclass(frozen=True)
class Command:
    """A ``mimic`` subcommand contributed by a plugin."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


ComponentFactory = Callable[[Mapping[str, Any], BuildContext], Any]
