"""Statistics for the estimators: cluster bootstrap, intervals, distances, classifiers, planted truth.

Modules: ``bootstrap`` (the resampling engine and design effects), ``intervals`` (exact binomial,
Korn-Graubard, MOVER, Wilson, percentile, basic, the few-cluster rules), ``flags`` (what qualifies
an estimate, and how a withheld interval is written), ``distances`` (TV / W1 with bootstrap, null
and noise floor), ``classifiers`` (TF-IDF + logistic regression scores), ``common`` (feature kinds,
clusters, comparison rows, seeds), the estimators ``est_rates``, ``est_forcing``, ``est_shift``, ``est_text``,
``planning`` (draws needed for a width, C x S), ``synthetic`` (planted-truth tables) and
``calibration`` (coverage against planted truth).
"""
