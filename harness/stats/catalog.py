"""The estimators of :mod:`harness.stats` by name: how to build each, and what it measures.

The ``builtin-estimators`` plugin registers these, and :mod:`harness.testing.calibration` builds
them by name. Options every one understands: ``n_boot`` (overrides the run's). THEORY.md says what
each one measures. The sync and Goodhart curves (:mod:`harness.stats.sync`,
:mod:`harness.stats.goodhart`) have plugins of their own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _lazy(module: str, name: str) -> Callable[[dict | None], Any]:
    """A constructor that imports its module on first use.

    scipy and scikit-learn cost seconds to import; every ``mimic`` command loads the plugin that
    registers these, and only runs that estimate need them.
    """

    def construct(options: dict | None = None):
        return getattr(importlib.import_module(module), name)(options)

    construct.__name__ = name
    return construct


# name: (constructor taking the options, description)
ESTIMATORS: dict[str, tuple[Callable[[dict | None], Any], str]] = {
    "control_success": (_lazy("harness.stats.est_rates", "ControlSuccess"),
                        "P_Q(Z'=z) per targeted condition; Wilson, design-effect adjusted for S > 1"),
    "latent_shift": (_lazy("harness.stats.est_shift", "LatentShift"),
                     "TV / W1-over-IQR between F(H|Z=z) and Q(H'|Z'=z); noise floor, debiased, test"),
    "correlation_shift": (_lazy("harness.stats.est_shift", "CorrelationShift"),
                          "corr_Q(Z',H') - corr_F(Z,H) under none; cluster bootstrap"),
    "lift_shift": (_lazy("harness.stats.est_shift", "LiftShift"),
                   "E_Q[H'|Z'=z] - E_F[H|Z=z] per targeted condition; cluster bootstrap"),
    "forcing_mass": (_lazy("harness.stats.est_forcing", "ForcingMass"),
                     "m_K = P(K extra world draws succeed | R=1), K=1..16, with the 2(1-m) bound"),
    "transfer_gap": (_lazy("harness.stats.est_text", "TransferGap"),
                     "TSTS - TRTS balanced accuracy of a TF-IDF + logistic-regression classifier"),
    "detection": (_lazy("harness.stats.est_text", "Detection"),
                  "classifier two-sample test reference vs mimic text: AUC and similarity"),
    "format_adherence": (_lazy("harness.stats.est_format", "FormatAdherence"),
                         "share of chat answers holding a parsable item, per pool; exact cluster-robust interval"),
}
