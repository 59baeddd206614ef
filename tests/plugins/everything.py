"""A test plugin implementing every hook, so a test can check that each one is exercised."""

from __future__ import annotations

import polars as pl

from harness.hookspecs import hookimpl
from harness.protocols import Command

CALLS: list[tuple[str, object]] = []


class Exclamations:
    """Counts '!' in an item (a numeric feature)."""

    kind = "numeric"

    def extract(self, texts: pl.Series) -> pl.Series:
        """Count exclamation marks."""
        return texts.str.count_matches("!", literal=True).cast(pl.Float64)


class AlwaysWorld:
    """A world where every draw succeeds: the whole space is the forcing set."""

    async def draw(self, texts, seeds):
        """Succeed."""
        return [True] * len(texts)


class ConstantEstimator:
    """Reports the number of selections (a smoke-test estimator)."""

    def estimate(self, inputs):
        """One row per run."""
        from harness.protocols import Estimate

        n = len(inputs.selections)
        return [Estimate("everything-count", "all", "selections", float(n), float(n), float(n), n, "exact")]


class TextWriter:
    """Writes a plain-text list of runs."""

    def write(self, data, out_dir):
        """Write runs.txt."""
        path = out_dir / "runs.txt"
        path.write_text("\n".join(m.run_id or "?" for m in data.manifests))
        return [path]


class FixedSource:
    """A three-row reference table."""

    def load(self):
        """Return the rows."""
        return pl.DataFrame({"body": ["one!", "two!!", "three"]})


@hookimpl
def register_mimics(register):
    """Register nothing new: reuse the scripted backend under another name."""
    from harness.scripted import create_scripted

    register("everything-scripted", create_scripted, "scripted under another name")


@hookimpl
def register_features(register):
    """Register a feature."""
    register("exclamations", lambda options, ctx: Exclamations(), "counts '!'")


@hookimpl
def register_worlds(register):
    """Register a world."""
    register("always", lambda options, ctx: AlwaysWorld(), "R=1 always")


@hookimpl
def register_controls(register):
    """Register a control: the built-in `none` control under another name."""
    from harness.controls import create_none

    register("everything-none", create_none, "none, registered by a third party")


@hookimpl
def register_estimators(register):
    """Register an estimator."""
    register("everything-count", lambda options, ctx: ConstantEstimator())


@hookimpl
def register_reference_sources(register):
    """Register a reference source."""
    register("everything-fixed", lambda options, ctx: FixedSource())


@hookimpl
def register_leaderboard_writers(register):
    """Register a writer."""
    register("everything-text", lambda options, ctx: TextWriter())


@hookimpl
def register_commands(register):
    """Register a command."""
    register(Command("everything-hello", "say hello", lambda parser: None, lambda args: print("hello") or 0))


@hookimpl
def run_started(event):
    """Record the event."""
    CALLS.append(("run_started", event))


@hookimpl
def sample_completed(event):
    """Record the event."""
    CALLS.append(("sample_completed", event))


@hookimpl
def run_finished(event):
    """Record the event."""
    CALLS.append(("run_finished", event))
