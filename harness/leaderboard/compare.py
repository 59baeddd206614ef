"""Paired differences between two models (or two sets of runs) on the same tasks and seeds.

Cells are matched by (estimator, condition, feature) within a section (task, task version,
reference hash: runs on different reference data are never compared). For each cell the
difference is A - B of the estimates' points, with a 95% interval from:

- ``paired-cluster-bootstrap``: for latent shifts under ``none``, ``prompt:<v>`` and ``filter:<v>``
  when both sides saved draws and the reference table. Contexts (seed, context id) are resampled
  jointly for A and B, so a context whose prompt (same exemplars) both models saw counts once, and
  the reference rows are resampled once for both, so reference noise cancels. The bootstrap runs
  on plug-in distances; its percentile interval is moved to centre on the estimates' difference.
  When the two sides' contexts do not share exemplars (different seeds), the contexts are
  resampled independently (``cluster-bootstrap``) and the reference stays shared.
- ``conservative``: otherwise, [l_A - u_B, u_A - l_B] (half-widths add: sd(A - B) <= sd(A) + sd(B)).

The synchronisation score difference gets the same treatment over the score's cells (the paired
bootstrap only when both sides were measured on every cell). When an interval contains 0 the two
are reported as not distinguishable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from harness.leaderboard import latents as lt
from harness.leaderboard import score
from harness.leaderboard.document import clean, pooled_estimates

_SECTION = ("task", "task_version", "reference_hash")


def _clusters(frame: pl.DataFrame) -> np.ndarray:
    return (frame["_seed"].cast(pl.Utf8) + "/" + frame["context_id"].cast(pl.Utf8)).to_numpy()


def _side_draws(runs: Sequence[Mapping[str, Any]], draws: Mapping[str, pl.DataFrame]) -> pl.DataFrame | None:
    frames = []
    for m in runs:
        frame = draws.get(m["run_id"])
        if frame is None or not {"pool", "context_id"} <= set(frame.columns):
            return None  # one run without draws: the side cannot be resampled as a whole
        frames.append(frame.with_columns(pl.lit(int(m.get("seed") or 0)).alias("_seed")))
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def contexts_paired(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Whether contexts with the same (seed, pool, context id) showed both models the same exemplars."""
    if "exemplar_ids" not in a.columns or "exemplar_ids" not in b.columns:
        return False
    keys = ["_seed", "pool", "context_id"]
    ea = a.group_by(keys).agg(pl.col("exemplar_ids").first().alias("ea"))
    eb = b.group_by(keys).agg(pl.col("exemplar_ids").first().alias("eb"))
    joined = ea.join(eb, on=keys, how="inner")
    return joined.height > 0 and bool((joined["ea"] == joined["eb"]).all())


class PairedBootstrap:
    """Bootstrap replicates of plug-in latent distances for two sides sharing one reference table."""

    def __init__(self, info: lt.TaskInfo, reference: pl.DataFrame, a: pl.DataFrame, b: pl.DataFrame, n_boot: int, seed: int):
        rng = np.random.default_rng(seed)
        self.info, self.reference, self.a, self.b = info, reference.with_row_index("_ref_row"), a, b
        self.paired = contexts_paired(a, b)
        self.w_ref = rng.multinomial(reference.height, np.full(reference.height, 1 / reference.height), n_boot)
        ca, cb = _clusters(a), _clusters(b)
        if self.paired:
            keys = np.unique(np.concatenate([ca, cb]))
            w = rng.multinomial(keys.size, np.full(keys.size, 1 / keys.size), n_boot)
            self.w_a, self.w_b = w[:, np.searchsorted(keys, ca)], w[:, np.searchsorted(keys, cb)]
        else:
            self.w_a, self.w_b = (self._independent(rng, c, n_boot) for c in (ca, cb))

    @staticmethod
    def _independent(rng: np.random.Generator, clusters: np.ndarray, n_boot: int) -> np.ndarray:
        keys, inverse = np.unique(clusters, return_inverse=True)
        return rng.multinomial(keys.size, np.full(keys.size, 1 / keys.size), n_boot)[:, inverse]

    def distances(self, condition: str, latent: str) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """(replicates of D_A, of D_B, plug-in D_A, plug-in D_B) for one cell, or None when not rebuildable."""
        column = f"feat_{latent}"
        if column not in self.reference.columns or not lt.rebuildable(condition):
            return None
        kind = lt.feature_kind(self.reference[column])
        ref = lt.reference_rows(self.reference, self.info, condition)
        if ref is None:
            return None
        ref = ref.filter(pl.col(column).is_not_null())
        out = []
        for frame, weights in ((self.a, self.w_a), (self.b, self.w_b)):
            rows = lt.condition_rows(frame.with_row_index("_row"), self.info, condition)
            if rows is None or column not in rows.columns:
                return None
            rows = rows.filter(pl.col(column).is_not_null())
            if rows.height == 0 or ref.height == 0:
                return None
            r_vals, m_vals = lt.values_of(ref, latent, kind), lt.values_of(rows, latent, kind)
            reps = lt.weighted_distance(kind, r_vals, self.w_ref[:, ref["_ref_row"].to_numpy()], m_vals, weights[:, rows["_row"].to_numpy()])
            out.append((reps, lt.distance(kind, r_vals, m_vals)))
        return out[0][0], out[1][0], out[0][1], out[1][1]


