"""Planted-truth runs for the leaderboard: two (or more) mimics whose distributions are known.

A run here is what ``mimic run`` leaves for the leaderboard: a manifest, a draws table in the
contract schema, the reference table and the estimates of the built-in ``latent_shift``
estimator (run through :func:`harness.estimation.run_estimators`), built in memory from
planted distributions, without a model or a control plugin.

The task: proxy ``z`` (target ``a``), latents ``h`` (categorical, 4 levels), ``x`` (numeric)
and ``t`` (binary); controls none, prompt and filter, so the score has 6 cells
(prompt:a, filter:a) x (h, x, t). The reference draws z ~ Bernoulli(0.5), and given z: h from
``PI_A``/``PI_B``, x ~ N(1 or 0, sd) and t ~ Bernoulli(0.6 or 0.3).

A mimic draws pools ``none`` and ``prompt:a``, C contexts x S samples. Each context (prompt)
has its own distribution, its *context effect*: P(z = a) ~ Beta, P(h) ~ Dirichlet, an x offset
~ N(0, 0.6^2) and P(t = 1) ~ Beta, with means equal to the mimic's planted distribution
(kappa 2 by default: an intra-context correlation of 1/3, as strong as the published runs show,
as ``benchmarks/calibration.py`` uses). The context's parameters depend only on the
plan seed and the context (the exemplars shown), so two mimics with the same planted
distribution and plan seed see the same contexts, as two models given the same prompts do;
their samples are independent (``sample_seed``). ``MimicSpec`` sets the planted distribution:
the TV shift of h from ``PI_A``, the W1/IQR shift of x and the shift of P(t = 1).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from harness.protocols import EstimationInputs, LeaderboardData, Selection
from harness.records import Manifest, ManifestModel
from harness.taskspec import ComponentRef, ControlSpec, FeatureRef, ProxySpec, RenderSpec, SamplingPlan, TaskSpec

LEVELS = np.array(["h0", "h1", "h2", "h3"])
PI_A = np.array([0.4, 0.3, 0.2, 0.1])
PI_B = PI_A[::-1].copy()
TV_DIRECTION = np.array([1.0, -0.5, -0.5, 0.0])  # a TV shift d moves d from h1, h2 to h0
T_RATE = {"a": 0.6, "b": 0.3}
TAU = 0.6  # sd of the per-context x offset (within-context sd 1)
X_SD = float(np.hypot(1.0, TAU))  # reference sd = the mimic's total sd, so an x shift is a pure location shift
IQR_Z = 2 * 0.6744897501960817  # IQR of a standard normal
EXEMPLARS = 5
POOLS = ("none", "prompt:a")
TASK_NAME = "planted-board"


@dataclass(frozen=True)
class MimicSpec:
    """A mimic's planted distribution: shifts of Q(H' | Z' = a) from F(H | Z = a), and the context effect."""

    tv_h: float = 0.1  # TV of h
    w1_x: float = 0.25  # W1 of x over the reference IQR (a location shift)
    shift_t: float = 0.1  # P(t = 1) minus the reference's
    p_a_none: float = 0.4  # P(z = a) in the unprompted pool
    p_a_prompt: float = 0.7  # P(z = a) under prompt:a (control success)
    kappa: float = 2.0  # concentration of the per-context Beta/Dirichlet draws: ICC 1 / (kappa + 1) = 1/3


def planted_task() -> TaskSpec:
    """The task the planted runs belong to."""
    feats = tuple(FeatureRef(n, "planted") for n in ("z", "h", "x", "t"))
    controls = (ControlSpec("none"), ControlSpec("prompt"), ControlSpec("filter"))
    return TaskSpec(TASK_NAME, 1, "planted leaderboard", ComponentRef("planted"), RenderSpec("{{ text }}"), feats,
                    ProxySpec("z", ("a",)), ("h", "x", "t"), controls, SamplingPlan(exemplars=EXEMPLARS))


def planted_reference(seed: int, n: int = 600) -> pl.DataFrame:
    """Reference rows: z, then h, x and t given z (see the module docstring)."""
    rng = np.random.default_rng([seed, 0x5EF])
    z_a = rng.random(n) < 0.5
    u = rng.random(n)[:, None]
    h = np.where(z_a, (u > np.cumsum(PI_A)[:-1]).sum(axis=1), (u > np.cumsum(PI_B)[:-1]).sum(axis=1))
    x = np.where(z_a, 1.0, 0.0) + X_SD * rng.standard_normal(n)
    t = (rng.random(n) < np.where(z_a, T_RATE["a"], T_RATE["b"])).astype(np.float64)
    return pl.DataFrame({"ref_id": np.arange(n), "text": [f"item {i}" for i in range(n)], "feat_z": np.where(z_a, "a", "b"),
                         "feat_h": LEVELS[h], "feat_x": x, "feat_t": t})


