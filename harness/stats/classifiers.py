"""Text classifiers (TF-IDF + logistic regression) and the bootstraps of their scores.

The intervals here treat the fitted classifiers (and out-of-fold predictions) as fixed and
resample the scored items by cluster: they measure how much the score depends on which items
the mimic happened to produce, not how much it depends on the training draw.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline

from harness.stats.bootstrap import Clusters, chunk_sizes
from harness.stats.distances import Side


def text_classifier(n_classes: int = 2) -> Pipeline:
    """TF-IDF over word unigrams and bigrams + class-balanced logistic regression (deterministic).

    Two classes use liblinear (several times faster than lbfgs on sparse text, same model up
    to the solver's tolerance); more classes use lbfgs (a true multinomial model).
    """
    solver = "liblinear" if n_classes <= 2 else "lbfgs"
    return make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=50_000),
        LogisticRegression(max_iter=1000, class_weight="balanced", solver=solver, random_state=0),
    )


def out_of_fold(texts: np.ndarray, labels: np.ndarray, groups: np.ndarray, method: str = "predict",
                n_splits: int = 5, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Cross-validated predictions, folds split by ``groups`` (contexts) so a context never leaks."""
    n_groups = np.unique(groups).size
    cv = GroupKFold(n_splits=min(n_splits, n_groups))
    model = text_classifier(np.unique(labels).size)
    params = {"logisticregression__sample_weight": sample_weight} if sample_weight is not None else None
    return cross_val_predict(model, texts, labels, groups=groups, cv=cv, method=method, params=params)


def balanced_accuracy_gap(rng: np.random.Generator, classes: np.ndarray, y: np.ndarray, pred_a: np.ndarray,
                          pred_b: np.ndarray, clusters: Clusters, n_boot: int) -> tuple[float, float, float, np.ndarray]:
    """Balanced accuracy of predictions a and b on the same items, their difference b - a and its draws.

    Balanced accuracy is the mean per-class recall over the classes present, so a mimic whose
    class mix differs from the reference's is not rewarded for predicting its majority class.
    """
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)
    values = np.hstack([onehot, onehot * (pred_a == y)[:, None], onehot * (pred_b == y)[:, None]])
    k = classes.size

    def bal(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(s[:, k : 2 * k] / s[:, :k], axis=1), np.nanmean(s[:, 2 * k :] / s[:, :k], axis=1)

    a, b = bal((clusters.weights @ values)[None, :])
    draws_a, draws_b = bal(clusters.boot_sums(rng, values, n_boot))
    return float(a[0]), float(b[0]), float(b[0] - a[0]), draws_b - draws_a


def auc_with_draws(rng: np.random.Generator, scores: np.ndarray, is_mimic: np.ndarray, ref_clusters: Clusters,
                   mim_clusters: Clusters, n_boot: int) -> tuple[float, np.ndarray]:
    """Weighted AUC P(score_mimic > score_reference) + 0.5 P(tie), and its two-sample bootstrap draws.

    Scores are coded on their sorted unique values; each side's resampled score distribution is a
    mass vector, and AUC = sum_g pos[g] * (neg[< g] + 0.5 neg[g]): no pairwise loop.
    """
    grid, codes = np.unique(scores, return_inverse=True)
    ref = Side(codes[~is_mimic], ref_clusters, grid.size)
    mim = Side(codes[is_mimic], mim_clusters, grid.size)

    def auc(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
        neg, pos = np.atleast_2d(neg), np.atleast_2d(pos)
        below = np.cumsum(neg, axis=1) - neg
        return np.sum(pos * (below + 0.5 * neg), axis=1)

    draws = [auc(ref.boot(rng, b), mim.boot(rng, b)) for b in chunk_sizes(n_boot, 2 * grid.size)]
    return float(auc(ref.mass, mim.mass)[0]), np.concatenate(draws)