def _recentred(point: float | None, reps: np.ndarray, centre: float) -> score.Interval | None:
    """Percentile interval of ``reps`` moved so that ``centre`` (full-data plug-in) sits on ``point``."""
    if point is None or not np.isfinite(reps).any() or not np.isfinite(centre):
        return None
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    return score.Interval(point, point + float(lo) - centre, point + float(hi) - centre)


def _cell_rows(est: pl.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["estimator"], r["condition"], r["feature"]): r for r in pooled_estimates(est).iter_rows(named=True)}


def _iv(row: Mapping[str, Any]) -> score.Interval:
    return score.Interval(row["point"], row["lower"], row["upper"])


def compare_section(key: tuple[Any, ...], est_a: pl.DataFrame, est_b: pl.DataFrame, runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]],
                    draws: Mapping[str, pl.DataFrame], reference: pl.DataFrame | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Compare two sides on one section."""
    cells_a, cells_b = _cell_rows(est_a), _cell_rows(est_b)
    da, db = _side_draws(runs_a, draws), _side_draws(runs_b, draws)
    boot = PairedBootstrap(lt.task_info(runs_a[0]), reference, da, db, n_boot, seed) if reference is not None and da is not None and db is not None else None
    method = ("paired-cluster-bootstrap" if boot.paired else "cluster-bootstrap") if boot else None
    rows, score_reps = [], {}
    for cell in sorted(set(cells_a) & set(cells_b), key=str):
        ra, rb = cells_a[cell], cells_b[cell]
        diff, how = score.difference(_iv(ra), _iv(rb)), "conservative"
        is_shift = score.norm_name(cell[0]) in score.SHIFT_ESTIMATORS
        dist = boot.distances(cell[1], cell[2]) if boot and is_shift else None
        if dist is not None:
            rep_a, rep_b, pa, pb = dist
            boot_iv = _recentred(diff.point, rep_a - rep_b, pa - pb)
            if boot_iv is not None:
                diff, how = boot_iv, method
            if score.is_scored(cell[0], cell[1]):
                score_reps[(cell[1], cell[2])] = (rep_a, rep_b, pa, pb)
        rows.append({"estimator": cell[0], "condition": cell[1], "feature": cell[2], "a": _iv(ra).as_dict(), "b": _iv(rb).as_dict(),
                     "difference": diff.as_dict(), "method": how, "distinguishable": not diff.contains_zero,
                     "lower_is_better": is_shift})
    score_a, score_b = score.model_cells(est_a.with_columns(pl.lit("A").alias("model"))), score.model_cells(est_b.with_columns(pl.lit("A").alias("model")))
    ca, cb = score_a.get("A", {}), score_b.get("A", {})
    shared, _ = score.score_cells(runs_a[0].get("task"), {"A": ca, "B": cb})
    sync = None
    if shared:
        sa, sb = score.model_score(ca, shared), score.model_score(cb, shared)
        diff, how = score.difference(sa, sb), "conservative"
        if all(k in score_reps for k in shared):
            clip = lambda x: np.clip(x, 0.0, 1.0)  # noqa: E731 - the score's own clipping
            reps = np.mean([clip(score_reps[k][1]) - clip(score_reps[k][0]) for k in shared], axis=0)
            centre = float(np.mean([clip(score_reps[k][3]) - clip(score_reps[k][2]) for k in shared]))
            boot_iv = _recentred(diff.point, reps, centre)
            if boot_iv is not None:
                diff, how = boot_iv, method
        sync = {"a": sa.as_dict(), "b": sb.as_dict(), "difference": diff.as_dict(), "method": how, "cells": len(shared),
                "distinguishable": not diff.contains_zero}
    task, version, ref_hash = key
    return {"task": task, "task_version": version, "reference_hash": ref_hash, "seeds": sorted({int(m.get("seed") or 0) for m in runs_a + runs_b}),
            "runs_a": [m["run_id"] for m in runs_a], "runs_b": [m["run_id"] for m in runs_b], "paired_contexts": bool(boot and boot.paired),
            "score": sync, "cells": rows, "only_a": len(set(cells_a) - set(cells_b)), "only_b": len(set(cells_b) - set(cells_a))}


def compare(data_a, data_b, *, label_a: str = "A", label_b: str = "B", n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare two :class:`LeaderboardData` sides section by section, on the seeds they share."""
    from harness.errors import DataError

    sections = []
    man_a = {m["run_id"]: m for m in data_a.manifests}
    man_b = {m["run_id"]: m for m in data_b.manifests}
    keys_a = {tuple(k) for k in data_a.estimates.select(_SECTION).unique().iter_rows()}
    keys_b = {tuple(k) for k in data_b.estimates.select(_SECTION).unique().iter_rows()}
    notes = []
    for key in sorted(keys_a & keys_b, key=str):
        cond = [pl.col(c) == v for c, v in zip(_SECTION, key)]
        ea, eb = data_a.estimates.filter(*cond), data_b.estimates.filter(*cond)
        runs_a = [man_a[r] for r in ea["run_id"].unique().sort()]
        runs_b = [man_b[r] for r in eb["run_id"].unique().sort()]
        seeds = {m.get("seed") for m in runs_a} & {m.get("seed") for m in runs_b}
        if seeds:  # pair seed with seed; unmatched seeds would make the two sides' designs differ
            dropped = [m["run_id"] for m in runs_a + runs_b if m.get("seed") not in seeds]
            if dropped:
                notes.append(f"{key[0]}: left out runs whose seed the other side lacks: {', '.join(dropped)}")
            runs_a = [m for m in runs_a if m.get("seed") in seeds]
            runs_b = [m for m in runs_b if m.get("seed") in seeds]
            ea = ea.filter(pl.col("run_id").is_in([m["run_id"] for m in runs_a]))
            eb = eb.filter(pl.col("run_id").is_in([m["run_id"] for m in runs_b]))
        else:
            notes.append(f"{key[0]}: the two sides share no seed, so their contexts are not paired")
        reference = data_a.references.get(str(key[2]))
        reference = data_b.references.get(str(key[2])) if reference is None else reference
        draws = {**data_a.draws, **data_b.draws}
        sections.append(compare_section(key, ea, eb, runs_a, runs_b, draws, reference, n_boot, seed))
    if not sections:
        only = lambda keys: ", ".join(f"{t} v{v} ({h})" for t, v, h in sorted(keys, key=str)) or "none"  # noqa: E731
        raise DataError(f"{label_a} and {label_b} share no task with the same version and reference data (A: {only(keys_a)}; B: {only(keys_b)})",
                        "compare runs of the same task on the same reference data")
    for key in sorted((keys_a ^ keys_b), key=str):
        notes.append(f"{key[0]} v{key[1]} (reference {key[2]}) has runs on one side only; not compared")
    return clean({"a": label_a, "b": label_b, "n_boot": n_boot, "sections": sections, "notes": notes})


