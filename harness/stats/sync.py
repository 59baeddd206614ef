"""Synchronisation curves (issue 10): does the mimic's forecast merge with the reference as its context grows?

Input: the ``none``-pool draws at each context size n of ``task.context_sizes`` (rows with
``n_exemplars == n``; ``exemplar_ids`` name the context's reference rows), the reference table
and, optionally, the ``field_probs`` table (the mimic's exact predictive distribution of a header
field per context, see ``docs/contracts.md``). Pure computation on tables: no model calls.

Row scheme (the ``estimator`` field encodes the kind; leaderboards read it):

| estimator                 | condition  | point                                                             |
|---------------------------|------------|-------------------------------------------------------------------|
| `sync_marginal`           | `sync@<n>` | D(F, Q_n): TV (categorical/binary) or KS (numeric), in [0, 1],     |
|                           |            | between the reference and the outputs pooled over the contexts    |
| `sync_context_population` | `sync@<n>` | mean over contexts c of d2(P_c, F), in [0, 1]                      |
| `sync_context_exemplars`  | `sync@<n>` | mean over contexts c of d2(P_c, E_c) (n >= 1), in [0, 1]           |
| `sync_rate`               | `sync`     | b of the power law D(n) ~ a n^-b over n >= 1                       |

Every note has ``kind`` (marginal, context_vs_population, context_vs_exemplars, rate),
``n_exemplars``, ``method`` (``sampled``, ``exact-logprobs``, or ``mixed`` when only some
contexts have exact probabilities) and ``debiased``; marginal and rate notes have ``noise_floor``.
The Estimate's ``method`` is ``<that route>/<interval method>``. Distances are on the one bounded
scale of :mod:`harness.stats.curve_scale`. A row without an interval has NaN ends, ``flags`` and
``no_interval`` (:mod:`harness.stats.flags`); coverage at 2-40 contexts is measured by
:mod:`harness.testing.curve_calibration`.

- **Marginal**: the plug-in distance; its interval from the events' intervals
  (:mod:`harness.stats.curve_events`: clustered Wilson / skewness-corrected jackknife over contexts for
  the mimic, Wilson for the reference, MOVER, the maximum over events), none below 2 contexts.
  ``noise_floor`` = distance between two random halves of the reference, ``debiased`` = plug-in
  minus the mean of the no-shift null, cut to [0, 1]. A distance's interval is biased upward at zero
  shift, so "inside the noise" is judged on the point against ``noise_band``: the no-shift null of
  this design (reference rows and contexts resampled and centred, jointly over all sizes), at the
  per-size quantile that keeps ALL sizes inside together in 95% of null resamples. ``in_floor``:
  point <= noise_band; both only from ``BAND_MIN_CONTEXTS`` contexts (note ``no_band`` below it).
  ``d2`` (rate note): the unbiased squared distance (below) of the pooled outputs, with a
  cluster-robust variance correction.
- **Per context**: P_c is the mimic's predictive distribution given context c, E_c the empirical
  distribution of that context's exemplars' features (the forecast of an operator who updates
  fully), F the reference table's distribution (held fixed: its own noise, O(1/N), is left out).
  A plug-in distance from S samples per context is biased upward, and TV has no unbiased
  estimator, so these rows use *squared* distances that have one: d2 = 1/2 sum_k (p_k - q_k)^2 over
  categories (``half-l2sq``), or the Cramer-von Mises distance int (F_P - F_Q)^2 dF (``cvm``) for
  numeric features. Both are sums over events A_j of w_j (P(A_j) - Q(A_j))^2; with a binomial
  frequency a of A_j over S samples, (S a^2 - a) / (S - 1) is unbiased for P(A_j)^2, so the
  per-context estimate is exactly unbiased (contexts with S < 2 usable samples are skipped). With
  exact probabilities (``field_probs``) d2 is computed exactly. Interval: :func:`mean_over_contexts`
  (t over contexts with Hall's skewness correction), from ``PER_CONTEXT_MIN_CONTEXTS`` contexts.
  ``plug_in`` (the biased value) and ``exemplars_vs_population`` (mean d2(E_c, F): where a mimic
  that copies its context lands) help reading; for such a mimic
  E[d2(E_c, F)] = sum_j w_j F_j (1 - F_j) / n * (N - n) / (N - 1) (exemplars drawn without replacement).
- **Rate**: weighted least squares of the unbiased marginal d2 on A n^-2b over n >= 1 (weights
  1 / bootstrap variance, A >= 0, 2b on a grid in [-1, 4]), a = sqrt(A): D = sqrt(d2) decays like
  TV and KS when the shift keeps its direction, and being unbiased, its fit is not bent by noise
  (a debiased TV over-corrects at moderate shifts and steepens the fit). b is undefined (NaN)
  when A's interval reaches 0 (the curve is at noise level; note ``fit_issues`` says so).
  ``n_enter``: the smallest n from which on the marginal point is inside the band (``None``: not
  reached, or no band). Intervals: percentile, from the joint bootstrap, replicates centred on the
  point so the bootstrap's bias is not added twice; only from ``RATE_MIN_CONTEXTS`` contexts and
  ``RATE_MIN_DRAWS`` draws at every fitted size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from harness.protocols import Estimate, EstimationInputs
from harness.stats import flags as F
from harness.stats.bootstrap import chunk_sizes, resample_counts
from harness.stats.common import feature_kind, rng_for, row, values_of
from harness.stats.curve_events import distance_interval, event_matrix, pool_intervals, reference_intervals
from harness.stats.curve_intervals import (MIN_EFFECTIVE_CONTEXTS, effective_contexts, jackknife_variance,
                                           skew_corrected_mean, withheld_flag)
from harness.stats.curve_scale import DISTANCE_NAMES, SQUARED_NAMES, bounded_distance, events, squared_weights
from harness.stats.distances import code_values
from harness.stats.intervals import percentile

# The per-context rows' interval is reported only from this many contexts: their per-context values
# are skewed (a few contexts far from F), and the skewness-corrected interval still covered only
# 0.90-0.92 for some rows at 8 contexts and 0.920-0.925 at 16 (benchmarks/calibration.py, 400 reps,
# kappa 2), 0.935-0.975 at 40 (harness.testing.curve_calibration).
PER_CONTEXT_MIN_CONTEXTS = 32
# The rate's bootstrap interval is reported only from this many contexts and draws at every fitted
# size (harness.testing.curve_calibration: 0.95-0.97 at 16 x 8, 40 x 8 and 40 x 1; 0.885-0.91 at
# 8 x 1 and 16 x 1).
RATE_MIN_CONTEXTS, RATE_MIN_DRAWS = 16, 40
# The noise band (``in_floor``, ``noise_band``, ``n_enter``) is a test, and its bootstrap null is too
# narrow at few contexts: a perfectly synchronised mimic stayed inside at every size in 0.61 of
# curves at 4 contexts, 0.88 at 8, 0.90 at 16, 0.97 at 32, 0.95 at 40 (target 0.95; benchmarks/sync_curve.py
# calibration, 120 curves each). Below this many contexts the band is not reported.
BAND_MIN_CONTEXTS = 32
NO_BAND = f"the noise band needs {BAND_MIN_CONTEXTS} contexts at every size (fewer: not calibrated)"
B_GRID = np.round(np.arange(-1.0, 4.0 + 1e-9, 0.01), 2)
KIND_ESTIMATOR = {"marginal": "sync_marginal", "context_vs_population": "sync_context_population",
                  "context_vs_exemplars": "sync_context_exemplars", "rate": "sync_rate"}


def sync_row(estimator: str, condition: str, feature: str, point: float, interval: tuple[float, float], n: int,
             methods: tuple[str, str], **note) -> Estimate:
    """A sync Estimate; ``methods`` is (route, interval method): ``method`` is ``<route>/<interval method>``, and
    the note's ``method`` the route."""
    route, interval_method = methods
    est = row(estimator, condition, feature, point, interval, n, f"{route}/{interval_method}", **note)
    est.note["method"] = route
    return est


