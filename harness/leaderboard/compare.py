"""Paired differences between two models (or two sets of runs) on the same tasks and seeds.

Cells are matched by (estimator, condition, feature) within a section (task, task version,
reference hash: runs on different reference data are never compared). For each cell the
difference is A - B of the estimates' points, with a 95% interval from:

- ``paired-cluster-bootstrap``: latent shifts under ``none``, ``prompt:<v>`` and ``filter:<v>``
  when both sides saved draws and the reference table. One joint bootstrap
  (:mod:`harness.leaderboard.jointboot`) reweights contexts and reference rows; a context both
  models saw with the same exemplars carries one weight for both, and the reference weights are
  shared, so reference noise cancels. The interval is the difference +- t_{C-1} sqrt(C/(C-1)) sd of
  the replicates' differences (CR1 + t(C-1): a percentile interval covers ~80% at 4 contexts).
  ``cluster-bootstrap`` when the two sides share no context (different seeds).
- ``conservative``: otherwise, [l_A - u_B, u_A - l_B] (half-widths add: sd(A - B) <= sd(A) + sd(B)),
  which covers at least as often as the two intervals it is built from.

A row decides only where both sides carry an interval calibrated at their design: no verdict
("not decided: <reason>") when either side has no interval, one of zero width, or a flag in
:data:`harness.stats.flags.UNDECIDABLE`, nor when the difference has none (fewer than 2
contexts, or replicates without spread: "no variance", e.g. both sides all zeros). The
synchronisation score difference comes from the same replicates (:mod:`harness.leaderboard.score`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from harness.leaderboard import jointboot as jb
from harness.leaderboard import latents as lt
from harness.leaderboard import score
from harness.leaderboard.document import pooled_estimates, pooled_rows
from harness.leaderboard.rendering import comparison_note, renderings_of
from harness.records import json_safe
from harness.stats.flags import UNDECIDABLE, describe

_SECTION = ("task", "task_version", "reference_hash")
_CELL = ("estimator", "condition", "feature")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def side_problem(row: Mapping[str, Any], flags: list[str], label: str) -> str | None:
    """Why a side's row (a pooled row, its ``note`` parsed) cannot decide a comparison (None when it can)."""
    if not (_finite(row["lower"]) and _finite(row["upper"])):
        why = row["note"].no_interval
        return f"{label} has no interval" + (f" ({why})" if why else "")
    if row["upper"] - row["lower"] <= 0:
        return f"{label}'s interval has zero width"
    bad = [f for f in flags if f in UNDECIDABLE]
    return f"{label} is flagged {describe(bad)}" if bad else None


def _cell_flags(side: score.SideData) -> dict[tuple[str, str, str], list[str]]:
    """Every flag any run of a cell carries (pooling must not drop a flag one run raised)."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for r in side.estimates.iter_rows(named=True):
        out.setdefault((r["estimator"], r["condition"], r["feature"]), set()).update(side.notes[r["note"]].all_flags(r["method"]))
    return {k: sorted(v) for k, v in out.items()}


def _cell_rows(side: score.SideData) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["estimator"], r["condition"], r["feature"]): r for r in pooled_rows(pooled_estimates(side.estimates, side.notes))}


def _iv(row: Mapping[str, Any]) -> score.Interval:
    return score.Interval(row["point"], row["lower"], row["upper"])


def _spread_iv(spread: jb.Spread) -> score.Interval:
    return score.Interval(spread.point, spread.lower, spread.upper)


def _bootstrap_difference(boot: jb.JointBootstrap | None, cell: tuple[str, str, str], point: float | None) -> tuple[jb.Spread, str] | None:
    """The paired replicate interval of a latent-shift row, centred on the estimates' difference."""
    if boot is None or point is None or not {"A", "B"} <= set(boot.sides) or score.norm_name(cell[0]) not in score.SHIFT_ESTIMATORS:
        return None
    a, b = boot.cell("A", cell[1], cell[2]), boot.cell("B", cell[1], cell[2])
    if a is None or b is None:
        return None
    bounded = boot.kind(cell[2]) != "numeric"  # a TV difference lies in [-1, 1]; a W1/IQR one is unbounded
    low, high = (-1.0, 1.0) if bounded else (-np.inf, np.inf)
    spread = jb.few_cluster_interval(point, a.replicates - b.replicates, min(a.n_contexts, b.n_contexts), low, high)
    return spread, "paired-cluster-bootstrap" if a.contexts & b.contexts else "cluster-bootstrap"


