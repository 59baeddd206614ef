"""Built-in plugin ``builtin-sync``: the ``sync_curve`` estimator (synchronisation curves, issue 10).

One estimator object emits every synchronisation row; the row scheme (``sync_marginal``,
``sync_context_population``, ``sync_context_exemplars``, ``sync_rate``) and the statistics are
documented in :mod:`harness.stats.sync`. Options: ``n_boot`` (overrides the run's), ``features``
(a list of feature names; default: the proxy and the latents), ``band_level`` (0.95: the
probability that a synchronised mimic stays inside the noise band at every context size).
"""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.protocols import Estimate, EstimationInputs


class SyncCurve:
    """Distances between the reference and the mimic at each context size, and their rate of decay."""

    name = "sync_curve"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - {"n_boot", "features", "band_level"})
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} (allowed: band_level, features, n_boot)")
        self.band_level = float(options.get("band_level", 0.95))
        if not 0.5 <= self.band_level < 1:
            raise ValueError(f"option `band_level` must be in [0.5, 1), got {self.band_level}")
        self.n_boot = options.get("n_boot")
        features = options.get("features")
        if features is not None and (not isinstance(features, list) or not all(isinstance(f, str) for f in features)):
            raise ValueError(f"option `features` must be a list of feature names, got {features!r}")
        self.features = features

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Sync rows for the task's ``context_sizes`` (none when the task plans no curve)."""
        from harness.stats.sync import sync_estimates  # scipy: imported when a run estimates, not at plugin load

        return sync_estimates(inputs, self.n_boot, self.features, self.band_level)


def create_sync_curve(options, ctx=None) -> SyncCurve:
    """Build the ``sync_curve`` estimator from its options."""
    return SyncCurve(options)


@hookimpl
def register_estimators(register):
    """Register ``sync_curve``."""
    register("sync_curve", create_sync_curve,
             "synchronisation curve: marginal and per-context distances to F and to the context's exemplars vs n, and rates")