def sync_sizes(task, draws: pl.DataFrame) -> list[int]:
    """The task's context sizes that have ``none``-pool draws, ascending."""
    if not task.context_sizes or draws.height == 0 or "n_exemplars" not in draws.columns:
        return []
    present = set(draws.filter(pl.col("pool") == "none").get_column("n_exemplars").to_list())
    return sorted(n for n in set(task.context_sizes) if n in present)


def sync_features(task, reference: pl.DataFrame, draws: pl.DataFrame) -> list[str]:
    """The proxy, then the latents, that have a feature column in both tables."""
    names = [task.proxy.feature, *task.latents]
    return [f for i, f in enumerate(names) if f not in names[:i]
            and f"feat_{f}" in reference.columns and f"feat_{f}" in draws.columns]


def event_weights(kind: str, grid: np.ndarray, ref_mass: np.ndarray) -> np.ndarray:
    """Weights w_j of d2 = sum_j w_j (P(A_j) - Q(A_j))^2 (:func:`harness.stats.curve_scale.squared_weights`; ``grid`` unused)."""
    return squared_weights(kind, ref_mass)


def d2_unbiased(freq: np.ndarray, size: np.ndarray, target: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Unbiased d2(P_c, Q_c) per context from event frequencies (C, E) over ``size`` samples (C,)."""
    s = size[:, None].astype(np.float64)
    square = (s * freq**2 - freq) / (s - 1)  # unbiased for P(A_j)^2 from a binomial frequency
    return (square - 2 * freq * target + target**2) @ w


@dataclass(frozen=True)
class Coded:
    """One feature coded on a shared grid (the draws carry their codes in a ``code`` column)."""

    kind: str
    grid: np.ndarray
    ref_codes: np.ndarray  # codes of the reference rows that have the feature
    row_codes: np.ndarray  # code of every reference row, -1 where the feature is missing
    ref_of_id: dict[int, int]  # ref_id -> reference row position


def _context_masses(codes: np.ndarray, contexts: np.ndarray, ids: np.ndarray, size: int) -> np.ndarray:
    """Per-context counts (len(ids), G) of the codes (contexts not in ``ids`` are dropped)."""
    pos = np.searchsorted(ids, contexts)
    out = np.zeros((ids.size, size))
    np.add.at(out, (pos, codes), 1.0)
    return out


def exact_probabilities(task, field_probs: pl.DataFrame | None, feature: str, n: int, grid: np.ndarray,
                        kind: str) -> dict[int, np.ndarray]:
    """context_id -> exact mass on the grid for one feature and size, from the ``field_probs`` table.

    Rows match the feature by its name or its ``header_field`` option ``field``; values become
    feature values as the extractor would make them (numbers for numeric features, lowercase
    when the feature lowercases). Values outside the grid are dropped before renormalising.
    """
    if field_probs is None or field_probs.height == 0:
        return {}
    options = next((ref.options for ref in task.features if ref.name == feature), {})
    names = {feature, str(options.get("field", feature))}
    rows = field_probs.filter((pl.col("pool") == "none") & (pl.col("n_exemplars") == n) & pl.col("field").is_in(list(names)))
    out: dict[int, np.ndarray] = {}
    lookup = {v: i for i, v in enumerate(grid.tolist())}
    for cid, value, logprob in rows.select("context_id", "value", "logprob").iter_rows():
        if kind == "categorical":
            key = value.lower() if options.get("lowercase") else value
        else:
            try:
                key = float(value)
            except ValueError:
                continue
        if key in lookup:
            out.setdefault(int(cid), np.zeros(grid.size))[lookup[key]] += float(np.exp(logprob))
    return {c: m / m.sum() for c, m in out.items() if m.sum() > 0}


def mean_over_contexts(values: np.ndarray) -> tuple[float, float, float, dict, str | None]:
    """Mean of per-context squared distances: (point in [0, 1], lower, upper, note entries, withheld flag).

    The contexts are independent, so the delete-one-context jackknife of the mean is s^2 / C and
    t(C - 1) its small-sample quantile (the cluster jackknife, MacKinnon, Nielsen & Webb 2023); the
    per-context values are skewed (a few contexts far from F), so the studentised mean is first made
    symmetric by Hall's (1992) transformation (:func:`harness.stats.curve_intervals.skew_corrected_mean`).
    The interval is cut to [0, 1], the squared distances' range, which is harmless to coverage (the
    true mean lies there); the point is the unbiased mean cut to the same range (``unbiased`` in the
    note keeps it as computed, possibly below 0). No interval from fewer than
    ``PER_CONTEXT_MIN_CONTEXTS`` contexts (``too_few_contexts``) or when every context gives the same
    value (``no_variance``).
    """
    c = values.size
    if c == 0:
        return math.nan, math.nan, math.nan, {}, None
    raw = float(values.mean())
    reps = (values.sum() - values) / (c - 1) if c >= 2 else None
    flag = withheld_flag(c, float(c), reps) if c >= PER_CONTEXT_MIN_CONTEXTS else F.TOO_FEW_CONTEXTS
    point = min(max(raw, 0.0), 1.0)
    info: dict = {"unbiased": raw, "contexts": c}
    if reps is not None:
        info.update(se=math.sqrt(jackknife_variance(reps)), df=c - 1)
    if flag is not None:
        return point, math.nan, math.nan, info, flag
    lower, upper = skew_corrected_mean(values)
    return point, max(min(lower, point), 0.0), min(max(upper, point), 1.0), info, None


def _exemplar_masses(coded: Coded, frame: pl.DataFrame, ids: np.ndarray) -> np.ndarray:
    """Counts (len(ids), G) of each context's exemplars' feature values (exemplars without the feature left out)."""
    first = frame.unique("context_id", keep="first").sort("context_id")  # ids are sorted too
    out = np.zeros((ids.size, coded.grid.size))
    for i, exemplars in enumerate(first.get_column("exemplar_ids").to_list()):
        for rid in exemplars or []:
            pos = coded.ref_of_id.get(int(rid))
            if pos is not None and coded.row_codes[pos] >= 0:
                out[i, coded.row_codes[pos]] += 1.0
    return out


def per_context_rows(inputs: EstimationInputs, feature: str, coded: Coded, n: int, frame: pl.DataFrame) -> list[Estimate]:
    """``sync_context_population`` and (n >= 1) ``sync_context_exemplars`` rows for one feature and size."""
    kind, grid = coded.kind, coded.grid
    ref_mass = np.bincount(coded.ref_codes, minlength=grid.size) / coded.ref_codes.size
    w, ref_ev = event_weights(kind, grid, ref_mass), events(kind, ref_mass)
    ids = np.unique(frame.get_column("context_id").to_numpy())
    counts = _context_masses(frame.get_column("code").to_numpy(), frame.get_column("context_id").to_numpy(), ids, grid.size)
    size = counts.sum(axis=1)
    exact = exact_probabilities(inputs.task, inputs.tables.get("field_probs"), feature, n, grid, kind)
    is_exact = np.array([int(c) in exact for c in ids], dtype=bool)
    usable = is_exact | (size >= 2)
    mass = np.array([exact[int(c)] if int(c) in exact else counts[i] / max(size[i], 1) for i, c in enumerate(ids)])
    route = "exact-logprobs" if is_exact[usable].all() else ("sampled" if not is_exact[usable].any() else "mixed")
    freq = events(kind, mass)
    ex_counts = _exemplar_masses(coded, frame, ids) if n >= 1 else np.zeros((ids.size, grid.size))
    ex_size = ex_counts.sum(axis=1)
    ex_ev = events(kind, ex_counts / np.maximum(ex_size, 1)[:, None])
    targets = {"context_vs_population": (np.broadcast_to(ref_ev, freq.shape), usable)}
    if n >= 1:
        targets["context_vs_exemplars"] = (ex_ev, usable & (ex_size > 0))
    out = []
    for what, (target, keep) in targets.items():
        plug = ((freq - target) ** 2) @ w
        unbiased = np.where(is_exact, plug, d2_unbiased(freq, np.maximum(size, 2), target, w))
        point, lo, hi, info, flag = mean_over_contexts(unbiased[keep])
        if not np.isfinite(point):
            continue
        has_ex = keep & (ex_size > 0)
        copy = float((((ex_ev - ref_ev) ** 2) @ w)[has_ex].mean()) if has_ex.any() else None
        note = dict(kind=what, n_exemplars=n, distance=SQUARED_NAMES[kind], feature_kind=kind, debiased=point,
                    plug_in=float(plug[keep].mean()), exact_contexts=int((is_exact & keep).sum()),
                    samples_per_context=float(size[keep].mean()), exemplars_vs_population=copy,
                    correction="exact" if route == "exact-logprobs" else "unbiased-u-statistic", **info)
        if flag is not None:
            note = F.withheld(note, flag, contexts=int(keep.sum()),
                              needed=PER_CONTEXT_MIN_CONTEXTS if flag == F.TOO_FEW_CONTEXTS else None)
        out.append(sync_row(KIND_ESTIMATOR[what], f"sync@{n}", feature, point, (lo, hi), int(keep.sum()),
                            (route, "context-jackknife-t"), **note))
    return out


def fit_power(ns: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of rows of ``y`` (R, m) on a * ns^-b, a >= 0, b on ``B_GRID``: (a, b); b = NaN where a = 0."""
    x = ns[None, :].astype(np.float64) ** -B_GRID[:, None]  # (K, m)
    sxx = (w * x * x).sum(axis=1)
    sxy = y @ (w * x).T  # (R, K)
    a = np.maximum(sxy / sxx, 0.0)
    sse = (w * y * y).sum(axis=1)[:, None] - 2 * a * sxy + a * a * sxx
    k = np.argmin(sse, axis=1)
    a_best = a[np.arange(y.shape[0]), k]
    return a_best, np.where(a_best > 0, B_GRID[k], np.nan)


