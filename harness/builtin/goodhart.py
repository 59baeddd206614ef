"""Built-in plugin ``builtin-goodhart``: registers the ``goodhart_curve`` estimator (curves and the Goodhart-proneness score).

The computation lives in :mod:`harness.stats.goodhart`; its docstring gives every formula. The estimator
emits rows of two estimators: ``goodhart_curve`` (one per point and feature) and ``goodhart_score``
(one per pool with a tilt sweep), because the score's interval needs the curve's resamples.
Options: ``n_boot`` (split-half draws of the reference noise floor; overrides the run's) and ``budget``
(KL budget of the score, nats, default 0.5). Intervals: few-cluster jackknife, see :mod:`harness.stats.curve_intervals`.
"""

from __future__ import annotations

from harness.errors import TaskError
from harness.hookspecs import hookimpl


def _create_goodhart_curve(options, ctx=None):
    """Factory for ``goodhart_curve`` (options ``n_boot``, ``budget``)."""
    from harness.stats.goodhart import GoodhartCurve  # scipy: imported when a run estimates, not at plugin load

    try:
        return GoodhartCurve(options)
    except (TypeError, ValueError) as exc:
        raise TaskError(str(exc), "goodhart_curve takes n_boot (a positive integer) and budget (nats > 0)") from None


@hookimpl
def register_estimators(register):
    """Register ``goodhart_curve``."""
    register("goodhart_curve", _create_goodhart_curve,
             "latent shift, success and m_K against KL from the pool for tilt@beta, reward@K and best-of-n; "
             "plus the Goodhart-proneness score (shift at a KL budget)")
