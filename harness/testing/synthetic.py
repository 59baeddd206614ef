"""Planted-truth tables in the contract schema, for calibrating the estimators.

``planted(rng, ...)`` draws a reference table and a draws table (pools ``none`` and
``prompt:a``; C contexts x S samples, with a random context effect on every feature so the
cluster bootstrap matters) from distributions whose estimands are known exactly, builds the
selections ``none``, ``prompt:a``, ``filter:a``, ``reward@1``, ``reward@4`` itself (so the
calibration does not depend on the control plugins) and returns the exact values.

Features: proxy ``z`` in {a, b} (categorical); latents ``h`` (categorical, 4 levels; planted
TV shift), ``x`` (numeric; planted W1 and lift, planted correlation with z), ``t`` (binary,
the transfer-gap label; the text carries a signal token whose use shifts in the mimic) and ``r``
(binary, independent of z: rate ``r_ref`` in the reference, ``r_mimic`` averaged over the prompt
pool's contexts; rates near 0 or 1 give samples with no variance, e.g. 0 of 8).

Detection: a text is one of three tokens, independent of z, h, x and the world, so every
selection's texts follow the same distributions: reference ``REF_TOKENS``, mimic (averaged over
contexts) ``MIMIC_TOKENS``. The estimand of ``detection`` is the AUC, on fresh items, of the
classifier the sample trained (see :mod:`harness.stats.est_text`); with three token types that
AUC is exact given how the classifier scores them (:func:`detection_auc`), so the truth of each
rep is computed from the fitted classifier (``Planted.conditional``, :func:`detection_truth`).
It is 0.64125 whenever the classifier ranks the tokens by their likelihood ratio (about 98% of
fits at the default sizes; 0.534 when it swaps alpha and beta). ``text_shift=False`` gives the
mimic the reference's token distribution (with a context effect): AUC 0.5 for any classifier.

Sync curve (:mod:`harness.stats.sync`): :func:`synchronised_draws` is the ``none``-pool draws table
of a mimic that copies its context's exemplars (perfectly synchronised), or partly other rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import polars as pl
from scipy.special import betaln

from harness.prompts import context_exemplars
from harness.protocols import EstimationInputs, Selection
from harness.seeding import derive_seed
from harness.taskspec import (ComponentRef, ControlSpec, FeatureRef, ProxySpec, RenderSpec, SamplingPlan, TaskSpec,
                              WorldSpec)

PI_REF = np.array([0.4, 0.3, 0.2, 0.1])
LEVELS = np.array(["h0", "h1", "h2", "h3"])
SHIFT_DIRECTION = np.array([1.0, -0.5, -0.5, 0.0])  # a shift of TV d moves d from h1,h2 to h0; h3 unchanged
RHO_BETA = (2.0, 2.0)  # non-forcing items: rho ~ Beta(2, 2); forcing items: rho = 1
KS = (1, 2, 4, 8, 16)
SQ = 0.6744897501960817  # standard normal 75% quantile
SD_WITHIN = 1.0  # SD of a mimic's x around its context's mean
WORLD_K = 16  # extra world draws per row


@dataclass(frozen=True)
class Scenario:
    """What :func:`planted` plants (see the module docstring): sizes (``n_ref`` reference rows, C
    ``contexts`` x S ``samples``), the shifts ``tv`` and ``w1``, the context effect (``kappa``:
    Beta/Dirichlet concentration; ``tau``: SD of the x offset), the prompt's success rate, the forcing
    shares, the text shift and the rates of r."""

    tv: float = 0.1
    w1: float = 0.25
    n_ref: int = 800
    contexts: int = 40
    samples: int = 5
    kappa: float = 6.0
    tau: float = 0.6
    p_success: float = 0.7
    forcing: float = 0.2
    mimic_forcing: float = 0.35
    text_shift: bool = True
    r_ref: float = 0.3
    r_mimic: float = 0.15

    @property
    def sd(self) -> float:
        """SD of x in the reference: the mimic's total SD, so x shifts are pure location shifts."""
        return float(np.hypot(SD_WITHIN, self.tau))

    @property
    def pi_mimic(self) -> np.ndarray:
        """P(h) in the mimic: TV ``tv`` from the reference's, moved along ``SHIFT_DIRECTION``."""
        return PI_REF + self.tv * SHIFT_DIRECTION


