"""The runner: load -> open -> plan -> generate -> field probabilities -> estimate, for one model and one task.

``run(config, registries)`` is the whole of ``mimic run`` for one (model, task) pair; ``run_many``
runs several and keeps one mimic per model open across tasks. Each phase is a module of this
package that takes the :class:`~harness.run.session.RunSession` and the few settings it reads.
Phase timings go into the manifest. A run is resumable at any point: its id is a hash of what it
measures, the draw log holds only durable draws, re-running skips them, and the cache answers
draws and field-probability calls made but not yet recorded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from harness import eventloop
from harness.chat.renderings import rendering_for, run_model_id
from harness.errors import HarnessError, RunStoreError, UsageError
from harness.events import RunFinished
from harness.factories import create_mimic
from harness.mimic import Mimic
from harness.protocols import BuildContext
from harness.registry import Registries
from harness.run.budget import Usage
from harness.run.calls import ModelCalls
from harness.run.config import RunConfig, sampling_spec
from harness.run.draws import DrawBuilder
from harness.run.estimate import estimate_phase
from harness.run.fieldprobs import field_probs_phase
from harness.run.generate import GenerationOutcome, generate_phase
from harness.run.load import Loaded, load_phase
from harness.run.plan import plan_phase, plan_summary
from harness.run.session import PhaseClock, RunSession
from harness.run.shards import sharded_generate_phase
from harness.summary import print_summary, summary_markdown
from harness.worlds.draws import close_world


@dataclass
class RunResult:
    """What one run did; ``estimates`` is None unless the run completed."""

    run_id: str
    run_dir: Path
    status: str  # complete | interrupted | budget | failed
    task: str
    model_id: str
    planned: int
    done: int
    cached: int
    model_calls: int  # model calls this invocation made (draws and field probabilities), retries included
    usage: dict[str, Any]
    timings: dict[str, float]
    estimates: pl.DataFrame | None = None
    message: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time of this process per phase

    def resume_hint(self) -> str:
        """How to continue this run."""
        return f"run the same command again, or `mimic run --resume {self.run_id}`"


# Runs one config with an open mimic (``run_async``, or a staged run's two stages).
RunOne = Callable[[RunConfig, Registries, Mimic], Awaitable[RunResult]]


def run(config: RunConfig, registries: Registries, mimic: Mimic | None = None) -> RunResult:
    """Run one (model, task) evaluation synchronously."""
    return eventloop.run(run_async(config, registries, mimic))


def run_many(configs: Sequence[RunConfig], registries: Registries, run_one: RunOne | None = None,
             mimic: Mimic | None = None) -> list[RunResult]:
    """Run evaluations in order with one mimic per model; stop after the first that does not complete.

    ``run_one`` runs one config with its mimic (default :func:`run_async`; a staged run passes its
    own); ``mimic``, when given, serves every config and is not closed.
    """
    run_one = run_one or run_async

    async def go() -> list[RunResult]:
        results: list[RunResult] = []
        mimics: dict[str, Mimic] = {}
        try:
            for config in configs:
                use = mimic
                if use is None:
                    key = sampling_spec(config.model).model_id  # same model, other concurrency: one mimic
                    if key not in mimics:
                        mimics[key] = open_mimic(config, registries)
                    use = mimics[key]
                results.append(await run_one(config, registries, use))
                if results[-1].status != "complete":
                    break
        finally:
            for opened in mimics.values():
                await opened.aclose()
        return results

    return eventloop.run(go())


def open_mimic(config: RunConfig, registries: Registries) -> Mimic:
    """Load the run's model; the factory sees the run's concurrency (an HTTP backend sizes its pool by it)."""
    ctx = BuildContext(registries=registries, cache_dir=config.output.cache_location(), concurrency=config.concurrency)
    return create_mimic(config.model, registries, ctx)


async def run_async(config: RunConfig, registries: Registries, mimic: Mimic | None = None) -> RunResult:
    """Run one evaluation in the running event loop (``mimic`` is reused, not closed, when given)."""
    started = time.monotonic()
    clock = PhaseClock()
    own_mimic = mimic is None
    with clock("load"):
        loaded = load_phase(config.task, registries, estimators=config.estimators, cache_dir=config.output.cache_location(),
                            context_sizes=config.plan.context_sizes)
    try:
        if own_mimic:
            with clock("load_model"):
                mimic = open_mimic(config, registries)
        rendering = rendering_for(mimic, config.model)  # a forced rendering the backend cannot take fails here
        session = RunSession.open(config.plan, config.output, loaded, run_model_id(mimic.model_id, config.model), clock=clock,
                                  registries=registries)
        try:
            return await _run_session(session, config, loaded, mimic, started, rendering)
        finally:
            session.close()
    finally:
        await close_world(loaded.world)
        if own_mimic and mimic is not None:
            await mimic.aclose()


async def _run_session(session: RunSession, config: RunConfig, loaded: Loaded, mimic: Mimic, started: float,
                       rendering: str) -> RunResult:
    """Everything after opening the run: draw, record, measure field probabilities, estimate."""
    clock, planned, calls = session.clock, [], None
    price = config.limits.price(session.model_id, config.model)
    if config.max_cost is not None and price is None:
        raise UsageError(f"--max-cost needs a price for {session.model_id}", "pass --prices FILE with an entry for this model")
    try:
        with clock("reference_world"):
            session.store.write_frame("reference.parquet", await loaded.reference_with_world(session.seed, session.cache))
        with clock("plan"):
            planned = plan_phase(config.plan, loaded, session.seed, rendering)
        builder = DrawBuilder(loaded, run_id=session.run_id, model_id=session.model_id, seed=session.seed)
        main_k = loaded.task.plan.exemplars if config.n_exemplars is None else config.n_exemplars
        session.start_manifest(config.plan, loaded, config.estimators, plan_summary(main_k, planned), builder.schema)
        calls = ModelCalls(mimic, session.model_id, config.limits, price, Usage.from_dict(session.spending(price)))
        with clock("generate"):
            if config.executor == "ray":
                outcome = await sharded_generate_phase(session, calls, builder, planned, config)
            else:
                outcome = await generate_phase(session, calls, builder, planned)
        _check_complete(session, outcome, len(planned))
        if outcome.status == "complete" and loaded.task.context_sizes:
            with clock("field_probs"):
                stopped = await field_probs_phase(session, loaded, calls, planned)
            if stopped:
                outcome.status, outcome.message = "budget", stopped
        estimates = None
        if outcome.status == "complete":
            with clock("write_draws"):
                draws = builder.frame(session.store.rows())
                session.store.compact(frame=draws)
            estimates = estimate_phase(session, loaded, config.estimation, draws)
        return _finish(session, outcome, calls, len(planned), estimates, started, config.summary_to)
    except BaseException as exc:
        usage = session.spending(price, calls.by_phase) if calls is not None else None
        session.record_stop(exc, len(planned), interrupted=not isinstance(exc, Exception), usage=usage)
        raise


def _check_complete(session: RunSession, outcome: GenerationOutcome, planned: int) -> None:
    """Never estimate on a silently short table."""
    done = len(session.store.rows())
    if outcome.status == "complete" and done < planned:
        outcome.status = "failed"
        outcome.error = RunStoreError(f"run {session.run_id} recorded {done} of {planned} planned draws",
                                      "report this; the draws already recorded are kept")


def _finish(session: RunSession, outcome: GenerationOutcome, calls: ModelCalls, planned: int,
            estimates: pl.DataFrame | None, started: float, summary_to: str) -> RunResult:
    """Write the final manifest and summary, call the hooks, and say how the run ended."""
    usage = session.spending(calls.price, calls.by_phase)
    if outcome.status == "budget":  # calls in flight at the stop were recorded: report the final spend
        outcome.message = calls.budget.reached(Usage.from_dict(usage)) or outcome.message
    session.clock.wall["total"] = time.monotonic() - started
    counts = session.counts(planned)
    session.conclude(outcome.status, counts=counts, usage=usage, calls=asdict(calls.stats) | {"limiter_cuts": calls.limiter.cuts})
    session.record_sampling(calls.stats.calls)
    timings = dict(session.clock.wall)
    if estimates is not None:
        session.store.write_text("summary.md", summary_markdown(session.manifest, estimates))
    session.save()
    session.emit("run_finished", RunFinished(session.run_id, session.run_dir, outcome.status, counts["done"], timings["total"]))
    session.progress.message(f"{session.run_id}: {outcome.status}; " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    if estimates is not None and summary_to != "off":
        print_summary(session.manifest, estimates, sys.stderr if summary_to == "stderr" else sys.stdout)
    result = RunResult(session.run_id, session.run_dir, outcome.status, session.manifest.task_name, session.model_id, planned,
                       counts["done"], counts["cached"], calls.stats.calls, usage, timings, estimates, outcome.message,
                       dict(session.clock.cpu))
    if outcome.status == "failed" and outcome.error is not None:
        error = outcome.error
        if isinstance(error, HarnessError):
            error.hint = f"{error.hint}; then {result.resume_hint()}" if error.hint else result.resume_hint()
        raise error
    return result
