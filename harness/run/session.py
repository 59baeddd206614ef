"""One open run: :class:`RunSession` owns its id, directory, store, cache, manifest, clocks and progress.

The phases take the session and the few settings they read. The session is what makes a run
resumable: its id is a hash of what it measures, its draw log holds only durable draws, and
its manifest on disk always says how far the run got (``running`` until an invocation ends).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.cache import DrawCache
from harness.errors import HarnessError, UsageError
from harness.events import RunStarted
from harness.machine import machine_info
from harness.progress import Progress
from harness.records import Manifest, ManifestModel
from harness.registry import Registries
from harness.run.budget import Price, Usage, draw_usage
from harness.run.config import RunOutput, RunPlan, sampling_spec
from harness.run.load import Loaded
from harness.store import RunStore, make_run_id, schema_to_json


class PhaseClock:
    """Wall and CPU seconds per phase: ``with clock("generate"): ...`` adds to both."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.monotonic(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.monotonic() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


def now() -> str:
    """The current UTC time, as manifests write it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunSession:
    """An open run directory with its manifest; :meth:`open` it, :meth:`close` it when done."""

    def __init__(self, *, run_id: str, model_id: str, seed: int, store: RunStore, cache: DrawCache | None,
                 clock: PhaseClock, progress: Progress, registries: Registries):
        self.run_id, self.model_id, self.seed = run_id, model_id, seed
        self.store, self.cache = store, cache
        self.clock, self.progress, self.registries = clock, progress, registries
        self.previous = store.read_manifest() if store.has_manifest() else None
        self.manifest = Manifest(run_id=run_id, status="running")
        self.finalised = False  # the manifest on disk holds this invocation's final status
        self.display_name = ""

    @classmethod
    def open(cls, plan: RunPlan, output: RunOutput, loaded: Loaded, model_id: str, *, clock: PhaseClock,
             registries: Registries) -> RunSession:
        """Derive the run id, check ``--resume``, take the run directory's lock and open the cache."""
        seed = plan.seed if plan.seed is not None else loaded.task.plan.seed
        run_id = make_run_id(loaded.task.name, loaded.task.version, model_id, seed, plan.overrides(), loaded.reference.hash)
        if output.resume_id and output.resume_id != run_id:
            raise UsageError(f"run {output.resume_id} does not match this model, task and plan (they make run {run_id})",
                             "resume with the options the run was started with, or drop --resume")
        store = RunStore.open(Path(output.out_dir) / "runs" / run_id)
        try:
            location = output.cache_location()
            cache = DrawCache.open(location) if location is not None else None
            session = cls(run_id=run_id, model_id=model_id, seed=seed, store=store, cache=cache, clock=clock,
                          progress=Progress(output.progress), registries=registries)
        except BaseException:
            store.close()
            raise
        session.display_name = plan.model.display_name
        return session

    @property
    def run_dir(self) -> Path:
        """The run's directory."""
        return self.store.run_dir

    def start_manifest(self, plan: RunPlan, loaded: Loaded, estimators: Sequence[str] | None, plan_summary: dict[str, Any],
                       draws_schema: dict) -> None:
        """Write the manifest of a run that starts (or resumes): what is run, with what, so far."""
        task, previous = loaded.task, self.previous or Manifest()
        pm = self.registries.plugin_manager
        self.manifest = Manifest(
            run_id=self.run_id, status="running", harness_version=__version__,
            plugins=dict(sorted(getattr(pm, "plugin_versions", {}).items())),
            components=loaded.components(self.registries, plan.model.backend, estimators),
            model=ManifestModel.from_dict({**sampling_spec(plan.model).public(), "model_id": self.model_id,
                                           "display_name": plan.model.display_name}),
            task=task.to_dict(), task_name=task.name, task_version=task.version, reference_hash=loaded.reference.hash,
            seed=self.seed, overrides={k: v for k, v in plan.overrides().items() if v is not None}, plan=plan_summary,
            counts=previous.counts or {"planned": plan_summary["draws"], "done": 0, "cached": 0},
            usage=previous.usage or Usage().to_dict(), draws_schema=schema_to_json(draws_schema),
            created=previous.created or now(), sampling=previous.sampling,
        )
        self.store.write_manifest(self.manifest)

    def spending(self, price: Price | None, this_invocation: Mapping[str, Usage] | None = None) -> dict[str, Any]:
        """The run's spending in manifest form: draws from the log (cached draws cost nothing), the other
        phases from earlier invocations' manifests plus ``this_invocation``'s calls per phase."""
        draws = draw_usage(self.store.rows(), price)
        phases = self._earlier_phases()
        for name, usage in (this_invocation or {}).items():
            if name != "draws":
                phases[name] = phases.get(name, Usage()).merged(usage)
        total = Usage.from_dict(draws)
        for usage in phases.values():
            total = total.merged(usage)
        return {**total.to_dict(), "pools": draws["pools"],
                "phases": {"draws": Usage.from_dict(draws).to_dict(), **{k: u.to_dict() for k, u in sorted(phases.items())}}}

    def _earlier_phases(self) -> dict[str, Usage]:
        phases = ((self.previous.usage if self.previous else None) or {}).get("phases") or {}
        return {name: Usage.from_dict(u) for name, u in phases.items() if name != "draws"}

    def emit(self, name: str, event: Any) -> None:
        """Call a lifecycle hook (``run_started``, ``run_finished``) when plugins are loaded."""
        pm = self.registries.plugin_manager
        if pm is not None:
            getattr(pm.hook, name)(event=event)

    def announce(self, planned: int, pending: int) -> None:
        """The ``run_started`` hook."""
        self.emit("run_started", RunStarted(self.run_id, self.run_dir, self.manifest.task_name, self.model_id, planned,
                                            planned - pending))

    def counts(self, planned: int) -> dict[str, int]:
        """Planned, done and cached draws, from the log."""
        rows = self.store.rows()
        return {"planned": planned, "done": len(rows), "cached": sum(1 for r in rows if r.get("cached"))}

    def conclude(self, status: str, **fields: Any) -> None:
        """Set this invocation's final status, timings, CPU seconds and the given manifest fields."""
        for name, value in fields.items():
            setattr(self.manifest, name, value)
        self.manifest.status = status
        self.manifest.finished = now()
        self.manifest.timings = {k: round(v, 4) for k, v in self.clock.wall.items()}
        self.manifest.cpu_seconds = {k: round(v, 4) for k, v in self.clock.cpu.items()}

    def record_sampling(self, model_calls: int) -> None:
        """Add this invocation's sampling time to the manifest's running total, when it called the model."""
        if model_calls <= 0:
            return
        before = self.manifest.sampling or {}
        seconds = sum(self.clock.wall.get(phase, 0.0) for phase in ("generate", "field_probs"))
        self.manifest.sampling = {"seconds": round(float(before.get("seconds", 0.0)) + seconds, 3),
                                  "model_calls": int(before.get("model_calls", 0)) + model_calls,
                                  "invocations": int(before.get("invocations", 0)) + 1, "machine": machine_info()}

    def save(self) -> None:
        """Write the concluded manifest: the last file of an invocation, so "complete" means every file is in."""
        self.store.write_manifest(self.manifest)
        self.finalised = True

    def record_stop(self, exc: BaseException, planned: int, interrupted: bool, usage: dict[str, Any] | None) -> None:
        """A stop outside generation (field probabilities, estimation, writing) leaves a manifest that
        says so (with what the calls so far spent), and the error says how to resume."""
        if self.finalised or self.manifest.task_name is None:
            return
        self.manifest.status = "interrupted" if interrupted else "failed"
        self.manifest.counts = self.counts(planned)
        if usage is not None:
            self.manifest.usage = usage
        self.manifest.finished = now()
        try:
            self.store.write_manifest(self.manifest)
        except HarnessError:
            pass  # the original error matters more than a manifest we could not update
        if isinstance(exc, HarnessError) and "resume" not in (exc.hint or ""):
            exc.hint = f"{exc.hint}; then {self.resume_hint()}" if exc.hint else self.resume_hint()

    def resume_hint(self) -> str:
        """How to continue this run."""
        return f"run the same command again, or `mimic run --resume {self.run_id}`"

    def close(self) -> None:
        """Release the run directory's lock and the cache."""
        try:
            self.store.close()
        finally:
            if self.cache is not None:
                self.cache.close()