@dataclass(frozen=True)
class Planted:
    """Inputs for the estimators plus the exact estimands, keyed (estimator, condition, feature).

    ``conditional`` holds estimands that depend on what the estimator fitted (detection's
    classifier): ``fn(inputs, options)`` gives the exact value for this sample; ``truth`` then
    holds its value for a classifier that ranks as the likelihood ratio does.
    """

    inputs: EstimationInputs
    truth: dict[tuple[str, str, str], float] = field(default_factory=dict)
    conditional: dict[tuple[str, str, str], Callable[[EstimationInputs, dict], float]] = field(default_factory=dict)


def planted_task(world_k: int = 16) -> TaskSpec:
    """The task the planted tables belong to."""
    feats = (FeatureRef("z", "planted"), FeatureRef("h", "planted"), FeatureRef("x", "planted"), FeatureRef("t", "planted"),
             FeatureRef("r", "planted"))
    controls = (ControlSpec("none"), ControlSpec("prompt"), ControlSpec("filter"), ControlSpec("reward", {"k": 1}),
                ControlSpec("reward", {"k": 4}))
    return TaskSpec("planted", 1, "planted-truth calibration", ComponentRef("planted"), RenderSpec("{{ text }}"),
                    feats, ProxySpec("z", ("a",)), ("h", "x", "t", "r"), controls, SamplingPlan(), world=WorldSpec("planted", world_k))


def forcing_m(f: float, k: int) -> float:
    """Exact m_K = E[rho^(K+1)] / E[rho] for rho = 1 w.p. f, else Beta(2, 2)."""
    a, b = RHO_BETA
    moment = lambda j: np.exp(betaln(a + j, b) - betaln(a, b))  # noqa: E731 - E[rho^j] of the beta part
    return float((f + (1 - f) * moment(k + 1)) / (f + (1 - f) * moment(1)))


# Token shares of the texts over t ~ Bernoulli(0.5) (mimic: averaged over contexts, E u_c = 0).
REF_TOKENS = {"alpha alpha": 0.5, "beta beta": 0.475, "gamma gamma": 0.025}
MIMIC_TOKENS = {"alpha alpha": 0.3, "beta beta": 0.5, "gamma gamma": 0.2}


def detection_auc(ref: dict[str, float], mimic: dict[str, float], score: dict[str, float] | None = None) -> float:
    """AUC P(s(mimic) > s(reference)) + 0.5 P(tie) for texts drawn from token shares ``ref`` and ``mimic``.

    ``score`` maps each text to a classifier's score; by default the likelihood ratio mimic/ref
    (the best possible ranking).
    """
    score = score or {tok: mimic[tok] / ref[tok] for tok in ref}
    return float(sum(mimic[a] * ref[b] * ((score[a] > score[b]) + 0.5 * (score[a] == score[b])) for a in ref for b in ref))


def detection_truth(inputs: EstimationInputs, options: dict, condition: str, mimic: dict[str, float]) -> float:
    """Exact AUC, on fresh planted texts, of the classifier ``detection`` trains for ``condition`` on ``inputs``."""
    # scikit-learn is imported only when detection is calibrated
    from harness.stats.est_text import Detection

    sel = next(s for s in inputs.selections if s.condition == condition)
    fit = Detection(options).holdout(inputs, sel)
    if fit is None:
        return float("nan")
    tokens = list(REF_TOKENS)
    return detection_auc(REF_TOKENS, mimic, dict(zip(tokens, fit.model.decision_function(tokens))))


def _texts(rng, t: np.ndarray, mimic_alpha: np.ndarray | None, shift: bool = True) -> np.ndarray:
    """Signal tokens: reference y=1 -> alpha .9 / beta .1; y=0 -> beta .85 / gamma .05 / alpha .1.

    Mimic: y=1 -> alpha (0.5 + u_c) / gamma (0.4 - u_c) / beta .1; y=0 -> beta .9 / alpha .1. A
    reference-trained rule (alpha->1, beta->0, gamma->0) gets balanced accuracy 0.7 on mimic
    items; the mimic's own rule (gamma->1) gets 0.9: the planted transfer gap is 0.2. With
    ``shift`` False the mimic uses the reference's rule, y=1 -> alpha (0.9 + 0.4 u_c), which
    averages to the reference's token distribution over contexts.
    """
    u = rng.random(t.size)
    if mimic_alpha is None or not shift:
        alpha = 0.9 if mimic_alpha is None else 0.9 + 0.4 * (mimic_alpha - 0.5)
        pos = np.where(u < alpha, "alpha", "beta")
        neg = np.where(u < 0.85, "beta", np.where(u < 0.90, "gamma", "alpha"))
    else:
        pos = np.where(u < mimic_alpha, "alpha", np.where(u < 0.9, "gamma", "beta"))
        neg = np.where(u < 0.9, "beta", "alpha")
    tok = np.where(t == 1, pos, neg)
    return np.char.add(np.char.add(tok, " "), tok)


