"""Built-in plugin ``builtin-estimators``: registers the estimators of :data:`harness.stats.catalog.ESTIMATORS`.

Control success, latent/correlation/lift shift, forcing mass, transfer gap, detection: their
statistics live in :mod:`harness.stats`; each factory takes ``(options, ctx)``.
"""

from __future__ import annotations

from harness.hookspecs import hookimpl
from harness.stats.catalog import ESTIMATORS


def _factory(construct):
    def factory(options, ctx=None):
        return construct(options)

    factory.__doc__ = f"Build a {construct.__name__} estimator from its options."
    return factory


@hookimpl
def register_estimators(register):
    """Register the built-in estimators."""
    for name, (construct, description) in ESTIMATORS.items():
        register(name, _factory(construct), description)
