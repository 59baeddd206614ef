"""A run: one model under one task's conditions, from plan to estimates (``mimic run``).

Read it downward: :mod:`~harness.run.runner` orders the phases; :mod:`~harness.run.load`,
:mod:`~harness.run.session`, :mod:`~harness.run.plan`, :mod:`~harness.run.generate` (through
:mod:`~harness.run.calls`, the one path of model calls, and :mod:`~harness.run.draws`),
:mod:`~harness.run.fieldprobs` and :mod:`~harness.run.estimate` are the phases;
:mod:`~harness.run.config` and :mod:`~harness.run.budget` hold what a run is asked to do.
With ``--executor ray`` the generate phase is :mod:`~harness.run.shards` instead: shards of whole
contexts written by :mod:`~harness.run.ray_worker` actors and merged into the run's draw log.
"""

from harness.run.budget import Price, Usage, load_prices
from harness.run.config import RunConfig
from harness.run.runner import RunResult, run, run_async, run_many

__all__ = ["Price", "RunConfig", "RunResult", "Usage", "load_prices", "run", "run_async", "run_many"]
