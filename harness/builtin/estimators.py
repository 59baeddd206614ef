"""Built-in estimators: control success, latent/correlation/lift shift, forcing mass, transfer gap, detection.

Each factory takes ``(options, ctx)``; options every estimator understands: ``n_boot`` (overrides
the run's). The statistics live in :mod:`harness.stats`; THEORY.md says what each one measures.
"""

from __future__ import annotations

import importlib

from harness.hookspecs import hookimpl


def _lazy(module: str, name: str):
    """A constructor that imports its module on first use.

    scipy and scikit-learn cost seconds to import; every ``mimic`` command loads this plugin, and
    only runs that estimate need them.
    """

    def construct(options):
        return getattr(importlib.import_module(module), name)(options)

    construct.__name__ = name
    return construct


ControlSuccess = _lazy("harness.stats.est_rates", "ControlSuccess")
ForcingMass = _lazy("harness.stats.est_forcing", "ForcingMass")
CorrelationShift = _lazy("harness.stats.est_shift", "CorrelationShift")
LatentShift = _lazy("harness.stats.est_shift", "LatentShift")
LiftShift = _lazy("harness.stats.est_shift", "LiftShift")
Detection = _lazy("harness.stats.est_text", "Detection")
TransferGap = _lazy("harness.stats.est_text", "TransferGap")

ESTIMATORS = {
    "control_success": (ControlSuccess, "P_Q(Z'=z) per targeted condition; Wilson, design-effect adjusted for S > 1"),
    "latent_shift": (LatentShift, "TV / W1-over-IQR between F(H|Z=z) and Q(H'|Z'=z); noise floor, debiased, test"),
    "correlation_shift": (CorrelationShift, "corr_Q(Z',H') - corr_F(Z,H) under none; cluster bootstrap"),
    "lift_shift": (LiftShift, "E_Q[H'|Z'=z] - E_F[H|Z=z] per targeted condition; cluster bootstrap"),
    "forcing_mass": (ForcingMass, "m_K = P(K extra world draws succeed | R=1), K=1..16, with the 2(1-m) bound"),
    "transfer_gap": (TransferGap, "TSTS - TRTS balanced accuracy of a TF-IDF + logistic-regression classifier"),
    "detection": (Detection, "classifier two-sample test reference vs mimic text: AUC and similarity"),
}


def _factory(cls):
    def factory(options, ctx=None):
        return cls(options)

    factory.__doc__ = f"Build a {cls.__name__} estimator from its options."
    return factory


@hookimpl
def register_estimators(register):
    """Register the built-in estimators."""
    for name, (cls, description) in ESTIMATORS.items():
        register(name, _factory(cls), description)