def first_inside(ns: Sequence[int], inside: np.ndarray) -> np.ndarray:
    """Per row of ``inside`` (R, m): the smallest n from which on every entry is True (inf when none)."""
    tail = np.flip(np.cumprod(np.flip(inside, axis=1), axis=1), axis=1).astype(bool)  # inside here and at every larger n
    idx = np.where(tail.any(axis=1), tail.argmax(axis=1), -1)
    return np.where(idx >= 0, np.asarray(ns, dtype=np.float64)[np.maximum(idx, 0)], np.inf)


@dataclass(frozen=True)
class Joint:
    """Joint bootstrap over the sizes: marginal distances (B, m), their centred no-shift null (B, m), and the band."""

    draws: np.ndarray
    null: np.ndarray
    d2: np.ndarray  # (m,) unbiased squared distance of the pooled outputs from F, per size
    d2_draws: np.ndarray  # (B, m) its plug-in in each resample
    band: np.ndarray  # (m,) simultaneous no-shift band: all sizes inside together in `level` of the null resamples
    band_quantile: float  # the per-size quantile of the null that achieves it


def joint_bootstrap(coded: Coded, frames: dict[int, pl.DataFrame], rng, n_boot: int, level: float = 0.95) -> Joint:
    """Resample reference rows and context ids (shared by all sizes) together; see the module docstring."""
    grid = coded.grid
    ids = np.unique(np.concatenate([f.get_column("context_id").to_numpy() for f in frames.values()]))
    per = [_context_masses(f.get_column("code").to_numpy(), f.get_column("context_id").to_numpy(), ids, grid.size)
           for f in frames.values()]
    q_hat = [m.sum(axis=0) / m.sum() for m in per]
    n_ref = coded.ref_codes.size
    p_hat = np.bincount(coded.ref_codes, minlength=grid.size) / n_ref
    w, p_ev = event_weights(coded.kind, grid, p_hat), events(coded.kind, p_hat)
    d2 = []
    for m, q in zip(per, q_hat):
        # q^2 minus the cluster-robust variance of the pooled frequency; p^2 by the binomial U-statistic.
        sizes = m.sum(axis=1)
        c_ev = events(coded.kind, m[sizes > 0] / sizes[sizes > 0, None])
        k, q_ev = c_ev.shape[0], events(coded.kind, q)
        resid = (c_ev - q_ev) * (sizes[sizes > 0, None] / sizes[sizes > 0].mean())  # linearised ratio estimator
        var = (resid**2).sum(axis=0) / (k * (k - 1)) if k > 1 else np.full(q_ev.shape, np.nan)
        d2.append(float(w @ (q_ev**2 - var - 2 * q_ev * p_ev + (n_ref * p_ev**2 - p_ev) / (n_ref - 1))))
    draws, null, d2_draws = [], [], []
    for b in chunk_sizes(n_boot, grid.size * len(per) * 4):
        counts = resample_counts(rng, ids.size, b)
        pr = rng.multinomial(coded.ref_codes.size, p_hat, size=b) / coded.ref_codes.size
        d_cols, n_cols, s_cols = [], [], []
        for m, q in zip(per, q_hat):
            qm = counts @ m
            qm = qm / np.maximum(qm.sum(axis=1, keepdims=True), 1e-300)
            d_cols.append(bounded_distance(coded.kind, pr, qm))
            s_cols.append(((events(coded.kind, qm) - events(coded.kind, pr)) ** 2) @ w)
            n_cols.append(bounded_distance(coded.kind, p_hat + (pr - p_hat) - (qm - q), p_hat))  # the centred no-shift null
        draws.append(np.column_stack(d_cols))
        null.append(np.column_stack(n_cols))
        d2_draws.append(np.column_stack(s_cols))
    draws, null, d2_draws = np.vstack(draws), np.vstack(null), np.vstack(d2_draws)
    # Raise the per-size quantile until every size is inside at once in `level` of the null resamples,
    # so a synchronised mimic stays inside the band at all sizes with 95% probability (not 95% per size).
    for q in np.concatenate([np.linspace(level, 1 - (1 - level) / 50, 50), [1.0]]):
        band = np.quantile(null, q, axis=0)
        if np.mean(np.all(null <= band, axis=1)) >= level:
            break
    return Joint(draws, null, np.array(d2), d2_draws, band, float(q))


