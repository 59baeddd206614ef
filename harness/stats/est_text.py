"""Estimators on the text itself: transfer gap (TRTS vs TSTS) and detection (classifier two-sample test).

transfer_gap, per selection and categorical/binary latent H: a TF-IDF + logistic-regression
classifier trained on the reference items predicts H on the selection's kept items (TRTS); the
same classifier cross-validated on the kept items (folds split by context, so a context never
sits on both sides) gives TSTS; gap = TSTS - TRTS in **balanced accuracy** (mean per-class
recall over the classes scored). Classes scored: levels with at least ``min_class`` (default 10)
rows in the reference AND in the kept items; kept rows with other labels are dropped (counted in
``dropped``); fewer than two such classes, or fewer than two contexts, gives no row.
Numeric latents are skipped.

detection, per selection: the same classifier separates reference items (the comparison rows of
:func:`harness.stats.common.reference_for`, at most ``max_reference`` of them, drawn with the
estimate's seed) from the kept items. A seeded split puts ``test_share`` (default half) of the
reference rows and of the mimic contexts (whole contexts) in a test half; the classifier is
trained on the rest and the point is its AUC on the test half (mimic scored higher = detected;
mimic items weighted by the selection's weights). The estimand is therefore the AUC, on fresh
reference and mimic items, of the classifier this sample trained: how detectable the mimic is
by this pipeline, not the Bayes-optimal AUC (a weaker classifier detects less). The interval
resamples the test items (reference rows, mimic contexts) with the classifier fixed, which is
exact for that estimand because no test item trained it. Cross-fitting (k folds, every item
scored once) would test on every item, but each item then trains the classifiers that score the
other folds, and no resampling with the classifiers held fixed sees that: pooled
out-of-fold scores read AUC 0.62 for a planted 0.64 (Forman & Scholz 2010), and the mean of
per-fold AUCs, though unbiased, covered a planted AUC of 0.5 only 85-87% of the time. Note
``similarity`` = 1 - (2 max(0.5, AUC) - 1), its interval mapped from the AUC interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.pipeline import Pipeline

from harness.protocols import Estimate, EstimationInputs, Selection
from harness.stats.bootstrap import Clusters
from harness.stats.classifiers import auc_with_draws, balanced_accuracy_gap, out_of_fold, text_classifier
from harness.stats.common import clusters_of, kind_of, latents, reference_for, rng_for, row, valid, values_of
from harness.stats.intervals import clipped, cluster_stretch, percentile


def _with_text(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("text").is_not_null()) if "text" in frame.columns else frame.clear()


def _labels(frame: pl.DataFrame, h: str) -> np.ndarray:
    """Class labels as text (0/1 features become "0.0"/"1.0" on both sides alike)."""
    return values_of(frame.get_column(f"feat_{h}"), "categorical")


class TransferGap:
    """TSTS - TRTS balanced accuracy of a reference-trained text classifier (see module docstring)."""

    name = "transfer_gap"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.n_boot = options.get("n_boot")
        self.min_class = int(options.get("min_class", 10))
        self.n_splits = int(options.get("n_splits", 5))

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """One row per (selection, categorical/binary latent) that passes the class rule."""
        if "text" not in inputs.reference.columns or "text" not in inputs.draws.columns:
            return []
        out = []
        for h in latents(inputs):
            if kind_of(inputs, h) == "numeric":
                continue
            ref = _with_text(valid(inputs.reference, h))
            ref_y = _labels(ref, h)
            levels, counts = np.unique(ref_y, return_counts=True)
            common = levels[counts >= self.min_class]
            if common.size < 2:
                continue
            train = np.isin(ref_y, common)
            model = text_classifier(common.size).fit(ref.get_column("text").to_numpy()[train], ref_y[train])
            for sel in inputs.selections:
                mim = _with_text(valid(sel.kept, h))
                y = _labels(mim, h)
                present, n_present = np.unique(y, return_counts=True)
                classes = np.intersect1d(common, present[n_present >= self.min_class])
                keep = np.isin(y, classes)
                if classes.size < 2:
                    continue
                mim, y = mim.filter(pl.Series(keep)), y[keep]
                clusters = clusters_of(mim)
                if clusters.n_clusters < 2:
                    continue
                texts = mim.get_column("text").to_numpy()
                weights = None if clusters.uniform else clusters.weights / clusters.weights.mean()
                try:
                    tsts_pred = out_of_fold(texts, y, clusters.labels, n_splits=self.n_splits, sample_weight=weights)
                except ValueError:
                    continue  # a training fold with a single class: the data cannot support TSTS
                rng = rng_for(inputs, self.name, sel.condition, h)
                trts, tsts, gap, draws = balanced_accuracy_gap(rng, classes, y, model.predict(texts), tsts_pred,
                                                               clusters, int(self.n_boot or inputs.n_boot))
                # The resamples hold the out-of-fold classifiers fixed, so they miss how TSTS varies with its
                # training folds: Nadeau & Bengio's (2003, Machine Learning 52) corrected variance for
                # cross-validation, (1 + n_test / n_train), i.e. 1 + 1 / (k - 1) for k folds, widens the spread
                # (without it: 0.917-0.932 at 4-8 contexts). A gap of balanced accuracies lies in [-1, 1]:
                # the widened interval is cut to it.
                folds = min(self.n_splits, clusters.n_clusters)
                stretch = cluster_stretch(clusters.effective) * np.sqrt(1 + 1 / max(folds - 1, 1))
                lower, upper = clipped(*percentile(draws, stretch=stretch), -1.0, 1.0)
                out.append(row(self.name, sel.condition, h, gap, (lower, upper), mim.height, "cluster-bootstrap-percentile",
                               metric="balanced_accuracy", trts=trts, tsts=tsts, classes=[str(c) for c in classes],
                               dropped=int((~keep).sum()), n_reference=int(train.sum()), contexts=clusters.n_clusters,
                               folds=min(self.n_splits, clusters.n_clusters)))
        return out


@dataclass(frozen=True)
class Holdout:
    """A detection classifier trained on one part of a selection's comparison, with its test part scored."""

    model: Pipeline
    scores: np.ndarray  # decision values of the test items, reference first
    is_mimic: np.ndarray
    ref_clusters: Clusters  # test reference rows (i.i.d.)
    mim_clusters: Clusters  # test mimic rows, by context, with the selection's weights
    label: str
    n_reference: int
    n_kept: int
    contexts: int
    rng: np.random.Generator