def _row(cell, ra, rb, flags_a, flags_b, boot) -> dict[str, Any]:
    """One matched cell: the difference, its method, and whether (and why not) it decides."""
    diff, how = score.difference(_iv(ra), _iv(rb)), "conservative"
    problem = side_problem(ra, flags_a, "A") or side_problem(rb, flags_b, "B")
    boot_diff = _bootstrap_difference(boot, cell, diff.point)
    if boot_diff is not None:
        spread, how = boot_diff
        diff, problem = _spread_iv(spread), problem or (f"no interval ({spread.reason})" if spread.reason else None)
    elif problem is None and (diff.lower is None or diff.upper is None):
        problem = "no interval"
    if problem is not None:  # an interval built from a side that cannot decide would read as a finding
        diff = score.Interval(diff.point, None, None)
    return {"estimator": cell[0], "condition": cell[1], "feature": cell[2], "a": _iv(ra).as_dict(), "b": _iv(rb).as_dict(),
            "flags_a": flags_a, "flags_b": flags_b, "difference": diff.as_dict(), "method": how, "not_decided": problem,
            "distinguishable": problem is None and not diff.contains_zero, "lower_is_better": score.norm_name(cell[0]) in score.SHIFT_ESTIMATORS}


def _score_row(shared: list[tuple[str, str]], scores: Mapping[str, score.SideScore]) -> dict[str, Any] | None:
    """The synchronisation score of both sides and their paired difference."""
    sa, sb = scores.get("A"), scores.get("B")
    if sa is None or sb is None or sa.spread is None or sb.spread is None:
        return None
    diff = score.paired_difference(sa, sb)
    problem = next((f"{label}'s score has no interval ({s.spread.reason})" for label, s in (("A", sa), ("B", sb)) if not s.has_interval), None)
    problem = problem or (f"no interval ({diff.reason})" if diff.reason else None)
    both = sa.replicates is not None and sb.replicates is not None
    how = ("paired-cluster-bootstrap" if sa.replicates.contexts & sb.replicates.contexts else "cluster-bootstrap") if both else "not resampled"
    return {"a": sa.interval.as_dict(), "b": sb.interval.as_dict(), "difference": _spread_iv(diff).as_dict(), "method": how,
            "cells": len(shared), "measured_a": len(sa.measured), "measured_b": len(sb.measured),
            "flags_a": list(sa.spread.flags), "flags_b": list(sb.spread.flags), "not_decided": problem,
            "distinguishable": problem is None and not _spread_iv(diff).contains_zero}


def compare_section(key: tuple[Any, ...], side_a: score.SideData, side_b: score.SideData, draws: Mapping[str, pl.DataFrame],
                    reference: pl.DataFrame | None, n_boot: int, seed: int) -> dict[str, Any]:
    """Compare two sides (their estimate rows and runs in this section) on one section."""
    sides = {"A": side_a, "B": side_b}
    runs_a, runs_b = list(side_a.runs), list(side_b.runs)
    shared, scores, boot, _ = score.score_sides(sides, runs_a[0].task, draws, reference, n_boot, seed)
    if boot is None and reference is not None:  # neither side ran latent_shift: rows still get their bootstrap
        pooled = {name: jb.side_draws(side.runs, draws) for name, side in sides.items()}
        if all(frame is not None for frame in pooled.values()):
            boot = jb.JointBootstrap(lt.task_info(runs_a[0].task), reference, pooled, n_boot, seed)
    cells_a, cells_b = _cell_rows(side_a), _cell_rows(side_b)
    flags_a, flags_b = _cell_flags(side_a), _cell_flags(side_b)
    rows = [_row(cell, cells_a[cell], cells_b[cell], flags_a.get(cell, []), flags_b.get(cell, []), boot)
            for cell in sorted(set(cells_a) & set(cells_b), key=str)]
    task, version, ref_hash = key
    paired = bool(boot and {"A", "B"} <= set(boot.sides) and boot.paired("A", "B"))
    return {"task": task, "task_version": version, "reference_hash": ref_hash, "seeds": sorted({int(m.seed or 0) for m in runs_a + runs_b}),
            "runs_a": [m.run_id for m in runs_a], "runs_b": [m.run_id for m in runs_b], "paired_contexts": paired,
            "score": _score_row(shared, scores), "cells": rows, "only_a": len(set(cells_a) - set(cells_b)), "only_b": len(set(cells_b) - set(cells_a))}