def rate_row(inputs: EstimationInputs, feature: str, frames: dict[int, pl.DataFrame], marg: dict[int, dict],
             joint: Joint) -> Estimate:
    """The ``sync_rate`` row: exponent b of the power law fitted to the marginal d2, and n_enter, with intervals."""
    ns = np.array(list(frames))
    point = np.array([marg[n]["point"] for n in ns])
    centred = joint.draws - joint.draws.mean(axis=0) + point  # replicates centred on the plug-in point
    n_enter = first_inside(ns, (point <= joint.band)[None, :])[0]
    enter_lo, enter_hi = np.quantile(first_inside(ns, centred <= joint.band), [0.025, 0.975], method="inverted_cdf")
    pos = ns >= 1
    a, b, lo, hi, issues = float("nan"), float("nan"), float("nan"), float("nan"), []
    if pos.sum() >= 2 and not np.isfinite(joint.d2[pos]).all():
        issues.append("a size n >= 1 has fewer than two contexts: no power-law fit")
    elif pos.sum() >= 2:
        # d2 ~ A n^-2b, so sqrt(d2) ~ a n^-b with a = sqrt(A); replicates centred on the unbiased d2.
        d2, d2_draws = joint.d2[pos], joint.d2_draws[:, pos]
        w = 1.0 / np.maximum(d2_draws.std(axis=0, ddof=1), 1e-12) ** 2
        (big_a,), (b2,) = fit_power(ns[pos], d2[None, :], w)
        boot_a, boot_b2 = fit_power(ns[pos], d2_draws - d2_draws.mean(axis=0) + d2, w)
        a, b, (lo, hi) = float(np.sqrt(big_a)), b2 / 2, (float(np.clip(x / 2, B_GRID[0] / 2, B_GRID[-1] / 2))
                                                         for x in percentile(boot_b2))
        if np.mean(boot_a <= 0) > 0.025:  # a's interval reaches 0: the curve is flat at noise level
            issues.append(f"a = 0 in {np.mean(boot_a <= 0):.0%} of resamples: the curve is at noise level, b undefined")
            b, lo, hi = float("nan"), float("nan"), float("nan")
        elif b2 in (B_GRID[0], B_GRID[-1]):
            issues.append("b at the edge of the search grid [-0.5, 2]")
    else:
        issues.append("fewer than two sizes n >= 1: no power-law fit")
    fewest = min((frames[n].get_column("context_id").n_unique() for n in ns[pos]), default=0)
    draws = min((frames[n].height for n in ns[pos]), default=0)
    note: dict = {}
    if np.isfinite(b) and (fewest < RATE_MIN_CONTEXTS or draws < RATE_MIN_DRAWS):  # not calibrated there
        lo, hi = float("nan"), float("nan")
        note = F.withheld(note, F.TOO_FEW_CONTEXTS, contexts=fewest, needed=RATE_MIN_CONTEXTS)
        note["no_interval"] = (f"{fewest} contexts and {draws} draws at the smallest fitted size; the rate's interval "
                               f"needs {RATE_MIN_CONTEXTS} contexts and {RATE_MIN_DRAWS} draws")

    banded = min(f.get_column("context_id").n_unique() for f in frames.values()) >= BAND_MIN_CONTEXTS

    def whole(x):
        return int(x) if banded and np.isfinite(x) else None
    return sync_row("sync_rate", "sync", feature, b, (lo, hi), len(ns), ("sampled", "wls-power-law+joint-bootstrap-percentile"),
                    kind="rate", n_exemplars=[int(n) for n in ns], a=a, debiased=b, d2=joint.d2.tolist(),
                    n_enter=whole(n_enter), n_enter_lower=whole(enter_lo), n_enter_upper=whole(enter_hi),
                    reached=bool(np.isfinite(n_enter)) if banded else None, no_band=None if banded else NO_BAND,
                    n_enter_rule="smallest n from which on the marginal distance is inside the simultaneous no-shift band",
                    noise_floor=float(np.nanmean([marg[n]["noise_floor"] for n in ns])), band_quantile=joint.band_quantile,
                    fit_sizes=[int(n) for n in ns[pos]], contexts=fewest, fit_issues=issues or None, **note)