class Detection:
    """Classifier two-sample test, reference vs kept items: AUC and similarity (see module docstring)."""

    name = "detection"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.n_boot = options.get("n_boot")
        self.min_rows = int(options.get("min_rows", 10))
        self.max_reference = int(options.get("max_reference", 5000))
        self.test_share = float(options.get("test_share", 0.5))

    def holdout(self, inputs: EstimationInputs, sel: Selection) -> Holdout | None:
        """Split, train and score for one selection (None without enough text or mimic contexts)."""
        ref_rows, label = reference_for(inputs, sel)
        ref, mim = _with_text(ref_rows), _with_text(sel.kept)
        if ref.height < self.min_rows or mim.height < self.min_rows:
            return None
        rng = rng_for(inputs, self.name, sel.condition, "text")
        if ref.height > self.max_reference:
            ref = ref[np.sort(rng.choice(ref.height, self.max_reference, replace=False))]
        mim_cl = clusters_of(mim)
        n_test_ctx = round(self.test_share * mim_cl.n_clusters)
        n_test_ref = round(self.test_share * ref.height)
        if not (2 <= n_test_ctx < mim_cl.n_clusters and 2 <= n_test_ref < ref.height - 1):
            return None
        # whole contexts go to one side of the split: a context's samples are not independent
        test_ctx = np.zeros(mim_cl.n_clusters, bool)
        test_ctx[rng.permutation(mim_cl.n_clusters)[:n_test_ctx]] = True
        test_ref = np.zeros(ref.height, bool)
        test_ref[rng.permutation(ref.height)[:n_test_ref]] = True
        test_mim = test_ctx[mim_cl.labels]
        ref_text, mim_text = ref.get_column("text").to_numpy(), mim.get_column("text").to_numpy()
        train_y = np.r_[np.zeros((~test_ref).sum(), int), np.ones((~test_mim).sum(), int)]
        model = text_classifier(2).fit(np.concatenate([ref_text[~test_ref], mim_text[~test_mim]]), train_y)
        scores = model.decision_function(np.concatenate([ref_text[test_ref], mim_text[test_mim]]))
        is_mimic = np.r_[np.zeros(test_ref.sum(), bool), np.ones(test_mim.sum(), bool)]
        test_cl = Clusters.build(mim_cl.labels[test_mim], mim_cl.weights[test_mim], int(test_mim.sum()))
        return Holdout(model, scores, is_mimic, Clusters.build(None, None, int(test_ref.sum())), test_cl, label,
                       ref.height, mim.height, mim_cl.n_clusters, rng)

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """One row per selection with enough text on both sides (and at least 2 mimic contexts to test on)."""
        if "text" not in inputs.reference.columns or "text" not in inputs.draws.columns:
            return []
        out = []
        for sel in inputs.selections:
            fit = self.holdout(inputs, sel)
            if fit is None:
                continue
            auc, draws = auc_with_draws(fit.rng, fit.scores, fit.is_mimic, fit.ref_clusters, fit.mim_clusters,
                                        int(self.n_boot or inputs.n_boot))
            lower, upper = percentile(draws, stretch=cluster_stretch(fit.mim_clusters.effective))
            lower, upper = clipped(lower, upper, 0.0, 1.0)  # the few-cluster stretch must not leave AUC's range
            sim = lambda a: 1 - (2 * max(0.5, a) - 1)  # noqa: E731 - the essay's similarity
            out.append(row(self.name, sel.condition, "text", auc, (lower, upper), fit.n_kept, "holdout-cluster-bootstrap-percentile",
                           similarity=sim(auc), similarity_lower=sim(upper), similarity_upper=sim(lower),
                           reference=fit.label, n_reference=fit.n_reference, contexts=fit.contexts,
                           test_reference=fit.ref_clusters.n, test_contexts=fit.mim_clusters.n_clusters,
                           test_mimic=fit.mim_clusters.n))
        return out
