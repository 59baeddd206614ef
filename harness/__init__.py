"""mimic-harness: measure how predictable language models are when you steer them.

The names in ``__all__`` are the public API for plugin authors (see docs/plugins.md): a plugin
imports them from ``harness`` and nothing else (``harness.testing`` is the test kit for its tests).
Every other module under ``harness`` is internal and may change without notice.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mimic-harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"

# Cheap modules (no numpy or polars): imported now, so `import harness` stays fast for the CLI.
from harness.errors import (  # noqa: E402
    BackendError,
    BudgetExceeded,
    DataError,
    HarnessError,
    ModelSpecError,
    PermanentBackendError,
    PluginError,
    RateLimitedError,
    RunStoreError,
    TaskError,
    TransientBackendError,
    UsageError,
)
from harness.events import RunFinished, RunStarted, SampleCompleted  # noqa: E402
from harness.hookspecs import hookimpl  # noqa: E402  (plugins write @harness.hookimpl)
from harness.machine import usable_cores  # noqa: E402
from harness.mimic import (  # noqa: E402
    Capability,
    ChatMessage,
    Completion,
    GenerationRequest,
    LoglikelihoodMimic,
    Mimic,
    TokenLogprob,
)
from harness.modelspec import ModelSpec, is_secret_option  # noqa: E402

# Names whose modules import numpy and polars: loaded on first use (PEP 562).
_LAZY = {
    **dict.fromkeys(
        ("BuildContext", "Command", "ComponentFactory", "Control", "Estimate", "EstimationInputs", "Estimator",
         "ExactWorld", "Feature", "FeatureKind", "LeaderboardData", "LeaderboardWriter", "ReferenceSource",
         "Selection", "World"),
        "harness.protocols",
    ),
    "TaskSpec": "harness.taskspec",
    # what a leaderboard writer reads: typed run manifests and parsed estimate notes
    **dict.fromkeys(("EstimateNote", "Manifest", "ManifestModel"), "harness.records"),
}

__all__ = [
    "__version__",
    # hooks
    "hookimpl",
    # mimics (backends)
    "Capability",
    "ChatMessage",
    "Completion",
    "GenerationRequest",
    "LoglikelihoodMimic",
    "Mimic",
    "ModelSpec",
    "TokenLogprob",
    "is_secret_option",
    "usable_cores",
    # components and what they receive
    *sorted(_LAZY),
    # lifecycle events
    "RunFinished",
    "RunStarted",
    "SampleCompleted",
    # errors
    "BackendError",
    "BudgetExceeded",
    "DataError",
    "HarnessError",
    "ModelSpecError",
    "PermanentBackendError",
    "PluginError",
    "RateLimitedError",
    "RunStoreError",
    "TaskError",
    "TransientBackendError",
    "UsageError",
]


def __getattr__(name: str):
    """Resolve a public name whose module is heavy (numpy, polars) on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    """Every attribute, the lazy public names included (for completion in a REPL)."""
    return sorted({*globals(), *_LAZY})