def _world(rng, n: int, forcing: np.ndarray, k: int) -> list[list[bool]]:
    a, b = RHO_BETA
    rho = np.where(rng.random(n) < forcing, 1.0, rng.beta(a, b, n))
    return (rng.random((n, k + 1)) < rho[:, None]).tolist()


def reference_frame(rng, n: int, *, p_a=0.5, mu=(1.0, 0.0), sd=1.2, forcing=0.2, world_k=16, r_rate=0.3) -> pl.DataFrame:
    """Reference rows: i.i.d. draws of (z, h, x, t, r, text, world_draws)."""
    z_a = rng.random(n) < p_a
    pi_b = PI_REF[::-1]
    h_idx = np.where(z_a, _cat(rng, PI_REF, n), _cat(rng, pi_b, n))
    x = np.where(z_a, mu[0], mu[1]) + sd * rng.standard_normal(n)
    t = (rng.random(n) < 0.5).astype(np.float64)
    frame = pl.DataFrame({
        "ref_id": np.arange(n), "text": _texts(rng, t, None), "feat_z": np.where(z_a, "a", "b"),
        "feat_h": LEVELS[h_idx], "feat_x": x, "feat_t": t,
        "world_draws": pl.Series(_world(rng, n, np.full(n, forcing), world_k), dtype=pl.List(pl.Boolean)),
    })
    return frame.with_columns(pl.Series("feat_r", (rng.random(n) < r_rate).astype(np.float64)))


def _cat(rng, p: np.ndarray, n: int) -> np.ndarray:
    return (rng.random(n)[:, None] > np.cumsum(p)[None, :-1]).sum(axis=1)


def pool_frame(rng, pool: str, scenario: Scenario, p_a: float, mu: tuple[float, float], r_rate: float = 0.3) -> pl.DataFrame:
    """C x S draws of one pool; each context draws its own P(z=a), P(h), x offset, forcing share and alpha use.

    ``p_a``: P(z = a); ``mu``: the means of x given z = a and z = b; ``r_rate``: the rate of r; the
    rest (P(h), sizes, context effect, forcing share, text shift) from ``scenario``. Context effects
    average out exactly: Beta/Dirichlet draws with the planted means, a normal x offset with mean 0;
    so the marginal over contexts is the planted distribution.
    """
    contexts, samples, kappa, tau = scenario.contexts, scenario.samples, scenario.kappa, scenario.tau
    forcing, pi_h = scenario.mimic_forcing, scenario.pi_mimic
    c = np.repeat(np.arange(contexts), samples)
    n = c.size
    pa_c = rng.beta(p_a * kappa, (1 - p_a) * kappa, contexts)[c]
    z_a = rng.random(n) < pa_c
    ph_c = rng.dirichlet(pi_h * kappa, contexts)  # H independent of Z within the mimic pool
    h_idx = (rng.random(n)[:, None] > np.cumsum(ph_c, axis=1)[c][:, :-1]).sum(axis=1)
    x = np.where(z_a, mu[0], mu[1]) + tau * rng.standard_normal(contexts)[c] + SD_WITHIN * rng.standard_normal(n)
    t = (rng.random(n) < 0.5).astype(np.float64)
    alpha_c = 0.5 + rng.uniform(-0.2, 0.2, contexts)[c]
    f_c = rng.beta(forcing * kappa, (1 - forcing) * kappa, contexts)[c] if 0 < forcing < 1 else np.full(n, forcing)
    texts = _texts(rng, t, alpha_c, scenario.text_shift)
    world = _world(rng, n, f_c, WORLD_K)
    r = (rng.random(n) < rng.beta(r_rate * kappa, (1 - r_rate) * kappa, contexts)[c]).astype(np.float64)
    return draws_frame(pool, c, np.tile(np.arange(samples), contexts), texts, {
        "feat_z": np.where(z_a, "a", "b"), "feat_h": LEVELS[h_idx], "feat_x": x, "feat_t": t, "feat_r": r,
    }, world)