def compare(data_a, data_b, *, label_a: str = "A", label_b: str = "B", n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare two :class:`LeaderboardData` sides section by section, on the seeds they share."""
    from harness.errors import DataError

    sections = []
    man_a = {m.run_id: m for m in data_a.manifests}
    man_b = {m.run_id: m for m in data_b.manifests}
    keys_a = {tuple(k) for k in data_a.estimates.select(_SECTION).unique().iter_rows()}
    keys_b = {tuple(k) for k in data_b.estimates.select(_SECTION).unique().iter_rows()}
    notes = []
    for key in sorted(keys_a & keys_b, key=str):
        cond = [pl.col(c) == v for c, v in zip(_SECTION, key)]
        ea, eb = data_a.estimates.filter(*cond), data_b.estimates.filter(*cond)
        runs_a = [man_a[r] for r in ea["run_id"].unique().sort()]
        runs_b = [man_b[r] for r in eb["run_id"].unique().sort()]
        seeds = {m.seed for m in runs_a} & {m.seed for m in runs_b}
        if seeds:  # pair seed with seed; unmatched seeds would make the two sides' designs differ
            dropped = [m.run_id for m in runs_a + runs_b if m.seed not in seeds]
            if dropped:
                notes.append(f"{key[0]}: left out runs whose seed the other side lacks: {', '.join(dropped)}")
            runs_a = [m for m in runs_a if m.seed in seeds]
            runs_b = [m for m in runs_b if m.seed in seeds]
            ea = ea.filter(pl.col("run_id").is_in([m.run_id for m in runs_a]))
            eb = eb.filter(pl.col("run_id").is_in([m.run_id for m in runs_b]))
        else:
            notes.append(f"{key[0]}: the two sides share no seed, so their contexts are not paired")
        reference = data_a.references.get(str(key[2]))
        reference = data_b.references.get(str(key[2])) if reference is None else reference
        draws = {**data_a.draws, **data_b.draws}
        side_a, side_b = score.SideData(ea, runs_a, data_a.notes), score.SideData(eb, runs_b, data_b.notes)
        rendering = {"rendering_a": renderings_of(runs_a), "rendering_b": renderings_of(runs_b)}
        notes += [n for n in [comparison_note(key[0], rendering["rendering_a"], rendering["rendering_b"])] if n]
        sections.append(compare_section(key, side_a, side_b, draws, reference, n_boot, seed) | rendering)
    if not sections:
        only = lambda keys: ", ".join(f"{t} v{v} ({h})" for t, v, h in sorted(keys, key=str)) or "none"  # noqa: E731
        raise DataError(f"{label_a} and {label_b} share no task with the same version and reference data (A: {only(keys_a)}; B: {only(keys_b)})",
                        "compare runs of the same task on the same reference data")
    for key in sorted((keys_a ^ keys_b), key=str):
        notes.append(f"{key[0]} v{key[1]} (reference {key[2]}) has runs on one side only; not compared")
    return json_safe({"a": label_a, "b": label_b, "n_boot": n_boot, "sections": sections, "notes": notes})


def _verdict(row: Mapping[str, Any], a: str, b: str) -> str:
    diff = row["difference"]
    if row.get("not_decided"):
        return f"not decided: {row['not_decided']}"
    if not row["distinguishable"] or diff["point"] is None:
        return "not distinguishable (interval contains 0)"
    if row.get("lower_is_better"):
        return f"{b if diff['point'] > 0 else a} closer to the reference"
    return f"{a if diff['point'] > 0 else b} higher"


def _score_line(sync: Mapping[str, Any] | None) -> str:
    from harness.leaderboard.fmt import fmt_triple

    if not sync:
        return "synchronisation score: no shared latent-shift cells under prompt/filter conditions"
    if sync["not_decided"]:
        ranking = f"not decided: {sync['not_decided']}"
    elif sync["distinguishable"]:
        ranking = "A ranks above B" if sync["difference"]["point"] > 0 else "B ranks above A"
    else:
        ranking = "A and B are not distinguishable: the interval of the difference contains 0"
    return (f"synchronisation score over {sync['cells']} cell(s) (measured: A {sync['measured_a']}, B {sync['measured_b']}): "
            f"A {fmt_triple(sync['a'])}  B {fmt_triple(sync['b'])}  A - B {fmt_triple(sync['difference'])} ({sync['method']}): {ranking}")


def render_text(result: Mapping[str, Any]) -> str:
    """A plain-text report: per section the score difference, then one line per matched cell."""
    from harness.leaderboard.fmt import fmt_triple

    a, b = result["a"], result["b"]
    lines = [f"A = {a}", f"B = {b}", ""]
    for s in result["sections"]:
        pairing = "contexts paired (same exemplars)" if s["paired_contexts"] else "contexts not paired"
        if s.get("rendering_a", "completion") != s.get("rendering_b", "completion"):
            pairing += f" · renderings differ: A {s['rendering_a']}, B {s['rendering_b']}"
        lines.append(f"== {s['task']} v{s['task_version']} · reference {s['reference_hash']} · seeds {', '.join(map(str, s['seeds']))} · {pairing}")
        lines.append(_score_line(s["score"]))
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
