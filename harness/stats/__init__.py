"""Statistics for the estimators: cluster bootstrap, intervals, distances, classifiers, the curves.

Modules: ``bootstrap`` (the resampling engine and design effects), ``intervals`` (exact binomial,
Korn-Graubard, MOVER, Wilson, percentile, basic, the few-cluster rules), ``flags`` (what qualifies
an estimate, and how a withheld interval is written), ``distances`` (TV / W1 with bootstrap, null
and noise floor), ``classifiers`` (TF-IDF + logistic regression scores), ``common`` (feature kinds,
clusters, comparison rows, seeds), the estimators ``est_rates``, ``est_forcing``, ``est_shift``,
``est_text`` (by name: ``catalog``), the curves ``sync`` (synchronisation) and ``goodhart`` (the
Goodhart curve and score) on the bounded scale of ``curve_scale`` with the few-context intervals of
``curve_intervals`` and ``curve_events``, and ``planning`` (draws needed for a width, C x S).
Planted-truth data and the calibration that uses it live in :mod:`harness.testing`.
"""