def draws_frame(pool: str, context: np.ndarray, sample: np.ndarray, texts, feats: dict, world) -> pl.DataFrame:
    """A draws table in the contract schema (bookkeeping columns filled with plausible constants)."""
    n = len(context)
    frame = pl.DataFrame({
        "run_id": "planted", "task": "planted", "task_version": 1, "pool": pool,
        "context_id": np.asarray(context, dtype=np.int64), "sample_index": np.asarray(sample, dtype=np.int64),
        "seed": np.arange(n, dtype=np.int64), "model": "planted:mimic", "n_exemplars": 5,
        "exemplar_ids": pl.Series([[0, 1, 2, 3, 4]] * n, dtype=pl.List(pl.Int64)), "prompt_hash": "0" * 16,
        "text": texts, "completion": texts, "finish_reason": "stop", "prompt_tokens": 200, "completion_tokens": 20,
        "cached": False,
    }).with_columns(pl.col("task_version").cast(pl.Int64), pl.col("n_exemplars").cast(pl.Int64),
                    pl.col("prompt_tokens").cast(pl.Int64), pl.col("completion_tokens").cast(pl.Int64))
    for name, values in feats.items():
        frame = frame.with_columns(pl.Series(name, values))
    return frame.with_columns(pl.Series("world_draws", world, dtype=pl.List(pl.Boolean)))


def _select(condition: str, control: str, pool: str, target, rows: pl.DataFrame, raw: int) -> Selection:
    return Selection(condition, control, pool, target, rows.with_columns(pl.lit(1.0 / max(1, rows.height)).alias("weight")), raw)


def selections(draws: pl.DataFrame) -> list[Selection]:
    """The selections a control plugin would make: none, prompt:a, filter:a, reward@1, reward@4."""
    none = draws.filter(pl.col("pool") == "none")
    prompt = draws.filter(pl.col("pool") == "prompt:a")
    wins = lambda k: none.filter(pl.col("world_draws").list.head(k).list.all())  # noqa: E731
    return [
        _select("none", "none", "none", None, none, none.height),
        _select("prompt:a", "prompt", "prompt:a", "a", prompt, prompt.height),
        _select("filter:a", "filter", "none", "a", none.filter(pl.col("feat_z") == "a"), none.height),
        _select("reward@1", "reward", "none", None, wins(1), none.height),
        _select("reward@4", "reward", "none", None, wins(4), none.height),
    ]


def planted(rng: np.random.Generator, *, n_boot: int = 200, seed: int = 0, **scenario: Any) -> Planted:
    """One planted data set and its exact estimands; ``scenario``: fields of :class:`Scenario` (see the module docstring)."""
    s = Scenario(**scenario)
    tv, w1, p_success, forcing, mimic_forcing = s.tv, s.w1, s.p_success, s.forcing, s.mimic_forcing
    r_ref, r_mimic, text_shift, sd, pi_shift = s.r_ref, s.r_mimic, s.text_shift, s.sd, s.pi_mimic
    ref = reference_frame(rng, s.n_ref, sd=sd, forcing=forcing, r_rate=r_ref)
    mu_a = 1.0 + w1 * 2 * SQ * sd  # W1 over the reference IQR = w1
    prompt = pool_frame(rng, "prompt:a", s, p_a=p_success, mu=(mu_a, 0.0), r_rate=r_mimic)
    mu_none = (1.5, 0.0)
    none = pool_frame(rng, "none", s, p_a=0.4, mu=mu_none)
    draws = pl.concat([none, prompt])
    task = planted_task()
    truth = {
        ("control_success", "prompt:a", "z"): p_success,
        ("latent_shift", "prompt:a", "h"): tv,
        ("latent_shift", "filter:a", "h"): tv,
        ("latent_shift", "prompt:a", "x"): w1,
        ("lift_shift", "prompt:a", "x"): mu_a - 1.0,
        ("lift_shift", "prompt:a", "h=h0"): float(pi_shift[0] - PI_REF[0]),
        ("latent_shift", "prompt:a", "r"): abs(r_mimic - r_ref),
        ("lift_shift", "prompt:a", "r"): r_mimic - r_ref,
        ("correlation_shift", "none", "x vs z=a"): _pb_corr(0.4, mu_none[0], sd) - _pb_corr(0.5, 1.0, sd),
    }
    mimic_tokens = MIMIC_TOKENS if text_shift else REF_TOKENS
    conditional = {}
    for condition in ("none", "prompt:a"):
        truth[("detection", condition, "text")] = detection_auc(REF_TOKENS, mimic_tokens)
        conditional[("detection", condition, "text")] = partial(detection_truth, condition=condition, mimic=mimic_tokens)
        if text_shift:  # without the shift the transfer gap is not planted
            truth[("transfer_gap", condition, "t")] = 0.2
    for k in KS:
        truth[("forcing_mass", "reference", f"K={k}")] = forcing_m(forcing, k)
        truth[("forcing_mass", "none", f"K={k}")] = forcing_m(mimic_forcing, k)
        truth[("forcing_mass", "prompt:a", f"K={k}")] = forcing_m(mimic_forcing, k)
    inputs = EstimationInputs(task, ref, draws, selections(draws), seed=seed, n_boot=n_boot)
    return Planted(inputs, truth, conditional)


