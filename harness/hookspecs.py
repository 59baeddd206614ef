"""Hook specifications. Only specs live here; implementations use ``harness.hookimpl``.

Collection hooks receive a ``register`` callback (as in simonw/llm), so one plugin can add
several things and the harness knows which plugin added each one.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("mimic_harness")
hookimpl = pluggy.HookimplMarker("mimic_harness")


@hookspec
def register_mimics(register):
    """Register mimic backends.

    Call ``register(name, factory, description="")`` once per backend. ``factory(spec, ctx)``
    takes a :class:`harness.modelspec.ModelSpec` and a :class:`harness.protocols.BuildContext`
    and returns an object satisfying :class:`harness.mimic.Mimic`. Users select it as
    ``name:model`` on the command line.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_features(register):
    """Register feature extractors.

    Call ``register(name, factory, description="")``; ``factory(options, ctx)`` returns a
    :class:`harness.protocols.Feature`. Task files refer to it as ``type: name``.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_worlds(register):
    """Register worlds (stochastic objectives R).

    Call ``register(name, factory, description="")``; ``factory(options, ctx)`` returns a
    :class:`harness.protocols.World`.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_controls(register):
    """Register control methods (``none``, ``prompt``, ``filter``, ``reward``, ...).

    Call ``register(name, factory, description="")``; ``factory(options, ctx)`` returns a
    :class:`harness.protocols.Control`.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_estimators(register):
    """Register estimators.

    Call ``register(name, factory, description="")``; ``factory(options, ctx)`` returns a
    :class:`harness.protocols.Estimator`. Every registered estimator runs at the end of a run.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_reference_sources(register):
    """Register reference-data sources (csv, parquet, jsonl, hf, generated worlds...).

    Call ``register(name, factory, description="")``; ``factory(options, ctx)`` returns a
    :class:`harness.protocols.ReferenceSource`. Task files name it under ``reference.type``.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_leaderboard_writers(register):
    """Register leaderboard writers (markdown, json, html...).

    Call ``register(name, factory, description="")``; ``factory(options, ctx)`` returns a
    :class:`harness.protocols.LeaderboardWriter`.

    :param register: callback ``register(name: str, factory, description: str = "")``.
    """


@hookspec
def register_commands(register):
    """Register extra ``mimic`` subcommands.

    Call ``register(command)`` with a :class:`harness.protocols.Command`.

    :param register: callback ``register(command: Command)``.
    """


@hookspec
def run_started(event):
    """Observe that a run is about to generate draws.

    :param event: a frozen :class:`harness.events.RunStarted`.
    """


@hookspec
def sample_completed(event):
    """Observe one draw recorded durably in the run's sample log.

    Called in the runner's event loop: keep it quick.

    :param event: a frozen :class:`harness.events.SampleCompleted`.
    """


@hookspec
def run_finished(event):
    """Observe that a run ended (complete, interrupted, over budget or failed).

    :param event: a frozen :class:`harness.events.RunFinished`.
    """
