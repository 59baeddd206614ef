"""Latent shift D(F(H | Z=z), Q(H' | Z'=z)); correlation shift and lift shift.

latent_shift: TV for categorical/binary latents, W1 over the reference IQR for numeric ones;
the mimic side is the selection's kept rows with Z' = target (all kept rows without a target);
the reference side follows :func:`harness.stats.common.reference_for`. The interval resamples
both sides (reference rows i.i.d., mimic contexts as clusters). A plug-in distance is biased
upward wherever some category (or some stretch of the CDFs) hardly differs, and its resamples
are biased up once more, so the plain percentile interval misses from above. The interval
(``percentile-nd-lower``) takes its upper end from the percentile interval widened for few
clusters (:func:`harness.stats.intervals.cluster_stretch`) and its lower end from the numerical
delta method (doubled resample deviations, :func:`harness.stats.distances.compare` says why).
The previous lower end, the percentile's moved down by twice the bootstrap bias
(``percentile-bc-lower``), covered 90-93% at 12 contexts; the plain percentile (82-93%) and
the basic interval (73-95%) did worse (benchmarks/calibration.py). Option ``interval``:
``percentile-bc-lower``, ``percentile`` or ``basic`` for the others. At zero shift no interval
can cover 0: read ``p_no_shift`` and ``debiased`` there.

Few contexts and samples without variance. With fewer than 2 mimic contexts there is no interval
(``too_few_contexts``). A binary latent's TV is |q - p|: its interval is the MOVER interval of the
difference of the two proportions, each from its exact interval (Clopper-Pearson for the i.i.d.
reference, Korn-Graubard for the clustered mimic side; :mod:`harness.stats.est_rates`), folded to
|.| (method ``mover-exact``): it stays honest where the mimic kept 0 of 4 items with the latent,
where the bootstrap sees no mimic variance at all. A categorical or numeric latent whose kept
mimic items all share one value gives no interval (``no_variance``): the bootstrap cannot see
variance the sample does not show. TV intervals are cut to [0, 1], W1/IQR ones at 0.

correlation_shift (condition ``none`` only): corr_Q(Z', H') - corr_F(Z, H), Pearson (phi for
0/1 features). A categorical proxy is turned into one 0/1 column per target value (feature name
``"<latent> vs <proxy>=<value>"``); a categorical latent into one 0/1 column per level holding at
least ``min_share`` (default 5%) of the reference rows (feature ``"<latent>=<level>"``), rarer
levels are skipped. lift_shift (every targeted selection): E_Q[H' | Z'=z] - E_F[H | Z=z], the
same level rule for categorical latents. Both use a percentile cluster bootstrap.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from harness.protocols import Estimate, EstimationInputs
from harness.stats.bootstrap import Clusters, jackknife_factor, linear_deff, two_sample
from harness.stats.common import (clusters_of, column, kind_of, latents, matched, reference_for, rng_for, row, valid,
                                  values_of)
from harness.stats.curve_events import distance_interval, event_matrix, pool_intervals, reference_intervals
from harness.stats.distances import Side, code_values, compare
from harness.stats.est_rates import proportion
from harness.stats.flags import NO_VARIANCE, TOO_FEW_CONTEXTS, withheld
from harness.stats.intervals import (MIN_CONTEXTS, Z95, clipped, clopper_pearson, cluster_stretch, critical, folded, korn_graubard,
                                     mover_difference, percentile)
from harness.values import matches, target_label


class LatentShift:
    """D(F(H | Z=z), Q(H' | Z'=z)) per selection and latent, with noise floor, debiased value and test."""

    name = "latent_shift"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.n_boot = options.get("n_boot")
        self.interval = str(options.get("interval", "percentile-nd-lower"))

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """One row per (selection, latent) with at least 2 rows on each side."""
        out = []
        n_boot = int(self.n_boot or inputs.n_boot)
        for sel in inputs.selections:
            ref_rows, label = reference_for(inputs, sel)
            mim_rows = matched(inputs, sel)
            for h in latents(inputs):
                kind = kind_of(inputs, h)
                ref, mim = valid(ref_rows, h), valid(mim_rows, h)
                if ref.height < 2 or mim.height < 2:
                    continue
                grid, (rc, mc) = code_values(kind, values_of(ref.get_column(f"feat_{h}"), kind),
                                             values_of(mim.get_column(f"feat_{h}"), kind))
                mim_cl = clusters_of(mim)
                ref_side, mim_side = Side(rc, Clusters.build(None, None, ref.height), grid.size), Side(mc, mim_cl, grid.size)
                res = compare(kind, grid, ref_side, mim_side, rng_for(inputs, self.name, sel.condition, h), n_boot,
                              self.interval)
                lower, upper, method = res.lower, res.upper, res.method
                p_value, null_method = res.p_value, res.null_method
                if kind == "categorical" and grid.size > 2 and np.isfinite(lower):
                    ev_lower, ev_upper = event_interval(ref_side, mim_side, mim_cl)
                    lower, upper, method = min(lower, ev_lower), max(upper, ev_upper), f"{res.method}+events"
                if kind == "binary" and mim_cl.n_clusters >= MIN_CONTEXTS:
                    y_ref, y_mim = values_of(ref.get_column(f"feat_{h}"), kind), values_of(mim.get_column(f"feat_{h}"), kind)
                    lower, upper = folded(*binary_difference(y_ref, y_mim, mim_cl))
                    # the test of "no shift" inverts the same interval, so test and interval agree
                    method, p_value, null_method = "mover-exact", binary_p_value(y_ref, y_mim, mim_cl), "mover-exact-inversion"
                flags = interval_gaps(kind, mc, mim_cl, lower)
                if flags:
                    lower, upper = float("nan"), float("nan")
                out.append(row(
                    self.name, sel.condition, h, res.point, (lower, upper), mim.height, method, **flags,
                    distance="tv" if kind != "numeric" else "w1/iqr", kind=kind, reference=label,
                    n_reference=ref.height, contexts=mim_cl.n_clusters, ess=mim_cl.ess, deff=res.deff,
                    noise_floor=res.noise_floor, noise_floor_sd=res.noise_floor_sd,
                    debiased=res.point - res.null_mean, null_mean=res.null_mean, p_no_shift=p_value,
                    null_method=null_method, sd=res.sd, bootstrap_bias=res.bias, sd_reference=res.sd_reference, sd_mimic=res.sd_mimic,
                ))
        return out


def interval_gaps(kind: str, mimic_codes: np.ndarray, clusters: Clusters, lower: float) -> dict:
    """Note fields for a row that must report no interval (empty when the interval stands)."""
    if clusters.n_clusters < MIN_CONTEXTS:
        return withheld({}, TOO_FEW_CONTEXTS, clusters.n_clusters, MIN_CONTEXTS)
    if kind != "binary" and np.unique(mimic_codes).size < 2:
        return withheld({}, NO_VARIANCE)
    if not np.isfinite(lower):
        return withheld({}, NO_VARIANCE)
    return {}


def event_interval(ref: Side, mim: Side, clusters: Clusters) -> tuple[float, float]:
    """TV's interval assembled from its events' probabilities (:mod:`harness.stats.curve_events`).

    TV = max over events A of |F(A) - Q(A)|: each event's two probabilities get exact-style
    intervals (Wilson on the i.i.d. reference; clustered Wilson / jackknife on the mimic contexts
    with t(G* - 1)), MOVER gives |F(A) - Q(A)|, and the largest ends bound TV. The bootstrap interval
    alone missed 7-10% at 16 contexts where a strong context effect left the sample's contexts all
    alike (all mostly one level): the event intervals see the binomial variance those hide. Latent
    shift takes the hull of the two.
    """
    events = event_matrix("categorical", ref.size)
    loo = mim.leave_one_out()
    loo = loo[np.isfinite(loo).all(axis=1)]
    if loo.shape[0] < 2:
        return float("nan"), float("nan")
    g_star = clusters.effective
    q_iv = pool_intervals(events @ mim.mass, loo @ events.T, g_star - 1, g_star, clusters.ess)
    p_iv = reference_intervals(events @ ref.mass, ref.n)
    return distance_interval("categorical", events @ ref.mass, events @ mim.mass, p_iv, q_iv)


def fisher_mover(r_ref: float, n_ref: float, r_mim: float, n_mim: float, clusters: float) -> tuple[float, float]:
    """Interval of r_mim - r_ref from each correlation's Fisher-z interval, combined by MOVER (Zou 2007).

    Zou (2007, Psychological Methods 12: "Toward using confidence intervals to compare
    correlations"): atanh(r) +- q / sqrt(n - 3) on each side, back-transformed (so each stays in
    [-1, 1] and keeps its skewness near +-1), then the MOVER limits of the difference. The mimic side
    uses its effective size (ESS / design effect) and the t(G* - 1) quantile. The correlation shift
    takes the hull of this and the bootstrap interval, which alone covered 90-93% at 16 contexts.
    """
    def side(r: float, n: float, q: float) -> tuple[float, float]:
        if not np.isfinite(r) or n <= 3:
            return -1.0, 1.0
        z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), q / np.sqrt(n - 3)
        return float(np.tanh(z - half)), float(np.tanh(z + half))

    q_mim = critical(clusters)
    lo_r, hi_r = side(r_ref, n_ref, Z95)
    lo_m, hi_m = side(r_mim, n_mim, q_mim)
    d = r_mim - r_ref
    lower = d - np.sqrt((r_mim - lo_m) ** 2 + (hi_r - r_ref) ** 2)
    upper = d + np.sqrt((hi_m - r_mim) ** 2 + (r_ref - lo_r) ** 2)
    return float(max(lower, -2.0)), float(min(upper, 2.0))


# Fewest mimic items behind a correlation shift's interval: a bootstrap of a correlation from 8
# items covered 87% (benchmarks/calibration.py, C = 8, S = 1), from 16 items 94-95%.
MIN_CORRELATION_ROWS = 16


def correlation_gaps(clusters: Clusters) -> dict:
    """Note fields for a correlation shift that must report no interval (empty when it stands)."""
    if clusters.n_clusters < MIN_CONTEXTS:
        return withheld({}, TOO_FEW_CONTEXTS, clusters.n_clusters, MIN_CONTEXTS)
    if clusters.n < MIN_CORRELATION_ROWS:
        note = withheld({}, TOO_FEW_CONTEXTS)
        note["no_interval"] = f"{clusters.n} items; a correlation's interval needs at least {MIN_CORRELATION_ROWS}"
        return note
    return {}


class ExactSide:
    """A 0/1 sample's mean with its exact interval at any level: Clopper-Pearson on i.i.d. rows
    (``clusters`` None), else the interval :func:`harness.stats.est_rates.proportion` uses."""

    def __init__(self, y: np.ndarray, clusters: Clusters | None):
        y = np.asarray(y, dtype=np.float64)
        if clusters is None:
            self.point, self.n_eff, self.contexts, self.plain = float(y.mean()), float(y.size), None, True
        else:
            res = proportion(y, np.ones_like(y), clusters)
            self.point, self.contexts = res["point"], res["effective_contexts"]
            self.plain = res["method"] == "clopper-pearson"
            self.n_eff = float(y.size) if self.plain else res["ess"] / res["deff"]

    def at(self, level: float = 0.95) -> tuple[float, float, float]:
        """(point, lower, upper) at ``level``."""
        if self.plain:
            return (self.point, *clopper_pearson(self.point * self.n_eff, self.n_eff, level))
        return (self.point, *korn_graubard(self.point, self.n_eff, self.contexts, level))


def binary_difference(ref: np.ndarray, mim: np.ndarray, mim_clusters: Clusters) -> tuple[float, float]:
    """MOVER interval of mean(mim) - mean(ref) for 0/1 values (reference rows i.i.d.)."""
    return mover_difference(ExactSide(ref, None).at(), ExactSide(mim, mim_clusters).at())


def binary_p_value(ref: np.ndarray, mim: np.ndarray, mim_clusters: Clusters, steps: int = 30) -> float:
    """p-value of "no shift" for a binary latent: the smallest alpha whose (1 - alpha) MOVER interval excludes 0."""
    a, b = ExactSide(ref, None), ExactSide(mim, mim_clusters)

    def excludes(alpha: float) -> bool:
        lower, upper = mover_difference(a.at(1 - alpha), b.at(1 - alpha))
        return lower > 0 or upper < 0

    # excludes() is monotone in alpha (a smaller level gives a narrower interval); levels below
    # 0.001 are not resolved (their t quantiles approach 0), so such p-values read as 1
    lo, hi = 0.0, 0.999
    if not excludes(hi):
        return 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if excludes(mid) else (mid, hi)
    return float(hi)


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation from weighted sums [w, wz, wh, wz^2, wh^2, wzh] of each side (a: ref, b: mimic)."""
    def one(s):
        with np.errstate(invalid="ignore", divide="ignore"):
            mz, mh = s[:, 1] / s[:, 0], s[:, 2] / s[:, 0]
            vz, vh = s[:, 3] / s[:, 0] - mz**2, s[:, 4] / s[:, 0] - mh**2
            return (s[:, 5] / s[:, 0] - mz * mh) / np.sqrt(vz * vh)
    return one(b) - one(a)


