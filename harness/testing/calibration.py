"""Coverage and bias of the estimators against planted truth (used by tests and benchmarks).

``calibrate`` draws ``reps`` planted data sets (:mod:`harness.testing.synthetic`), runs each
estimator on the selections and latents its planted values concern, and tallies per
(estimator, condition, feature): mean estimate, bias, coverage of the 95% interval, mean width.
Where the estimand depends on what the estimator fitted (detection: the AUC of the classifier
it trained) each rep is checked against its own exact value; ``planted`` is then their mean.
``null_check`` does the same at zero planted shift for ``latent_shift``, where no interval can
cover 0: it tallies how often the test of "no shift" rejects at 5% and the mean debiased distance.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from harness.estimation import run_estimators
from harness.stats.catalog import ESTIMATORS
from harness.testing.synthetic import Planted, planted

Key = tuple[str, str, str]


def _restrict(p: Planted, estimator: str, only: set[str] | None = None) -> Planted | None:
    """Inputs cut down to the selections and latents whose truth is planted for ``estimator``."""
    keys = [k for k in p.truth if k[0] == estimator and (only is None or k[1] in only)]
    if not keys:
        return None
    conditions = {k[1] for k in keys} | ({"reward@1"} if estimator == "forcing_mass" else set())
    feats = {re.split(r"[ =]", k[2])[0] for k in keys}  # "h=h0", "x vs z=a" -> the latent
    task = dataclasses.replace(p.inputs.task, latents=tuple(h for h in p.inputs.task.latents if h in feats) or p.inputs.task.latents)
    sels = [s for s in p.inputs.selections if s.condition in conditions]
    return Planted(dataclasses.replace(p.inputs, task=task, selections=sels), p.truth)


def run_one(p: Planted, estimators: Iterable[str], options: dict[str, dict] | None = None,
            only: set[str] | None = None) -> dict[Key, dict[str, Any]]:
    """Run the estimators on one planted data set (conditions in ``only``, if given); rows keyed (estimator, condition, feature)."""
    out = {}
    for name in estimators:
        cut = _restrict(p, name, only)
        if cut is None:
            continue
        est = ESTIMATORS[name][0]((options or {}).get(name, {}))
        frame = run_estimators({name: est}, cut.inputs)
        for r in frame.iter_rows(named=True):
            out[(r["estimator"], r["condition"], r["feature"])] = {**r, "note": json.loads(r["note"])}
    return out


def calibrate(reps: int, estimators: Iterable[str], *, seed: int = 0, n_boot: int = 200,
              options: dict[str, dict] | None = None, progress: Callable[[int], None] | None = None,
              only: set[str] | None = None, **scenario: Any) -> list[dict[str, Any]]:
    """Coverage table over ``reps`` planted data sets (one dict per estimand)."""
    estimators = list(estimators)
    tally: dict[Key, list[tuple[float, float, float, float]]] = defaultdict(list)
    withheld: dict[Key, int] = defaultdict(int)
    wanted = {e for e in estimators}
    for rep in range(reps):
        p = planted(np.random.default_rng([seed, rep]), n_boot=n_boot, seed=rep, **scenario)
        rows = run_one(p, estimators, options, only)
        for key, truth in p.truth.items():
            if key[0] not in wanted or (only is not None and key[1] not in only):
                continue
            r = rows.get(key)
            if r is None or r["lower"] is None or r["upper"] is None or not np.isfinite([r["lower"], r["upper"]]).all():
                withheld[key] += 1  # no row, or a row that reports no interval at this design
                continue
            if key in p.conditional:  # the estimand depends on what the estimator fitted
                truth = p.conditional[key](p.inputs, (options or {}).get(key[0], {}))
            tally[key].append((r["point"], r["lower"], r["upper"], truth))
        if progress:
            progress(rep)
    return [_summary(key, tally.get(key, []), withheld.get(key, 0)) for key in sorted(set(tally) | set(withheld))]


def _summary(key: Key, values: list[tuple[float, float, float, float]], withheld: int) -> dict[str, Any]:
    """One calibration row: coverage and width over the reps that reported an interval, and how many did not."""
    arr = np.asarray(values, dtype=float).reshape(-1, 4)
    point, lower, upper, truth = arr.T
    nan = float("nan")
    total = len(values) + withheld
    return {"estimator": key[0], "condition": key[1], "feature": key[2],
            "planted": float(truth.mean()) if values else nan, "mean": float(point.mean()) if values else nan,
            "bias": float(np.mean(point - truth)) if values else nan,
            "coverage": float(np.mean((lower <= truth) & (truth <= upper))) if values else nan,
            "width": float(np.mean(upper - lower)) if values else nan,
            "out_of_range": int(np.sum(lower > upper)), "reps": len(values),
            "withheld": withheld / total if total else nan}


def null_check(reps: int, *, seed: int = 0, n_boot: int = 200, level: float = 0.05, only: set[str] | None = None,
               **scenario: Any) -> list[dict[str, Any]]:
    """Rejection rate of "no shift" and mean plug-in / debiased / noise floor at zero planted shift."""
    scenario = {**scenario, "tv": 0.0, "w1": 0.0, "r_mimic": scenario.get("r_ref", 0.3)}
    tally: dict[Key, list[tuple[float, ...]]] = defaultdict(list)
    for rep in range(reps):
        p = planted(np.random.default_rng([seed, 10_000 + rep]), n_boot=n_boot, seed=rep, **scenario)
        for key, r in run_one(p, ["latent_shift"], only=only).items():
            if key in p.truth:
                n = r["note"]
                if n.get("p_no_shift") is None:
                    continue  # too few contexts for a test: nothing to tally
                tally[key].append((n["p_no_shift"] < level, r["point"], n["debiased"], n.get("noise_floor", float("nan")),
                                   n["null_method"]))
    table = []
    for key, values in sorted(tally.items()):
        arr = np.asarray([v[:4] for v in values], dtype=float)
        table.append({"estimator": key[0], "condition": key[1], "feature": key[2], "planted": 0.0,
                      "rejection": float(arr[:, 0].mean()), "plug_in": float(arr[:, 1].mean()),
                      "debiased": float(arr[:, 2].mean()), "noise_floor": float(arr[:, 3].mean()), "reps": len(values),
                      "null_method": values[0][4]})
    return table


def binomial_band(reps: int, p: float = 0.95, sds: float = 3.0) -> tuple[float, float]:
    """Coverage band ``p +- sds * sqrt(p (1 - p) / reps)``: what a correct 95% interval stays inside."""
    half = sds * np.sqrt(p * (1 - p) / reps)
    return p - half, p + half


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table (markdown pipe syntax) of the chosen columns."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
