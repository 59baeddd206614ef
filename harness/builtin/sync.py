"""Built-in plugin ``builtin-sync``: registers the ``sync_curve`` estimator (synchronisation curves, issue 10).

One estimator object emits every synchronisation row; the row scheme (``sync_marginal``,
``sync_context_population``, ``sync_context_exemplars``, ``sync_rate``), the statistics and the
options are documented in :mod:`harness.stats.sync` (:class:`harness.stats.sync.SyncCurve`).
"""

from __future__ import annotations

from harness.hookspecs import hookimpl


def _create_sync_curve(options, ctx=None):
    """Build the ``sync_curve`` estimator from its options."""
    from harness.stats.sync import SyncCurve  # scipy: imported when a run builds its estimators, not at plugin load

    return SyncCurve(options)


@hookimpl
def register_estimators(register):
    """Register ``sync_curve``."""
    register("sync_curve", _create_sync_curve,
             "synchronisation curve: marginal and per-context distances to F and to the context's exemplars vs n, and rates")