def _corr_influence(z: np.ndarray, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Influence values of a weighted Pearson correlation: zh - r (z^2 + h^2) / 2 on standardised z, h.

    A side without variance has no correlation: its influence values are NaN (0/0), as the point is,
    and the callers withhold the interval; numpy is told so instead of warning about it.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        zs = (z - np.average(z, weights=w)) / np.sqrt(np.cov(z, aweights=w))
        hs = (h - np.average(h, weights=w)) / np.sqrt(np.cov(h, aweights=w))
        r = np.average(zs * hs, weights=w)
        return zs * hs - r * (zs**2 + hs**2) / 2


def _mean_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return b[:, 1] / b[:, 0] - a[:, 1] / a[:, 0]


def _moments(z: np.ndarray, h: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Per-row products for a correlation; centred on the reference means to avoid cancellation."""
    z, h = z - centre[0], h - centre[1]
    return np.column_stack([np.ones_like(z), z, h, z * z, h * h, z * h])


def level_columns(inputs: EstimationInputs, h: str, kind: str, min_share: float) -> list[tuple[str, object]]:
    """(feature label, level) pairs: the latent itself, or one per common level of a categorical latent."""
    if kind != "categorical":
        return [(h, None)]
    ref = column(inputs.reference, h)
    if ref is None or ref.drop_nulls().len() == 0:
        return []
    shares = ref.drop_nulls().cast(pl.Utf8).value_counts(normalize=True, sort=True)
    return [(f"{h}={lvl}", lvl) for lvl, share in shares.iter_rows() if share >= min_share]


def _as_number(frame: pl.DataFrame, name: str, kind: str, level) -> np.ndarray:
    values = values_of(frame.get_column(f"feat_{name}"), kind)
    return (values == str(level)).astype(np.float64) if level is not None else values.astype(np.float64)


class CorrelationShift:
    """corr_Q(Z', H') - corr_F(Z, H) under ``none`` (see the module docstring for the rules)."""

    name = "correlation_shift"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.n_boot = options.get("n_boot")
        self.min_share = float(options.get("min_share", 0.05))

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Rows per (latent or latent level) x (proxy or proxy target)."""
        sel = next((s for s in inputs.selections if s.condition == "none"), None)
        if sel is None:
            return []
        proxy = inputs.task.proxy.feature
        if column(inputs.reference, proxy) is None or f"feat_{proxy}" not in sel.kept.columns:
            return []
        zkind = kind_of(inputs, proxy)
        zcols = [(f"{proxy}={target_label(v)}", v) for v in inputs.task.proxy.values] if zkind == "categorical" else [(proxy, None)]
        out = []
        for h in latents(inputs):
            hkind = kind_of(inputs, h)
            ref, mim = valid(valid(inputs.reference, proxy), h), valid(valid(sel.kept, proxy), h)
            if ref.height < 3 or mim.height < 3:
                continue
            mim_cl = clusters_of(mim)
            for hlabel, level in level_columns(inputs, h, hkind, self.min_share):
                for zlabel, target in zcols:
                    feature = hlabel if zkind != "categorical" else f"{hlabel} vs {zlabel}"
                    z_ref = matches(ref.get_column(f"feat_{proxy}"), target).to_numpy().astype(np.float64) if target is not None else _as_number(ref, proxy, zkind, None)
                    z_mim = matches(mim.get_column(f"feat_{proxy}"), target).to_numpy().astype(np.float64) if target is not None else _as_number(mim, proxy, zkind, None)
                    h_ref, h_mim = _as_number(ref, h, hkind, level), _as_number(mim, h, hkind, level)
                    centre = (float(z_ref.mean()), float(h_ref.mean()))
                    rng = rng_for(inputs, self.name, sel.condition, feature)
                    ref_cl = Clusters.build(None, None, ref.height)
                    ref_moments, mim_moments = _moments(z_ref, h_ref, centre), _moments(z_mim, h_mim, centre)
                    point, draws, sd_ref, sd_mim = two_sample(rng, _corr, ref_cl, ref_moments, mim_cl, mim_moments,
                                                              int(self.n_boot or inputs.n_boot))
                    if not np.isfinite(point):
                        continue  # a constant feature on one side: no correlation to compare
                    widen = jackknife_factor(_corr, ref_cl, ref_moments, mim_cl, mim_moments, sd_mim)
                    lower, upper = clipped(*percentile(draws, stretch=cluster_stretch(mim_cl.effective) * widen), -2.0, 2.0)
                    gaps = correlation_gaps(mim_cl)
                    c_ref = float(np.corrcoef(z_ref, h_ref)[0, 1])
                    deff = linear_deff(_corr_influence(z_mim, h_mim, mim_cl.weights), mim_cl)
                    fz_lower, fz_upper = fisher_mover(c_ref, ref.height, c_ref + point, mim_cl.ess / max(deff, 1.0)
                                                      if np.isfinite(deff) else mim_cl.ess, mim_cl.effective)
                    lower, upper = min(lower, fz_lower), max(upper, fz_upper)
                    if gaps:
                        lower, upper = float("nan"), float("nan")
                    out.append(row(self.name, sel.condition, feature, point, (lower, upper), mim.height,
                                   "cluster-bootstrap-percentile+fisher-mover", **gaps, corr_reference=c_ref, corr_mimic=c_ref + point,
                                   n_reference=ref.height, contexts=mim_cl.n_clusters, deff=deff, sd_reference=sd_ref,
                                   sd_mimic=sd_mim, undefined_resamples=int(np.sum(~np.isfinite(draws)))))
        return out


class LiftShift:
    """E_Q[H' | Z'=z] - E_F[H | Z=z] for every targeted selection (one row per latent or level)."""

    name = "lift_shift"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.n_boot = options.get("n_boot")
        self.min_share = float(options.get("min_share", 0.05))

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Rows per (targeted selection, latent or level)."""
        out = []
        for sel in inputs.selections:
            if sel.target is None:
                continue
            ref_rows, label = reference_for(inputs, sel)
            mim_rows = matched(inputs, sel)
            for h in latents(inputs):
                hkind = kind_of(inputs, h)
                ref, mim = valid(ref_rows, h), valid(mim_rows, h)
                if ref.height < 2 or mim.height < 2:
                    continue
                mim_cl = clusters_of(mim)
                for feature, level in level_columns(inputs, h, hkind, self.min_share):
                    h_ref, h_mim = _as_number(ref, h, hkind, level), _as_number(mim, h, hkind, level)
                    ref_cl = Clusters.build(None, None, ref.height)
                    ref_values = np.column_stack([np.ones_like(h_ref), h_ref])
                    mim_values = np.column_stack([np.ones_like(h_mim), h_mim])
                    point, draws, sd_ref, sd_mim = two_sample(rng_for(inputs, self.name, sel.condition, feature), _mean_diff,
                                                              ref_cl, ref_values, mim_cl, mim_values, int(self.n_boot or inputs.n_boot))
                    widen = jackknife_factor(_mean_diff, ref_cl, ref_values, mim_cl, mim_values, sd_mim)
                    lower, upper = percentile(draws, stretch=cluster_stretch(mim_cl.effective) * widen)
                    method = "cluster-bootstrap-percentile"
                    zero_one = hkind != "numeric"
                    if zero_one and mim_cl.n_clusters >= MIN_CONTEXTS:
                        lower, upper = binary_difference(h_ref, h_mim, mim_cl)
                        method = "mover-exact"
                    gaps = interval_gaps("binary" if zero_one else hkind, h_mim, mim_cl, lower)
                    if gaps:
                        lower, upper = float("nan"), float("nan")
                    mean_ref = float(h_ref.mean())
                    deff = linear_deff(h_mim - np.average(h_mim, weights=mim_cl.weights), mim_cl)
                    out.append(row(self.name, sel.condition, feature, point, (lower, upper), mim.height,
                                   method, **gaps, mean_reference=mean_ref, mean_mimic=mean_ref + point,
                                   reference=label, n_reference=ref.height, contexts=mim_cl.n_clusters,
                                   ess=mim_cl.ess, deff=deff, sd_reference=sd_ref, sd_mimic=sd_mim))
        return out
