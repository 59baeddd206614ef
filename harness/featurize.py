"""Build a task's feature extractors and compute ``feat_<name>`` columns.

The SAME extractor objects run on reference items and on generated items, so measurement error is
symmetric between F and Q (THEORY: Feature).
"""

from __future__ import annotations

import polars as pl

from harness.errors import PluginError, TaskError
from harness.factories import create_component
from harness.paths import display_path
from harness.protocols import BuildContext, Feature
from harness.registry import Registries
from harness.taskspec import TaskSpec

KIND_DTYPES = {"categorical": pl.Utf8, "numeric": pl.Float64, "binary": pl.Float64}


def _where(task: TaskSpec) -> str:
    return display_path(task.source_path) if task.source_path else task.name


def build_features(task: TaskSpec, registries: Registries, ctx: BuildContext) -> dict[str, Feature]:
    """One extractor per declared feature, keyed by feature name (column ``feat_<name>``)."""
    where = _where(task)
    features: dict[str, Feature] = {}
    for ref in task.features:
        field = f"features.{ref.name}"
        if ref.type not in registries.features:
            known = ", ".join(registries.features.names()) or "none installed"
            raise TaskError(f"{where}: field `{field}.type` names unknown feature {ref.type!r} (known: {known})",
                            "use a known feature or install the plugin that adds it")
        try:
            feature = create_component(registries.features, ref.type, ref.options, ctx, where=f"{where}: field `{field}`")
        except PluginError as exc:  # bad options are a mistake in the task file, so report it as one
            raise TaskError(exc.message, exc.hint) from exc
        kind = getattr(feature, "kind", None)
        if kind not in KIND_DTYPES or not callable(getattr(feature, "extract", None)):
            plugin = registries.features.get(ref.type).plugin
            raise PluginError(f"feature {ref.type!r} (plugin {plugin}) built an object without a valid kind/extract",
                              "its factory must return an object with kind in categorical/numeric/binary and extract(texts)")
        features[ref.name] = feature
    return features


def compute_features(features: dict[str, Feature], texts: pl.Series) -> pl.DataFrame:
    """One ``feat_<name>`` column per feature: Utf8 for categorical, Float64 for numeric/binary; null texts give null."""
    texts = texts.cast(pl.Utf8)
    missing = texts.is_null()
    columns = []
    for name, feature in features.items():
        try:
            values = feature.extract(texts.fill_null(""))
        except Exception as exc:  # a third-party extractor must fail in one line naming it, not as an internal error
            raise PluginError(f"feature {name!r} failed: {type(exc).__name__}: {exc}",
                              "fix the feature's options, or report it to the plugin that provides it") from exc
        if not isinstance(values, pl.Series) or len(values) != len(texts):
            got = len(values) if isinstance(values, pl.Series) else type(values).__name__
            raise PluginError(f"feature {name!r} returned {got} values for {len(texts)} texts",
                              "its extract() must return a polars Series of the same length")
        dtype = KIND_DTYPES[feature.kind]
        values = values.cast(dtype, strict=False)
        if missing.any():
            values = pl.select(pl.when(missing).then(None).otherwise(values).cast(dtype)).to_series()
        columns.append(values.alias(f"feat_{name}"))
    return pl.DataFrame(columns)