def _context_params(plan_seed: int, pool: str, contexts: int, spec: MimicSpec) -> dict[str, np.ndarray]:
    """Each context's own distribution (shared by every mimic with this spec and plan seed)."""
    rng = np.random.default_rng([plan_seed, zlib.crc32(pool.encode()), 0xC0])
    p_a = spec.p_a_prompt if pool.startswith("prompt:") else spec.p_a_none
    pi_h = PI_A + spec.tv_h * TV_DIRECTION
    p_t = T_RATE["a"] + spec.shift_t
    k = spec.kappa
    return {"p_a": rng.beta(p_a * k, (1 - p_a) * k, contexts), "pi_h": rng.dirichlet(pi_h * k, contexts),
            "x_offset": TAU * rng.standard_normal(contexts), "p_t": rng.beta(p_t * k, (1 - p_t) * k, contexts)}


def planted_draws(model: str, spec: MimicSpec, *, plan_seed: int, sample_seed: int, contexts: int, samples: int,
                  n_reference: int) -> pl.DataFrame:
    """C x S draws of each pool for one mimic, in the contract's draws schema."""
    frames = []
    mu_a = 1.0 + spec.w1_x * IQR_Z * X_SD  # W1 over the reference IQR (of x | z = a) = w1_x
    exemplars = [sorted(np.random.default_rng([plan_seed, 0xE0, c]).choice(n_reference, EXEMPLARS, replace=False).tolist())
                 for c in range(contexts)]
    for pool in POOLS:
        params = _context_params(plan_seed, pool, contexts, spec)
        rng = np.random.default_rng([sample_seed, zlib.crc32(pool.encode()), zlib.crc32(model.encode())])
        c = np.repeat(np.arange(contexts), samples)
        n = c.size
        z_a = rng.random(n) < params["p_a"][c]
        h = (rng.random(n)[:, None] > np.cumsum(params["pi_h"], axis=1)[c][:, :-1]).sum(axis=1)
        x = np.where(z_a, mu_a, 0.0) + params["x_offset"][c] + rng.standard_normal(n)
        t = (rng.random(n) < params["p_t"][c]).astype(np.float64)
        frames.append(pl.DataFrame({
            "run_id": "", "task": TASK_NAME, "task_version": 1, "pool": pool, "context_id": c.astype(np.int64),
            "sample_index": np.tile(np.arange(samples), contexts).astype(np.int64), "seed": np.arange(n, dtype=np.int64),
            "model": model, "n_exemplars": EXEMPLARS, "exemplar_ids": pl.Series([exemplars[i] for i in c], dtype=pl.List(pl.Int64)),
            "prompt_hash": [f"{pool}-{i}" for i in c], "text": [f"item {i}" for i in range(n)], "finish_reason": "stop",
            "feat_z": np.where(z_a, "a", "b"), "feat_h": LEVELS[h], "feat_x": x, "feat_t": t,
        }).with_columns(pl.col("task_version").cast(pl.Int64), pl.col("n_exemplars").cast(pl.Int64)))
    return pl.concat(frames)


def planted_selections(draws: pl.DataFrame) -> list[Selection]:
    """The selections the controls would make: none, prompt:a and filter:a (none items with z = a)."""
    def select(condition: str, control: str, pool: str, target, rows: pl.DataFrame, raw: int) -> Selection:
        kept = rows.with_columns(pl.lit(1.0 / max(1, rows.height)).alias("weight"))
        return Selection(condition, control, pool, target, kept, raw)

    none = draws.filter(pl.col("pool") == "none")
    prompt = draws.filter(pl.col("pool") == "prompt:a")
    return [select("none", "none", "none", None, none, none.height),
            select("prompt:a", "prompt", "prompt:a", "a", prompt, prompt.height),
            select("filter:a", "filter", "none", "a", none.filter(pl.col("feat_z") == "a"), none.height)]


@dataclass(frozen=True)
class PlantedReference:
    """The reference table of planted runs and the hash their manifests and estimates carry."""

    table: pl.DataFrame
    hash: str


