"""Build the registered estimators and run them into one estimates table."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping

import polars as pl

from harness.errors import HarnessError, PluginError
from harness.factories import create_component
from harness.protocols import BuildContext, Estimate, EstimationInputs, Estimator
from harness.records import ESTIMATE_SCHEMA, json_safe
from harness.registry import Registries


def build_estimators(registries: Registries, ctx: BuildContext, names: Iterable[str] | None = None,
                     options: Mapping[str, Mapping] | None = None) -> dict[str, Estimator]:
    """Instantiate estimators by name (all registered ones when ``names`` is None); ``options[name]`` go to its factory."""
    chosen = list(names) if names is not None else registries.estimators.names()
    options = options or {}
    return {name: create_component(registries.estimators, name, options.get(name, {}), ctx, where="estimators")
            for name in chosen}


def estimates_frame(rows: Iterable[Estimate]) -> pl.DataFrame:
    """The estimates table (contract columns, ``note`` as a JSON object string); a missing point or
    interval end (NaN) is null, as polars, pandas and duckdb read a missing value."""
    data = [{"estimator": r.estimator, "condition": r.condition, "feature": r.feature, "point": json_safe(r.point),
             "lower": json_safe(r.lower), "upper": json_safe(r.upper), "n": r.n, "method": r.method,
             "note": json.dumps(json_safe(dict(r.note)), sort_keys=True, default=str)} for r in rows]
    return pl.DataFrame(data, schema=ESTIMATE_SCHEMA)


def run_estimators(estimators: Mapping[str, Estimator], inputs: EstimationInputs, *, on_error: str = "raise") -> pl.DataFrame:
    """Run every estimator on the inputs; rows in estimator order, then as each estimator returned them.

    A failing estimator raises :class:`PluginError` naming it (``on_error="raise"``), or is
    skipped with a warning (``on_error="warn"``) so the others' rows survive.
    """
    rows: list[Estimate] = []
    for name, estimator in estimators.items():
        try:
            rows.extend(estimator.estimate(inputs))
        except HarnessError:
            raise
        except Exception as exc:
            message = f"estimator {name} failed: {type(exc).__name__}: {exc}"
            if on_error == "warn":
                warnings.warn(message, RuntimeWarning, stacklevel=2)
                continue
            raise PluginError(message, "rerun with --debug and report it to the estimator's plugin") from exc
    return estimates_frame(rows)
