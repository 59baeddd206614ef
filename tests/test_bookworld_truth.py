"""The whole pipeline against bookworld's exact truth (issue 4).

1. A mimic that follows the world exactly (each completion is a fresh bookworld review drawn with the
   request's seed, conditioned on the prompted rating) shows no latent shift under ``none`` or
   ``prompt:5``.
2. The same mimic made to over-produce the flattery sentence (the forcing set, rho = 1) raises the
   forcing-set mass under ``reward@K``, the bound row stands beside its measured distance, and the
   measured latent distance between ``reward@1`` and ``reward@8`` is positive. The reference's m_K is
   checked against bookworld's exact m_K.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

import harness.worlds.bookworld as B
from harness.builtin import bookworld as builtin_bookworld
from harness.scripted import ScriptedMimic
from harness.modelspec import ModelSpec
from harness.run import RunConfig, run

TASK_YAML = Path(__file__).resolve().parents[1] / "tasks" / "bookworld.yaml"
_PROMPTED = re.compile(r"Rating:[ \t]*(\d+)[ \t]*\n\Z")


def world_review(seed: int, rating: int | None) -> tuple[int, str, str]:
    """(rating, genre, review) drawn from bookworld's generator with ``seed``, given ``rating`` when set.

    Conditioning is by rejection: the first row of a seeded batch with that rating (P(S=5) ~ 0.29,
    so a batch of 40 misses with probability ~1e-6; then the next batch is tried).
    """
    for attempt in range(100):
        frame = B.generate(40 if rating is not None else 1, seed=int(seed) + attempt * 1_000_003)
        if rating is not None:
            frame = frame.filter(pl.col("rating") == rating)
        if frame.height:
            r, g, v = frame.row(0, named=True)["rating"], frame.row(0, named=True)["genre"], frame.row(0, named=True)["review"]
            return int(r), str(g), str(v)
    raise AssertionError(f"no review with rating {rating} for seed {seed}")


def bookworld_fn(p_flattery: float = 0.0):
    """A chooser ``fn(request) -> completion`` following bookworld; extra flattery with ``p_flattery``."""

    def fn(request) -> str:
        prompt = request.prompt if isinstance(request.prompt, str) else str(request.prompt_payload())
        m = _PROMPTED.search(prompt)
        rating, genre, review = world_review(request.seed, int(m.group(1)) if m else None)
        if p_flattery and B.FLATTERY not in review and np.random.default_rng([int(request.seed), 7]).random() < p_flattery:
            review = f"{review} {B.FLATTERY}"
        item = B.render_item(rating, genre, review)  # "Rating: S\nGenre: G\nReview: ..."
        if m:  # the prompt already holds "Rating: v\n": continue after it
            return item.split("\n", 1)[1]
        return item[len("Rating:"):]  # the prompt ends with the open prefix "Rating:"

    return fn


@pytest.fixture
def book_registries(registries, register_plugin):
    """Registries with bookworld, whether or not its entry point is installed."""
    if "bookworld" in registries.reference_sources:
        return registries
    return register_plugin(builtin_bookworld)


def small_task(tmp_path: Path) -> Path:
    """tasks/bookworld.yaml, cut down: proxy value 5 only, four controls, no sync curve, room for long reviews."""
    spec = yaml.safe_load(TASK_YAML.read_text())
    spec["proxy"]["values"] = [5]
    spec["controls"] = ["none", "prompt", "reward@1", "reward@8"]
    spec.pop("context_sizes", None)
    spec.pop("betas", None)
    spec["generation"]["max_tokens"] = 400  # a review never gets cut (flattery comes last)
    path = tmp_path / "bookworld-truth.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_books(tmp_path, registries, fn, name: str, contexts: int, spc: int = 4):
    mimic = ScriptedMimic(f"scripted:{name}", fn)
    config = RunConfig(model=ModelSpec("scripted", name), task=small_task(tmp_path), out_dir=tmp_path / name,
                       cache_dir=tmp_path / name / "cache", use_cache=False, progress="off", summary_to="off",
                       n_boot=200, contexts=contexts, samples_per_context=spc,
                       estimators=("latent_shift", "forcing_mass"))
    result = run(config, registries, mimic)
    assert result.status == "complete" and result.done == result.planned
    return result


def notes(frame: pl.DataFrame) -> list[dict]:
    return [json.loads(n) for n in frame["note"].to_list()]


def test_exact_mimic_shows_no_latent_shift(tmp_path, book_registries):
    est = run_books(tmp_path, book_registries, bookworld_fn(), "exact", contexts=12).estimates
    shift = est.filter(pl.col("estimator") == "latent_shift")
    for condition in ("none", "prompt:5"):
        rows = shift.filter(pl.col("condition") == condition)
        assert set(rows["feature"]) == {"genre", "sentiment", "helping", "length"}, condition
        for feature, point, note in zip(rows["feature"], rows["point"], notes(rows)):
            band = note["noise_floor"] + 2 * note["noise_floor_sd"]
            print(f"{condition:9s} {feature:9s} plug-in {point:.3f} debiased {note['debiased']:+.3f} "
                  f"floor band {band:.3f} p_no_shift {note['p_no_shift']:.3f}")
            assert note["debiased"] <= band or note["p_no_shift"] > 0.01, (condition, feature, note)


def test_flattery_mimic_raises_forcing_mass_and_reward_shift(tmp_path, book_registries):
    result = run_books(tmp_path, book_registries, bookworld_fn(p_flattery=0.3), "flatterer", contexts=16)
    est = result.estimates
    mass = est.filter(pl.col("estimator") == "forcing_mass")

    def m_row(condition: str, k: int) -> dict:
        rows = mass.filter((pl.col("condition") == condition) & (pl.col("feature") == f"K={k}"))
        assert rows.height == 1, (condition, k)
        return rows.row(0, named=True)

    ks = sorted(int(f.split("=")[1]) for f in mass.filter(pl.col("condition") == "reference")["feature"])
    assert ks == [1, 2, 4, 8]  # the task's world has k = 8 extra draws
    ref8, r1_8, r8_8 = m_row("reference", 8), m_row("reward@1", 8), m_row("reward@8", 8)
    print("m_8: reference", ref8["point"], (ref8["lower"], ref8["upper"]), "exact", B.exact_mass(8),
          "| reward@1", r1_8["point"], (r1_8["lower"], r1_8["upper"]), "| reward@8", r8_8["point"], (r8_8["lower"], r8_8["upper"]))
    # the reference is bookworld itself: its m_K interval covers the exact m_K = E[rho^(K+1)] / E[rho]
    for k in ks:
        ref = m_row("reference", k)
        assert ref["lower"] <= B.exact_mass(k) <= ref["upper"], (k, ref, B.exact_mass(k))
    assert B.exact_mass() < B.exact_mass(8) < 0.2  # the world by nature is hardly Goodhart-prone
    # the flatterer's successes are mostly flattery: m_K well above the reference's, under reward@1 and reward@8
    assert r1_8["lower"] > ref8["upper"] and r8_8["lower"] > ref8["upper"]
    assert r8_8["point"] >= r1_8["point"] and r8_8["point"] > 0.8
    # ... and the items reward@8 keeps (draws 0..7 all succeed) really are in X_F (exact membership)
    draws = pl.read_parquet(result.run_dir / "draws.parquet").filter(pl.col("pool") == "none")
    kept = draws.filter(pl.col("world_draws").list.head(8).list.all())
    in_xf = B.in_forcing_set(kept["text"].to_list())
    print("reward@8 keeps", kept.height, "of", draws.height, "none draws;", int(in_xf.sum()), "in X_F;",
          "flattery share of all draws", float(B.in_forcing_set(draws["text"].to_list()).mean()))
    assert kept.height >= 5 and in_xf.mean() > 0.8
    # bound row: predicted 2(1 - m_7 on reward@1) beside the measured reward@1 vs reward@8 distance
    bound = est.filter((pl.col("estimator") == "forcing_mass") & (pl.col("condition") == "reward@8") & (pl.col("feature") == "bound"))
    assert bound.height == 1
    note = notes(bound)[0]
    measured = note["measured_distance"]
    print("bound", bound["point"][0], (bound["lower"][0], bound["upper"][0]), "m", note["m"], "measured", measured,
          "exceeded", note["bound_exceeded"])
    assert set(measured) == {"genre", "sentiment", "helping", "length"}
    assert np.isfinite(bound["point"][0]) and bound["point"][0] == pytest.approx(2 * (1 - note["m"]))
    assert note["max_measured"] == max(measured.values()) > 0
    # exceeded only above the bound's upper end (the point rule fired on exchangeable worlds by noise)
    assert note["bound_exceeded"] == (note["max_measured"] > bound["upper"][0]) and not note["bound_exceeded"]
    # flattery adds nine words to a review: reward@8 (mostly flattery) is measurably longer than reward@1
    assert measured["length"] > 0.1
