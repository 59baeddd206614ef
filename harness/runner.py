"""The runner: load -> plan -> generate -> select -> estimate, for one model and one task.

``run(config, registries)`` is the whole of ``mimic run`` for one (model, task) pair; ``run_many``
runs several and keeps one mimic per model open across tasks. Phase timings go into the manifest.
A run is resumable at any point: its id is a hash of what it measures, the draw log holds only
durable draws, re-running skips them, and the cache answers draws generated but not yet logged.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from harness import __version__, eventloop
from harness.cache import DrawCache, default_cache_dir
from harness.concurrency import AdaptiveLimiter, CallStats, RetryPolicy, call_with_retries
from harness.errors import HarnessError, PermanentBackendError, RunStoreError, UsageError
from harness.events import RunFinished, RunStarted, SampleCompleted
from harness.factories import create_mimic
from harness.generation import GenerationOutcome, Generator, PendingDraw
from harness.mimic import Mimic
from harness.progress import Progress
from harness.registry import Registries
from harness.run_config import RunConfig, Usage, backend_spec, budget_reached, sampling_spec
from harness.run_pipeline import DrawBuilder, Loaded, PhaseClock, estimate_phase, estimates_json, load_phase, plan_phase, pool_usage
from harness.store import RunStore, make_run_id, schema_to_json
from harness.summary import print_summary, summary_markdown


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
    model_calls: int  # generate() calls this invocation made, retries included
    usage: dict[str, Any]
    timings: dict[str, float]
    estimates: pl.DataFrame | None = None
    message: str | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time of this process per phase

    def resume_hint(self) -> str:
        """How to continue this run."""
        return f"run the same command again, or `mimic run --resume {self.run_id}`"


def run(config: RunConfig, registries: Registries, mimic: Mimic | None = None) -> RunResult:
    """Run one (model, task) evaluation synchronously."""
    return eventloop.run(run_async(config, registries, mimic))


def run_many(configs: Sequence[RunConfig], registries: Registries) -> list[RunResult]:
    """Run evaluations in order with one mimic per model; stop after the first that does not complete."""

    async def go() -> list[RunResult]:
        results: list[RunResult] = []
        mimics: dict[str, Mimic] = {}
        try:
            for config in configs:
                key = sampling_spec(config.model).model_id  # same model, other concurrency: one mimic
                if key not in mimics:
                    mimics[key] = create_mimic(backend_spec(config.model, config.concurrency), registries)
                results.append(await run_async(config, registries, mimics[key]))
                if results[-1].status != "complete":
                    break
        finally:
            for mimic in mimics.values():
                await mimic.aclose()
        return results

    return eventloop.run(go())


async def run_async(config: RunConfig, registries: Registries, mimic: Mimic | None = None) -> RunResult:
    """Run one evaluation in the running event loop (``mimic`` is reused, not closed, when given)."""
    started = time.monotonic()
    clock = PhaseClock()
    own_mimic = mimic is None
    with clock("load"):
        loaded = load_phase(config, registries)
    try:
        if own_mimic:
            with clock("load_model"):
                mimic = create_mimic(backend_spec(config.model, config.concurrency), registries)
        return await _run_loaded(config, registries, loaded, mimic, clock, started)
    finally:
        from harness.worlddraws import close_world

        await close_world(loaded.world)
        if own_mimic and mimic is not None:
            await mimic.aclose()


async def _run_loaded(config: RunConfig, registries: Registries, loaded: Loaded, mimic: Mimic, clock: PhaseClock,
                      started: float) -> RunResult:
    """Everything after loading: open the run, draw, record, select, estimate."""
    timings = clock.wall
    progress = Progress(config.progress)
    # The backend's own id: it knows which options change what it samples (the cache key material).
    model_id = mimic.model_id
    seed = config.seed if config.seed is not None else loaded.task.plan.seed
    run_id = make_run_id(loaded.task.name, loaded.task.version, model_id, seed, config.overrides(), loaded.reference.hash)
    if config.resume_id and config.resume_id != run_id:
        raise UsageError(f"run {config.resume_id} does not match this model, task and plan (they make run {run_id})",
                         "resume with the options the run was started with, or drop --resume")
    price = config.price(model_id)
    if config.max_cost is not None and price is None:
        raise UsageError(f"--max-cost needs a price for {model_id}", "pass --prices FILE with an entry for this model")
    run_dir = Path(config.out_dir) / "runs" / run_id
    store = RunStore.open(run_dir)
    cache = None
    manifest: dict[str, Any] | None = None
    finalised = False  # the manifest on disk holds this invocation's final status
    planned: list = []
    try:
        cache = DrawCache.open(config.cache_dir or default_cache_dir(config.out_dir)) if config.use_cache else None
        previous = store.read_manifest() if store.has_manifest() else {}
        with clock("reference_world"):
            reference = await loaded.reference_with_world(seed, cache)
            store.write_frame("reference.parquet", reference)
        with clock("plan"):
            planned = plan_phase(config, loaded, seed)
        builder = DrawBuilder(loaded, run_id=run_id, model_id=model_id, seed=seed)
        manifest = _manifest(config, loaded, registries, run_id, seed, planned, previous, builder, model_id)
        store.write_manifest(manifest)

        done = store.done_keys()
        pending = [PendingDraw(d, r, r.cache_key(model_id)) for d in planned if d.key not in done for r in [builder.request(d)]]
        _emit(registries, "run_started", RunStarted(run_id, run_dir, loaded.task.name, model_id, len(planned), len(planned) - len(pending)))
        with clock("generate"):
            outcome = await _generate(config, loaded, store, cache, mimic, builder, pending, planned, progress, registries, price)

        rows = store.rows()
        if outcome.status == "complete" and len(rows) < len(planned):  # never estimate on a silently short table
            outcome.status = "failed"
            outcome.error = RunStoreError(f"run {run_id} recorded {len(rows)} of {len(planned)} planned draws",
                                          "report this; the draws already recorded are kept")
        manifest.update(status=outcome.status, counts=_counts(planned, rows), usage=pool_usage(rows, price),
                        calls=asdict(outcome.stats) | {"limiter_cuts": outcome.limiter_cuts})
        if outcome.status == "budget":  # calls in flight at the stop were recorded: report the final spend
            usage = manifest["usage"]
            outcome.message = budget_reached(config, Usage(usage["prompt_tokens"], usage["completion_tokens"], usage["cost"])) or outcome.message
        estimates = None
        if outcome.status == "complete" and loaded.task.context_sizes:
            with clock("field_probs"):
                await _field_probs(_RetryingMimic(mimic, config), loaded, planned, run_dir, store)
        if outcome.status == "complete":
            with clock("write_draws"):
                draws = builder.frame(rows)
                store.compact(frame=draws)
            estimates = estimate_phase(config, loaded, draws, manifest, seed=seed, clock=clock, tables=_extra_tables(run_dir, loaded.world, draws))
            with clock("write_estimates"):
                store.write_frame("estimates.parquet", estimates)
                store.write_text("estimates.json", estimates_json(estimates))
        manifest["finished"] = _now()
        timings["total"] = time.monotonic() - started
        manifest["timings"] = {k: round(v, 4) for k, v in timings.items()}
        manifest["cpu_seconds"] = {k: round(v, 4) for k, v in clock.cpu.items()}
        if estimates is not None:
            store.write_text("summary.md", summary_markdown(manifest, estimates))
        store.write_manifest(manifest)
        finalised = True
        _emit(registries, "run_finished", RunFinished(run_id, run_dir, outcome.status, len(rows), timings["total"]))
        progress.message(f"{run_id}: {outcome.status}; " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        if estimates is not None and config.summary_to != "off":
            print_summary(manifest, estimates, sys.stderr if config.summary_to == "stderr" else sys.stdout)
        result = RunResult(run_id, run_dir, outcome.status, loaded.task.name, model_id, len(planned), len(rows),
                           manifest["counts"]["cached"], outcome.stats.calls, manifest["usage"], timings, estimates, outcome.message,
                           dict(clock.cpu))
        if outcome.status == "failed" and outcome.error is not None:
            error = outcome.error
            if isinstance(error, HarnessError):
                error.hint = f"{error.hint}; then {result.resume_hint()}" if error.hint else result.resume_hint()
            raise error
        return result
    except BaseException as exc:
        # Stopped outside generation (field_probs, estimation, writing): the manifest on disk still
        # says "running" even when the draws are all in, so record the stop and say how to resume.
        if manifest is not None and not finalised:
            interrupted = isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError))
            manifest.update(status="interrupted" if interrupted else "failed", counts=_counts(planned, store.rows()), finished=_now())
            try:
                store.write_manifest(manifest)
            except HarnessError:
                pass  # the original error matters more than a manifest we could not update
            if isinstance(exc, HarnessError) and "resume" not in (exc.hint or ""):
                resume = f"run the same command again, or `mimic run --resume {run_id}`"
                exc.hint = f"{exc.hint}; then {resume}" if exc.hint else resume
        raise
    finally:
        store.close()
        if cache is not None:
            cache.close()


async def _generate(config: RunConfig, loaded: Loaded, store: RunStore, cache: DrawCache | None, mimic: Mimic | None,
                    builder: DrawBuilder, pending: list[PendingDraw], planned: list, progress: Progress,
                    registries: Registries, price) -> GenerationOutcome:
    """The generate phase with SIGINT/SIGTERM handling, hooks, progress, usage and budgets."""
    stats = CallStats()
    spent = pool_usage(store.rows(), price)
    total = Usage(spent["prompt_tokens"], spent["completion_tokens"], spent["cost"])
    pm = registries.plugin_manager
    hook = pm.hook.sample_completed if pm is not None else None

    def on_spent(completions) -> str | None:
        for c in completions:
            total.add(c.prompt_tokens, c.completion_tokens, price)
        return budget_reached(config, total)

    def on_recorded(items, rows) -> None:
        by_pool: dict[str, list[int]] = {}
        for item, row in zip(items, rows):
            counts = by_pool.setdefault(row["pool"], [0, 0])
            counts[0] += 1
            counts[1] += int(item.cached)
            if hook is not None:
                features = {k: v for k, v in row.items() if k.startswith("feat_")}
                hook(event=SampleCompleted(row["run_id"], row["task"], row["pool"], row["context_id"], row["sample_index"],
                                           row["text"], item.cached, features))
        for pool, (n, cached) in by_pool.items():
            progress.advance(pool, n, cached)

    outcome = GenerationOutcome(stats=stats)
    reason = budget_reached(config, total)
    if reason and pending:  # a resumed run already over budget makes no call at all
        outcome.status, outcome.message = "budget", reason
        return outcome
    if not pending:
        return outcome
    policy = RetryPolicy(max_attempts=config.max_attempts, initial_wait=config.retry_wait, timeout=config.request_timeout)
    generator = Generator(mimic=mimic, model_id=builder.model_id, store=store, build_rows=builder.rows, on_recorded=on_recorded,
                          cache=cache, concurrency=effective_concurrency(mimic, config.concurrency), policy=policy, stats=stats, on_spent=on_spent)
    totals: dict[str, int] = {}
    for d in planned:
        totals[d.pool] = totals.get(d.pool, 0) + 1
    done: dict[str, int] = {}
    for row in store.rows():
        done[row["pool"]] = done.get(row["pool"], 0) + 1
    progress.start(f"{loaded.task.name} x {builder.model_id}", totals, done, stats)
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, generator.stop, "interrupted", "interrupted by a signal")
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: Ctrl-C raises KeyboardInterrupt as usual there
    try:
        outcome = await generator.run(pending)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        progress.stop(generator.outcome.status)
    outcome.limiter_cuts = generator.limiter.cuts
    return outcome


def _counts(planned: list, rows: list[dict]) -> dict[str, int]:
    return {"planned": len(planned), "done": len(rows), "cached": sum(1 for r in rows if r.get("cached"))}


def _manifest(config: RunConfig, loaded: Loaded, registries: Registries, run_id: str, seed: int, planned: list,
              previous: dict, builder: DrawBuilder, model_id: str) -> dict[str, Any]:
    task = loaded.task
    pm = registries.plugin_manager
    return {
        "run_id": run_id,
        "status": "running",
        "harness_version": __version__,
        "plugins": dict(sorted(getattr(pm, "plugin_versions", {}).items())),
        "components": loaded.components(registries, config.model.backend, config.estimators),
        "model": {**sampling_spec(config.model).public(), "model_id": model_id, "display_name": config.model.display_name},
        "task": task.to_dict(),
        "task_name": task.name,
        "task_version": task.version,
        "reference_hash": loaded.reference.hash,
        "seed": seed,
        "overrides": {k: v for k, v in config.overrides().items() if v is not None},
        "plan": _plan_summary(config, task, planned),
        "counts": previous.get("counts", {"planned": len(planned), "done": 0, "cached": 0}),
        "usage": previous.get("usage", {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}),
        "timings": {},
        "draws_schema": schema_to_json(builder.schema),
        "created": previous.get("created") or _now(),
        "finished": None,
    }


class _RetryingMimic:
    """The run's mimic with each ``generate`` request retried under the run's policy (field_probs calls).

    The logprobs route sends many one-token requests in one ``generate`` call; a transient fault
    (a 429, a reset, a malformed body) in one of them must be retried like a draw's, not end a run
    whose draws are all in. Each request is retried on its own, so one fault re-sends one request.
    """

    def __init__(self, mimic: Mimic, config: RunConfig):
        self._mimic = mimic
        self._limiter = AdaptiveLimiter(config.concurrency)
        self._policy = RetryPolicy(max_attempts=config.max_attempts, initial_wait=config.retry_wait, timeout=config.request_timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mimic, name)

    async def _one(self, request):
        out = await call_with_retries(lambda: self._mimic.generate([request]), self._limiter, self._policy,
                                      describe=f"request to {self._mimic.model_id}")
        if len(out) != 1:
            raise PermanentBackendError(f"backend for {self._mimic.model_id} returned {len(out)} completions for 1 request",
                                        "report this to the backend plugin's authors")
        return out[0]

    async def generate(self, requests):
        tasks = [asyncio.ensure_future(self._one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # the first failure ends the call: stop the others
                task.cancel()


def effective_concurrency(mimic: Mimic, requested: int) -> int:
    """Calls in flight: the user's ``--concurrency``, capped by the backend's ``max_concurrency``.

    An in-process backend that decodes one batch at a time declares a small cap (gguf: enough calls
    to fill its sequence slots); queueing more calls behind its lock would only let their
    per-request timeouts expire.
    """
    cap = getattr(mimic, "max_concurrency", None)
    return max(1, min(requested, cap)) if isinstance(cap, int) and cap > 0 else requested


async def _field_probs(mimic: Mimic, loaded: Loaded, planned: list, run_dir: Path, store: RunStore) -> None:
    """Read the proxy header field's exact predictive distribution per synchronisation context.

    Only when the backend declares logprobs or loglikelihood and the proxy is a header field; the
    table is written once, so a resumed or repeated run reuses it.
    """
    from harness.fieldprobs import context_field_probs, route_of

    task = loaded.task
    proxy = task.feature(task.proxy.feature)
    if (run_dir / "field_probs.parquet").exists() or route_of(mimic) is None or proxy.type != "header_field":
        return
    sync_draws = [d for d in planned if d.pool == "none" and d.n_exemplars in set(task.context_sizes)]
    frame = await context_field_probs(mimic, task, loaded.reference.frame, sync_draws, fields=[proxy.options.get("field", proxy.name)])
    if frame.height:
        store.write_frame("field_probs.parquet", frame)


def _extra_tables(run_dir: Path, world: Any = None, draws: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """Optional run tables estimators may read (``field_probs.parquet``, written by whoever makes it), and
    the exact forcing set of the drawn texts where the world knows it (bookworld)."""
    from harness.stats.est_forcing import forcing_set_table

    path = run_dir / "field_probs.parquet"
    tables = {"field_probs": pl.read_parquet(path)} if path.exists() else {}
    return {**tables, **forcing_set_table(world, [] if draws is None else [draws])}


def _plan_summary(config: RunConfig, task, planned: list) -> dict[str, Any]:
    """The effective plan: pools, C contexts x S samples at the main context size, and all sizes."""
    main_k = task.plan.exemplars if config.n_exemplars is None else config.n_exemplars
    main = [d for d in planned if d.n_exemplars == main_k]
    return {"pools": sorted({d.pool for d in planned}), "contexts": len({d.context_id for d in main}),
            "samples_per_context": max((d.sample_index for d in main), default=-1) + 1, "n_exemplars": main_k,
            "context_sizes": sorted({d.n_exemplars for d in planned}), "draws": len(planned)}




def _emit(registries: Registries, name: str, event: Any) -> None:
    pm = registries.plugin_manager
    if pm is not None:
        getattr(pm.hook, name)(event=event)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