def _verdict(row: Mapping[str, Any], a: str, b: str) -> str:
    diff = row["difference"]
    if not row["distinguishable"] or diff["point"] is None:
        return "not distinguishable (interval contains 0)"
    higher = a if diff["point"] > 0 else b
    if row.get("lower_is_better"):
        return f"{b if diff['point'] > 0 else a} closer to the reference"
    return f"{higher} higher"


def render_text(result: Mapping[str, Any]) -> str:
    """A plain-text report: per section the score difference, then one line per matched cell."""
    from harness.leaderboard.fmt import fmt_triple

    a, b = result["a"], result["b"]
    lines = [f"A = {a}", f"B = {b}", ""]
    for s in result["sections"]:
        pairing = "contexts paired (same exemplars)" if s["paired_contexts"] else "contexts not paired"
        lines.append(f"== {s['task']} v{s['task_version']} · reference {s['reference_hash']} · seeds {', '.join(map(str, s['seeds']))} · {pairing}")
        sync = s["score"]
        if sync:
            ranking = ("A ranks above B" if sync["difference"]["point"] > 0 else "B ranks above A") if sync["distinguishable"] else \
                "A and B are not distinguishable: the interval of the difference contains 0"
            lines.append(f"synchronisation score over {sync['cells']} cell(s): A {fmt_triple(sync['a'])}  B {fmt_triple(sync['b'])}  "
                         f"A - B {fmt_triple(sync['difference'])} ({sync['method']}): {ranking}")
        else:
            lines.append("synchronisation score: no shared latent-shift cells under prompt/filter conditions")
        header = ["estimator", "condition", "feature", "A", "B", "A - B", "method", "verdict"]
        table = [[c["estimator"], c["condition"], str(c["feature"]), fmt_triple(c["a"]), fmt_triple(c["b"]), fmt_triple(c["difference"]),
                  c["method"], _verdict(c, "A", "B")] for c in s["cells"]]
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        for r in [header, *table]:
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        if s["only_a"] or s["only_b"]:
            lines.append(f"({s['only_a']} cell(s) only in A and {s['only_b']} only in B are not compared)")
        lines.append("")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines).rstrip() + "\n"