def planted_run(reference: PlantedReference, model: str, spec: MimicSpec, *, plan_seed: int, sample_seed: int,
                contexts: int, samples: int, n_boot: int = 200) -> tuple[Manifest, pl.DataFrame, pl.DataFrame]:
    """One run: (manifest, draws, estimates) as :func:`harness.leaderboard.runs.load_runs` would read them."""
    from harness.estimation import run_estimators
    from harness.stats.est_shift import LatentShift

    table, reference_hash = reference.table, reference.hash
    task = planted_task()
    run_id = f"{TASK_NAME}-{model}-p{plan_seed}-s{sample_seed}"
    draws = planted_draws(model, spec, plan_seed=plan_seed, sample_seed=sample_seed, contexts=contexts, samples=samples,
                          n_reference=table.height).with_columns(pl.lit(run_id).alias("run_id"))
    inputs = EstimationInputs(task, table, draws, planted_selections(draws), seed=sample_seed, n_boot=n_boot)
    estimates = run_estimators({"latent_shift": LatentShift({"n_boot": n_boot})}, inputs).with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(f"planted:{model}").alias("model"), pl.lit(model).alias("model_name"),
        pl.lit(TASK_NAME).alias("task"), pl.lit(1, dtype=pl.Int64).alias("task_version"), pl.lit(reference_hash).alias("reference_hash"))
    manifest = Manifest(run_id=run_id, status="complete", model=ManifestModel(model_id=f"planted:{model}", display_name=model),
                        task=task.to_dict(), task_name=TASK_NAME, task_version=1, reference_hash=reference_hash, seed=plan_seed,
                        plan={"pools": list(POOLS), "contexts": contexts, "samples_per_context": samples, "n_exemplars": EXEMPLARS})
    return manifest, draws, estimates


def planted_pair(seed: int, *, contexts: int, samples: int, a: MimicSpec = MimicSpec(), b: MimicSpec = MimicSpec(),
                 n_reference: int = 600, n_boot: int = 200, paired: bool = True) -> tuple[LeaderboardData, LeaderboardData]:
    """Two mimics on one reference and one plan seed (paired contexts; ``paired=False``: mimic-b gets
    its own plan seed, so other prompts), independent samples: one :class:`LeaderboardData` per side,
    ready for :func:`harness.leaderboard.compare.compare` (merge them for a leaderboard with :func:`merged`)."""
    reference = planted_reference(seed, n_reference)
    ref_hash = f"{seed:016x}"
    sides = []
    for i, (name, spec) in enumerate((("mimic-a", a), ("mimic-b", b))):
        plan_seed = seed if paired or i == 0 else seed + 1_000_000
        manifest, draws, estimates = planted_run(PlantedReference(reference, ref_hash), name, spec, plan_seed=plan_seed,
                                                 sample_seed=1000 * seed + i + 1, contexts=contexts, samples=samples, n_boot=n_boot)
        sides.append(LeaderboardData(estimates, [manifest], {manifest.run_id: draws}, {ref_hash: reference}))
    return sides[0], sides[1]


def merged(*sides: LeaderboardData) -> LeaderboardData:
    """Several sides as one leaderboard's data."""
    return LeaderboardData(pl.concat([s.estimates for s in sides], how="vertical"), [m for s in sides for m in s.manifests],
                           {k: v for s in sides for k, v in s.draws.items()}, {k: v for s in sides for k, v in s.references.items()})


@dataclass(frozen=True)
class Trial:
    """What one planted pair gave: the leaderboard's and ``mimic compare``'s decisions, and the scores."""

    leaderboard_decided: bool  # the two models got different ranks
    leaderboard_a_first: bool  # ... with mimic-a ranked above mimic-b
    compare_score_decided: bool  # mimic compare called the score difference distinguishable
    rows_decided: dict[tuple[str, str, str], bool]  # mimic compare per row
    scores: tuple[tuple[float | None, float | None, float | None], ...]  # (point, lower, upper) of mimic-a, mimic-b


def trial(seed: int, *, contexts: int, samples: int, a: MimicSpec = MimicSpec(), b: MimicSpec = MimicSpec(),
          n_boot: int = 400, estimator_boot: int = 100, paired: bool = True) -> Trial:
    """Build a planted pair, rank it as ``mimic leaderboard`` does and compare it as ``mimic compare`` does."""
    from harness.leaderboard import score
    from harness.leaderboard.compare import compare

    side_a, side_b = planted_pair(seed, contexts=contexts, samples=samples, a=a, b=b, n_boot=estimator_boot, paired=paired)
    board = merged(side_a, side_b)
    ranked, _, _ = score.rank_section(board.estimates, board.manifests[0].task, runs=board.manifests, draws=board.draws,
                                      reference=next(iter(board.references.values())), n_boot=n_boot, seed=seed)
    ranks = {r.model: r.rank for r in ranked}
    rank_a, rank_b = ranks.get("planted:mimic-a"), ranks.get("planted:mimic-b")
    result = compare(side_a, side_b, n_boot=n_boot, seed=seed)
    (section,) = result["sections"]
    rows = {(c["estimator"], c["condition"], str(c["feature"])): bool(c["distinguishable"]) for c in section["cells"]}
    by_model = {r.model: r.score for r in ranked}
    scores = tuple((s.point, s.lower, s.upper) if s else (None, None, None) for s in (by_model.get("planted:mimic-a"), by_model.get("planted:mimic-b")))
    decided = rank_a is not None and rank_b is not None and rank_a != rank_b
    return Trial(decided, decided and rank_a < rank_b, bool(section["score"] and section["score"]["distinguishable"]), rows, scores)