def _pb_corr(p: float, delta: float, sd: float) -> float:
    """Correlation of 1[z=a] (P = p) with x = delta * 1[z=a] + noise of SD ``sd``."""
    v = p * (1 - p)
    return float(delta * np.sqrt(v) / np.sqrt(sd**2 + v * delta**2))


def synchronised_draws(reference: pl.DataFrame, *, sizes: Sequence[int], contexts: int, samples: int, seed: int = 0,
                       task: str = "sync", copy_prob=None, other_rows: np.ndarray | None = None) -> pl.DataFrame:
    """Planted truth: the ``none``-pool draws table of a perfectly synchronised mimic (contract schema).

    Context c at size n holds the exemplars the planner would pick (:func:`harness.prompts.context_exemplars`);
    each draw, seeded like the runner's, copies one of them uniformly (a sample from E_c), or a
    uniform reference row when n = 0 (a sample from F). With ``copy_prob(n)`` < 1 a draw instead
    copies a uniform row of ``other_rows`` with probability 1 - copy_prob(n): a partly desynchronised
    mimic. Feature columns are the copied row's; ``text`` is its text.
    """
    n_ref, ids = reference.height, reference.get_column("ref_id").to_numpy()
    rows, picks = [], []
    for n in sizes:
        for c in range(contexts):
            ex = context_exemplars(n_ref, seed, task, n, c) if n else np.array([], dtype=np.int64)
            for s in range(samples):
                draw_seed = derive_seed(seed, task, "none", c, s)
                rng = np.random.default_rng([draw_seed, n])  # n in the stream: draws at two sizes stay independent
                pick = int(ex[rng.integers(n)]) if n else int(rng.integers(n_ref))
                if copy_prob is not None and other_rows is not None and rng.random() >= copy_prob(n):
                    pick = int(other_rows[rng.integers(len(other_rows))])
                picks.append(pick)
                rows.append((c, s, draw_seed, n, [int(ids[i]) for i in ex]))
    picked = reference[picks]
    feats = picked.select([c for c in reference.columns if c.startswith("feat_")])
    return pl.DataFrame({
        "run_id": "planted", "task": task, "task_version": 1, "pool": "none",
        "context_id": [r[0] for r in rows], "sample_index": [r[1] for r in rows], "seed": [r[2] for r in rows],
        "model": "planted:synchronised", "n_exemplars": [r[3] for r in rows],
        "exemplar_ids": pl.Series([r[4] for r in rows], dtype=pl.List(pl.Int64)), "prompt_hash": "",
        "text": picked.get_column("text") if "text" in picked.columns else "", "completion": "", "finish_reason": "stop",
        "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
    }).with_columns(pl.lit(None, dtype=pl.List(pl.Boolean)).alias("world_draws"),
                    pl.col("task_version", "context_id", "sample_index", "seed", "n_exemplars",
                           "prompt_tokens", "completion_tokens").cast(pl.Int64)).hstack(feats)