def split_half_floor(coded: Coded, rng: np.random.Generator, n_split: int) -> np.ndarray:
    """Distance between two random halves of the reference rows, per split: what zero shift looks like."""
    codes, size = coded.ref_codes, coded.grid.size
    if codes.size < 4:
        return np.array([])
    half, total, out = codes.size // 2, np.bincount(codes, minlength=size).astype(float), []
    for b in chunk_sizes(n_split, max(codes.size, size)):
        picks = np.argpartition(rng.random((b, codes.size)), half - 1, axis=1)[:, :half]
        first = np.bincount((codes[picks] + (np.arange(b) * size)[:, None]).ravel(), minlength=b * size).reshape(b, size)
        out.append(bounded_distance(coded.kind, first / half, (total - first) / (codes.size - half)))
    return np.concatenate(out)


def marginal_row(coded: Coded, n: int, feature: str, frame: pl.DataFrame, joint: Joint, index: int,
                 floor: np.ndarray) -> Estimate:
    """``sync_marginal``: D(F, Q_n) on the bounded scale, its interval from the events (:mod:`harness.stats.curve_events`), the band."""
    kind, size = coded.kind, coded.grid.size
    p_hat = np.bincount(coded.ref_codes, minlength=size) / coded.ref_codes.size
    contexts = frame.get_column("context_id").to_numpy()
    ids, labels = np.unique(contexts, return_inverse=True)
    counts = _context_masses(frame.get_column("code").to_numpy(), contexts, ids, size)
    total = counts.sum(axis=0)
    point = float(bounded_distance(kind, p_hat, total / total.sum())[0])
    g_star = effective_contexts(np.ones(frame.height), labels.ravel(), ids.size)
    flag = F.TOO_FEW_CONTEXTS if ids.size < 2 or g_star < MIN_EFFECTIVE_CONTEXTS else None
    lower = upper = math.nan
    if flag is None:
        rest = total[None, :] - counts  # delete-one-context masses
        events = event_matrix(kind, size)
        q_hat, p_hat_e = events @ (total / total.sum()), events @ p_hat
        q_iv = pool_intervals(q_hat, (rest / rest.sum(axis=1, keepdims=True)) @ events.T, g_star - 1, g_star, float(frame.height))
        lower, upper = distance_interval(kind, p_hat_e, q_hat, reference_intervals(p_hat_e, coded.ref_codes.size), q_iv)
    null = joint.null[:, index]
    banded = ids.size >= BAND_MIN_CONTEXTS
    note = dict(kind="marginal", n_exemplars=n, noise_floor=float(floor.mean()) if floor.size else None,
                noise_floor_sd=float(floor.std(ddof=1)) if floor.size > 1 else None,
                debiased=min(max(point - float(null.mean()), 0.0), 1.0), null_mean=float(null.mean()),
                null_method="centred-joint-cluster-bootstrap", p_no_shift=float((1 + np.sum(null >= point - 1e-12)) / (1 + null.size)),
                noise_band=float(joint.band[index]) if banded else None, in_floor=bool(point <= joint.band[index]) if banded else None,
                distance=DISTANCE_NAMES[kind], feature_kind=kind, contexts=int(ids.size), effective_contexts=g_star,
                no_band=None if banded else NO_BAND)
    if flag is not None:
        note = F.withheld(note, flag, contexts=int(ids.size), needed=2 if flag == F.TOO_FEW_CONTEXTS else None)
    return sync_row("sync_marginal", f"sync@{n}", feature, point, (lower, upper), frame.height,
                    ("sampled", "event-mover-jackknife"), **note)


