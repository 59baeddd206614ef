"""What one run is asked to do: :class:`RunConfig`, and the parts each phase reads.

``RunConfig`` is the flat request the command line (and the Python API) builds. The phases never
take all of it: they take the part they read. :class:`RunPlan` is what the run measures (its fields
are the run id's material); :class:`CallLimits` how hard to push the model and how much to spend;
:class:`RunOutput` where results go and how the run shows itself; :class:`EstimationSettings` which
estimators run. Only the plan changes the run id: concurrency, budgets, the cache and the output do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import default_cache_dir
from harness.concurrency import RetryPolicy
from harness.errors import UsageError
from harness.modelspec import ModelSpec
from harness.run.budget import Budget, Price
from harness.taskspec import TaskSpec

# Options that change how a backend runs but never what it samples: kept out of model ids.
RUNTIME_OPTIONS = frozenset({"concurrency"})
EXECUTORS = ("local", "ray")  # where the generate phase runs (harness.run.shards for ray)


@dataclass(frozen=True)
class RunPlan:
    """What the run measures: model, task, seed and plan overrides (``None``: as the task says)."""

    model: ModelSpec
    task: str | Path | TaskSpec
    seed: int | None = None
    samples: int | None = None
    contexts: int | None = None
    samples_per_context: int | None = None
    n_exemplars: int | None = None
    context_sizes: tuple[int, ...] | None = None  # the synchronisation curve's sizes; () runs no curve

    def overrides(self) -> dict[str, Any]:
        """The plan overrides that make this a different evaluation (run-id material)."""
        return {"samples": self.samples, "contexts": self.contexts, "samples_per_context": self.samples_per_context,
                "n_exemplars": self.n_exemplars,
                "context_sizes": list(self.context_sizes) if self.context_sizes is not None else None}


@dataclass(frozen=True)
class CallLimits:
    """How model calls are made and paid for: calls in flight, retries, timeouts, budget, prices."""

    concurrency: int = 16
    request_timeout: float = 120.0
    max_attempts: int = 8
    retry_wait: float = 0.5
    budget: Budget = Budget()
    prices: dict[str, Price] = field(default_factory=dict)

    def policy(self) -> RetryPolicy:
        """The retry policy of every model call."""
        return RetryPolicy(max_attempts=self.max_attempts, initial_wait=self.retry_wait, timeout=self.request_timeout)

    def price(self, model_id: str, spec: ModelSpec) -> Price | None:
        """The price of a model (looked up by model id, then ``backend:model``, then the model name)."""
        return self.prices.get(model_id) or self.prices.get(f"{spec.backend}:{spec.model}") or self.prices.get(spec.model)


@dataclass(frozen=True)
class RunOutput:
    """Where a run writes and how it shows itself."""

    out_dir: Path = Path("results")
    use_cache: bool = True
    cache_dir: Path | None = None
    progress: str = "auto"  # auto | rich | plain | off
    summary_to: str = "stdout"  # stdout | stderr | off
    resume_id: str | None = None  # when set, the run must already exist under this id

    def cache_location(self) -> Path | None:
        """The draw cache directory, or None when the cache is off."""
        return (self.cache_dir or default_cache_dir(self.out_dir)) if self.use_cache else None


@dataclass(frozen=True)
class Execution:
    """Where the generate phase runs: in this process (``local``) or sharded over a Ray cluster (``ray``)."""

    executor: str = "local"
    ray_address: str = "auto"  # auto: $RAY_ADDRESS, else a running local cluster, else a new local one


@dataclass(frozen=True)
class EstimationSettings:
    """Which estimators run (None: every registered one) and their bootstrap size."""

    estimators: tuple[str, ...] | None = None
    n_boot: int = 1000


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``run`` needs, flat: one model, one task, where to write, how hard to push.

    ``samples`` (``-n``) overrides the total draws per pool; ``contexts``/``samples_per_context``/
    ``n_exemplars`` override the task's plan. ``None`` means "as the task says". The phases read
    the parts: :attr:`plan`, :attr:`limits`, :attr:`output`, :attr:`estimation`.
    """

    model: ModelSpec
    task: str | Path | TaskSpec
    out_dir: Path = Path("results")
    seed: int | None = None
    samples: int | None = None
    contexts: int | None = None
    samples_per_context: int | None = None
    n_exemplars: int | None = None
    context_sizes: tuple[int, ...] | list[int] | None = None
    concurrency: int = 16
    use_cache: bool = True
    cache_dir: Path | None = None
    max_cost: float | None = None
    max_tokens: int | None = None
    prices: dict[str, Price] = field(default_factory=dict)
    request_timeout: float = 120.0
    max_attempts: int = 8
    retry_wait: float = 0.5  # first backoff in seconds after a transient error (doubles each retry)
    progress: str = "auto"
    summary_to: str = "stdout"
    estimators: tuple[str, ...] | None = None
    n_boot: int = 1000
    resume_id: str | None = None
    executor: str = "local"
    ray_address: str = "auto"

    def __post_init__(self):
        for name in ("samples", "contexts", "samples_per_context"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}", f"pass --{name.replace('_', '-')} 1 or more")
        if self.n_exemplars is not None and self.n_exemplars < 0:
            raise UsageError(f"--exemplars must be 0 or more, got {self.n_exemplars}", "pass --exemplars 0 or more")
        if self.context_sizes is not None:
            if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in self.context_sizes):
                raise UsageError(f"--context-sizes must be whole numbers of exemplars, got {list(self.context_sizes)}",
                                 "pass e.g. --context-sizes 0 1 3, or --context-sizes alone for no curve")
            object.__setattr__(self, "context_sizes", tuple(sorted(set(self.context_sizes))))
        self._check_limits()
        self._check_execution()
        if self.n_boot < 1:  # the estimators' own floor; the command line asks for MIN_N_BOOT (harness.cli.common)
            raise UsageError(f"--n-boot must be at least 1, got {self.n_boot}", "pass --n-boot 1000")
        if self.summary_to not in {"stdout", "stderr", "off"}:
            raise UsageError(f"summary destination {self.summary_to!r} is unknown", "use stdout, stderr or off")
        if self.progress not in {"auto", "rich", "plain", "off"}:
            raise UsageError(f"progress mode {self.progress!r} is unknown", "use auto, rich, plain or off")

    def _check_limits(self) -> None:
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {self.concurrency}", "pass --concurrency 1 or more")
        if self.max_cost is not None and not (math.isfinite(self.max_cost) and self.max_cost > 0):
            raise UsageError(f"--max-cost must be positive, got {self.max_cost}", "pass e.g. --max-cost 5")
        if not (math.isfinite(self.request_timeout) and self.request_timeout > 0):
            raise UsageError(f"--request-timeout must be a positive number of seconds, got {self.request_timeout}",
                             "pass e.g. --request-timeout 120")
        if self.max_attempts < 1:
            raise UsageError(f"--max-attempts must be at least 1, got {self.max_attempts}", "pass --max-attempts 1 or more")
        if not (math.isfinite(self.retry_wait) and self.retry_wait >= 0):
            raise UsageError(f"--retry-wait must be 0 or more seconds, got {self.retry_wait}", "pass e.g. --retry-wait 0.5")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise UsageError(f"--max-tokens must be positive, got {self.max_tokens}", "pass e.g. --max-tokens 100000")

    def _check_execution(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor {self.executor!r} is unknown", "use --executor local or --executor ray")
        if self.executor == "ray" and (self.max_cost is not None or self.max_tokens is not None):
            raise UsageError("--max-cost and --max-tokens are not enforced across Ray workers",
                             "drop them, or run with --executor local")

    @property
    def plan(self) -> RunPlan:
        """What the run measures (the run id's material)."""
        return RunPlan(self.model, self.task, self.seed, self.samples, self.contexts, self.samples_per_context, self.n_exemplars,
                       self.context_sizes)

    @property
    def limits(self) -> CallLimits:
        """How model calls are made and paid for."""
        return CallLimits(self.concurrency, self.request_timeout, self.max_attempts, self.retry_wait,
                          Budget(self.max_tokens, self.max_cost), self.prices)

    @property
    def output(self) -> RunOutput:
        """Where the run writes and how it shows itself."""
        return RunOutput(self.out_dir, self.use_cache, self.cache_dir, self.progress, self.summary_to, self.resume_id)

    @property
    def execution(self) -> Execution:
        """Where the generate phase runs."""
        return Execution(self.executor, self.ray_address)

    @property
    def estimation(self) -> EstimationSettings:
        """Which estimators run."""
        return EstimationSettings(self.estimators, self.n_boot)


def sampling_spec(spec: ModelSpec) -> ModelSpec:
    """The spec without runtime-only options: its ``model_id`` keys runs and the cache."""
    return ModelSpec(spec.backend, spec.model, {k: v for k, v in spec.options.items() if k not in RUNTIME_OPTIONS}, spec.label)
