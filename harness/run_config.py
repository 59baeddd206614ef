"""What one run is asked to do (:class:`RunConfig`), price tables and budgets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import UsageError
from harness.modelspec import ModelSpec
from harness.taskspec import TaskSpec

# Backends that talk HTTP and size their connection pool from a ``concurrency`` option.
HTTP_BACKENDS = frozenset({"openai"})
# Options that change how a backend runs but never what it samples: kept out of model ids.
RUNTIME_OPTIONS = frozenset({"concurrency"})


@dataclass(frozen=True)
class Price:
    """US dollars per 1M prompt and completion tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Cost of the given token counts."""
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1_000_000


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``run`` needs: one model, one task, where to write, how hard to push.

    ``samples`` (``-n``) overrides the total draws per pool; ``contexts``/``samples_per_context``/
    ``n_exemplars`` override the task's plan. ``None`` means "as the task says". Overrides that
    change the plan are part of the run id; ``concurrency``, budgets and the cache are not.
    """

    model: ModelSpec
    task: str | Path | TaskSpec
    out_dir: Path = Path("results")
    seed: int | None = None
    samples: int | None = None
    contexts: int | None = None
    samples_per_context: int | None = None
    n_exemplars: int | None = None
    concurrency: int = 16
    use_cache: bool = True
    cache_dir: Path | None = None
    max_cost: float | None = None
    max_tokens: int | None = None
    prices: dict[str, Price] = field(default_factory=dict)
    request_timeout: float = 120.0
    max_attempts: int = 8
    retry_wait: float = 0.5  # first backoff in seconds after a transient error (doubles each retry)
    progress: str = "auto"  # auto | rich | plain | off
    summary_to: str = "stdout"  # where the estimates table is printed: stdout | stderr | off
    estimators: tuple[str, ...] | None = None  # None: every registered estimator
    n_boot: int = 1000
    resume_id: str | None = None  # when set, the run must already exist under this id

    def __post_init__(self):
        for name in ("samples", "contexts", "samples_per_context"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}", f"pass --{name.replace('_', '-')} 1 or more")
        if self.n_exemplars is not None and self.n_exemplars < 0:
            raise UsageError(f"--exemplars must be 0 or more, got {self.n_exemplars}", "pass --exemplars 0 or more")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {self.concurrency}", "pass --concurrency 1 or more")
        if self.max_cost is not None and not (math.isfinite(self.max_cost) and self.max_cost > 0):
            raise UsageError(f"--max-cost must be positive, got {self.max_cost}", "pass e.g. --max-cost 5")
        if not (math.isfinite(self.request_timeout) and self.request_timeout > 0):
            raise UsageError(f"--request-timeout must be a positive number of seconds, got {self.request_timeout}",
                             "pass e.g. --request-timeout 120")
        if self.n_boot < 1:  # the estimators' own floor; the command line asks for MIN_N_BOOT (harness.cli.common)
            raise UsageError(f"--n-boot must be at least 1, got {self.n_boot}", "pass --n-boot 1000")
        if self.max_attempts < 1:
            raise UsageError(f"--max-attempts must be at least 1, got {self.max_attempts}", "pass --max-attempts 1 or more")
        if not (math.isfinite(self.retry_wait) and self.retry_wait >= 0):
            raise UsageError(f"--retry-wait must be 0 or more seconds, got {self.retry_wait}", "pass e.g. --retry-wait 0.5")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise UsageError(f"--max-tokens must be positive, got {self.max_tokens}", "pass e.g. --max-tokens 100000")
        if self.summary_to not in {"stdout", "stderr", "off"}:
            raise UsageError(f"summary destination {self.summary_to!r} is unknown", "use stdout, stderr or off")
        if self.progress not in {"auto", "rich", "plain", "off"}:
            raise UsageError(f"progress mode {self.progress!r} is unknown", "use auto, rich, plain or off")

    def overrides(self) -> dict[str, Any]:
        """The plan overrides that make this a different evaluation (run-id material)."""
        return {"samples": self.samples, "contexts": self.contexts, "samples_per_context": self.samples_per_context,
                "n_exemplars": self.n_exemplars}

    def price(self, model_id: str) -> Price | None:
        """The price of this run's model (looked up by model id, then ``backend:model``)."""
        return self.prices.get(model_id) or self.prices.get(f"{self.model.backend}:{self.model.model}") or self.prices.get(self.model.model)


def sampling_spec(spec: ModelSpec) -> ModelSpec:
    """The spec without runtime-only options: its ``model_id`` keys runs and the cache."""
    return ModelSpec(spec.backend, spec.model, {k: v for k, v in spec.options.items() if k not in RUNTIME_OPTIONS}, spec.label)


def backend_spec(spec: ModelSpec, concurrency: int) -> ModelSpec:
    """The spec handed to the backend: HTTP backends get ``concurrency`` so their pool matches."""
    if spec.backend in HTTP_BACKENDS and "concurrency" not in spec.options:
        return ModelSpec(spec.backend, spec.model, {**spec.options, "concurrency": concurrency}, spec.label)
    return spec


def load_prices(path: str | Path) -> dict[str, Price]:
    """Read a price table: YAML ``model_id: {prompt: USD per 1M, completion: USD per 1M}``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"price file {path} does not exist", "pass a YAML file: MODEL: {prompt: 0.15, completion: 0.6}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"price file {path} is not valid YAML: {first}", "fix its syntax") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"price file {path} is not a mapping of models to prices", "write MODEL: {prompt: 0.15, completion: 0.6}")
    prices = {}
    for model, entry in data.items():
        try:
            prompt, completion = float(entry["prompt"]), float(entry["completion"])
        except (TypeError, KeyError, ValueError):
            raise UsageError(
                f"price file {path}: entry {model!r} needs numeric prompt and completion prices",
                "write MODEL: {prompt: 0.15, completion: 0.6} (USD per 1M tokens)",
            ) from None
        if prompt < 0 or completion < 0:
            raise UsageError(f"price file {path}: entry {model!r} has a negative price", "use prices of 0 or more")
        prices[str(model)] = Price(prompt, completion)
    return prices


@dataclass
class Usage:
    """Tokens and cost so far (one run, or one pool of it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def add(self, prompt_tokens: int, completion_tokens: int, price: Price | None) -> None:
        """Count one completion."""
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if price is not None:
            self.cost += price.cost(prompt_tokens, completion_tokens)

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "cost": round(self.cost, 6)}


def budget_reached(config: RunConfig, usage: Usage) -> str | None:
    """Which budget the spending so far has reached (a message), or None."""
    if config.max_tokens is not None and usage.tokens >= config.max_tokens:
        return f"token budget reached ({usage.tokens:,} of {config.max_tokens:,} tokens)"
    if config.max_cost is not None and usage.cost >= config.max_cost:
        return f"cost budget reached (${usage.cost:.4f} of ${config.max_cost:.4f})"
    return None