def sync_estimates(inputs: EstimationInputs, n_boot: int | None = None, features: Sequence[str] | None = None,
                   band_level: float = 0.95) -> list[Estimate]:
    """Every sync row for the task's context sizes (none when the task plans no synchronisation curve).

    ``band_level``: the probability that a synchronised mimic stays inside the noise band at every size.
    """
    n_boot = int(n_boot or inputs.n_boot)
    sizes = sync_sizes(inputs.task, inputs.draws)
    if not sizes:
        return []
    draws = inputs.draws.filter((pl.col("pool") == "none") & pl.col("n_exemplars").is_in(sizes))
    ref = inputs.reference
    out: list[Estimate] = []
    for f in features or sync_features(inputs.task, ref, draws):
        col = f"feat_{f}"
        kind = feature_kind(ref.get_column(col), draws.get_column(col))
        ref_ok, mim = ref.filter(_present(ref, col)), draws.filter(_present(draws, col))
        if ref_ok.height < 4 or mim.height == 0:
            continue
        grid, (rc, mc) = code_values(kind, values_of(ref_ok.get_column(col), kind), values_of(mim.get_column(col), kind))
        row_codes = np.full(ref.height, -1)
        row_codes[np.flatnonzero(_present(ref, col).to_numpy())] = rc
        coded = Coded(kind, grid, rc, row_codes, {int(r): i for i, r in enumerate(ref.get_column("ref_id").to_list())})
        mim = mim.with_columns(code=pl.Series(mc))
        frames = {n: fr for n in sizes if (fr := mim.filter(pl.col("n_exemplars") == n)).height}
        joint = joint_bootstrap(coded, frames, rng_for(inputs, "sync_rate", "sync", f), n_boot, band_level)
        marg: dict[int, dict] = {}
        floor = split_half_floor(coded, rng_for(inputs, "sync_marginal", "floor", f), n_boot)
        for i, (n, fr) in enumerate(frames.items()):
            est = marginal_row(coded, n, f, fr, joint, i, floor)
            marg[n] = {"point": est.point, "noise_floor": est.note.get("noise_floor", math.nan)}
            out.append(est)
            out.extend(per_context_rows(inputs, f, coded, n, fr))
        out.append(rate_row(inputs, f, frames, marg, joint))
    return out


class SyncCurve:
    """Estimator ``sync_curve``: distances between the reference and the mimic at each context size, and their rate of decay.

    Options: ``n_boot`` (overrides the run's), ``features`` (a list of feature names; default: the
    proxy and the latents), ``band_level`` (0.95: the probability that a synchronised mimic stays
    inside the noise band at every context size).
    """

    name = "sync_curve"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - {"n_boot", "features", "band_level"})
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} (allowed: band_level, features, n_boot)")
        self.band_level = float(options.get("band_level", 0.95))
        if not 0.5 <= self.band_level < 1:
            raise ValueError(f"option `band_level` must be in [0.5, 1), got {self.band_level}")
        self.n_boot = options.get("n_boot")
        features = options.get("features")
        if features is not None and (not isinstance(features, list) or not all(isinstance(f, str) for f in features)):
            raise ValueError(f"option `features` must be a list of feature names, got {features!r}")
        self.features = features

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Sync rows for the task's ``context_sizes`` (none when the task plans no curve)."""
        return sync_estimates(inputs, self.n_boot, self.features, self.band_level)

def _present(frame: pl.DataFrame, col: str) -> pl.Series:
    """Rows whose feature value is not null (nor NaN for floats)."""
    s = frame.get_column(col)
    ok = s.is_not_null()
    return (ok & ~s.is_nan()).fill_null(False) if s.dtype.is_float() else ok
