"""Forcing-set mass m_K = P(K extra world draws all succeed | R = 1), and the essay's bound check.

m_K is a weighted proportion over R = 1 rows; its interval is the one of
:func:`harness.stats.est_rates.proportion`.

The bound check (THEORY.md, "Checking the estimators"): ``reward@K`` keeps the R = 1 items whose
draws 1..K-1 also succeed, i.e. it conditions ``reward@1`` on an event of probability m_{K-1}, so for
any event A, |P(A | reward@1) - P(A | reward@K)| <= 1 - m_{K-1} <= 2 (1 - m_{K-1}) whenever repeated
world draws are i.i.d. given x. Read from the draws that selected the items, that can never fail.
So m is read from draws the selection did NOT use: draws K..2K-2 of the reward@1 items (K - 1 of
them). Where the world drew fewer spare draws, J < K - 1, Jensen's inequality gives the lower
bound m_{K-1} >= m_J^((K-1)/J) (x -> x^p is convex for p >= 1), which keeps the bound valid.
Where no draw is spare, a world that knows its forcing set exactly (bookworld) gives m itself
(m <= m_{K-1}, so the bound stays valid); otherwise the check cannot be made and the row says so.

The bound is exceeded when the largest measured distance lies above the upper end of the bound's
95% interval (the bound read at the lower end of m's interval): sampling noise in m alone does not
fire it. A world whose later draws are more lenient than its first ones (draws not exchangeable)
fires it: see :mod:`harness.testing.planted_worlds`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl
from scipy.stats import beta as beta_dist

from harness.protocols import Estimate, EstimationInputs, Selection
from harness.stats.bootstrap import Clusters
from harness.stats.common import REFERENCE, clusters_of, kind_of, latents, row, valid, values_of
from harness.stats.distances import code_values, ks_distance
from harness.stats.est_rates import proportion
from harness.stats.flags import BOUND_EXCEEDED, SELECTION_USES_WORLD_DRAWS, with_flags

KS = (1, 2, 4, 8, 16)
FORCING_TABLE = "forcing_set"  # EstimationInputs.tables key: exact membership of X_F per text


@runtime_checkable
class ForcingSetWorld(Protocol):
    """A world that knows its forcing set X_F = {x : rho(x) = 1} exactly (bookworld's readers).

    An optional extension of :class:`harness.protocols.World`: a world without it is unaffected.
    """

    def in_forcing_set(self, texts: Sequence[str]) -> np.ndarray:
        """Whether each text lies in X_F."""
        ...


def forcing_set_table(world: Any, frames: Iterable[pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """``{FORCING_TABLE: text -> in_forcing_set}`` for the texts of ``frames`` when ``world`` knows X_F; else ``{}``.

    Pass the result in :attr:`EstimationInputs.tables` so :class:`ForcingMass` can use the exact set.
    """
    if world is None or not isinstance(world, ForcingSetWorld):
        return {}
    texts = sorted({t for f in frames if "text" in f.columns for t in f.get_column("text").drop_nulls().to_list()})
    member = np.asarray(world.in_forcing_set(texts), dtype=bool) if texts else np.zeros(0, dtype=bool)
    return {FORCING_TABLE: pl.DataFrame({"text": texts, "in_forcing_set": member}, schema={"text": pl.Utf8, "in_forcing_set": pl.Boolean})}


def _exact_members(inputs: EstimationInputs, frame: pl.DataFrame) -> np.ndarray | None:
    """Exact X_F membership of ``frame``'s rows, or None where the world gave none (or a text is missing)."""
    table = inputs.tables.get(FORCING_TABLE) if inputs.tables else None
    if table is None or "text" not in frame.columns:
        return None
    lookup = dict(zip(table.get_column("text").to_list(), table.get_column("in_forcing_set").to_list()))
    member = [lookup.get(t) for t in frame.get_column("text").to_list()]
    return None if any(m is None for m in member) else np.asarray(member, dtype=bool)


def _world(frame: pl.DataFrame) -> np.ndarray | None:
    """(n, 1+K) boolean matrix of world draws; None when the frame has none (or lengths differ)."""
    if "world_draws" not in frame.columns or frame.height == 0:
        return None
    draws = frame.get_column("world_draws")
    if draws.null_count():
        draws = draws.drop_nulls()
    lengths = draws.list.len()
    if draws.len() == 0 or lengths.min() != lengths.max() or lengths.min() < 2:
        return None
    width = int(lengths.min())
    return np.asarray(draws.list.to_array(width).to_numpy(), dtype=bool)


def _with_draws(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows that carry world draws (so row i of :func:`_world` is row i of the frame)."""
    return frame.filter(pl.col("world_draws").is_not_null()) if "world_draws" in frame.columns else frame


def forcing_rows(world: np.ndarray, clusters: Clusters, k: int, delta: float) -> dict[str, Any]:
    """m_K over R = 1 rows (draw 0), with interval and the Beta(1,1) posterior P(rho >= 1 - delta)."""
    r1 = world[:, 0].astype(np.float64)
    all_k = world[:, 1 : k + 1].all(axis=1).astype(np.float64)
    res = proportion(all_k, r1, clusters)
    s = world[:, 1 : k + 1].sum(axis=1)
    post = beta_dist.sf(1 - delta, 2 + s, 1 + k - s)  # Beta(1,1) prior, 1 + s successes of 1 + k draws
    w = clusters.weights * r1
    res["p_rho_high"] = float(post @ w / w.sum()) if w.sum() > 0 else float("nan")
    return res


def bound_mass(world: np.ndarray, clusters: Clusters, k: int, exact: np.ndarray | None = None) -> dict[str, Any]:
    """m for the bound of ``reward@k`` on ``reward@1`` rows, read from draws the selection did not use.

    Returns ``m``, ``lower``, ``upper`` (a lower bound on m_{k-1} and its interval), ``res`` (the
    :func:`proportion` result it came from), ``checked`` (False when only the selecting draws were
    left) and ``note`` (which draws, how many, on what basis).
    """
    r1 = world[:, 0].astype(np.float64)
    need, spare = k - 1, world.shape[1] - k
    if spare >= 1:
        j = min(need, spare)
        res = proportion(world[:, k : k + j].all(axis=1).astype(np.float64), r1, clusters)
        power = need / j  # m_{k-1} >= m_j^(need / j) by Jensen; power 1 when j = need
        ends = [res["point"], res["lower"], res["upper"]]
        m, lower, upper = (float(v) ** power if np.isfinite(v) else float("nan") for v in ends)
        basis = "held-out draws" if j == need else "held-out draws, Jensen lower bound m_J^((K-1)/J)"
        note = {"bound_basis": basis, "heldout_draws": [k, k + j - 1], "heldout_k": j, "m_heldout": res["point"]}
        return {"m": m, "lower": lower, "upper": upper, "res": res, "checked": True, "note": note}
    if exact is not None:
        res = proportion(exact.astype(np.float64), r1, clusters)
        return {"m": res["point"], "lower": res["lower"], "upper": res["upper"], "res": res, "checked": True,
                "note": {"bound_basis": "exact forcing set"}}
    res = proportion(world[:, 1:k].all(axis=1).astype(np.float64), r1, clusters)
    reason = (f"all {world.shape[1]} world draws select reward@{k}, none is left to estimate m; give the world "
              f"k >= {2 * k - 2} extra draws")
    return {"m": res["point"], "lower": res["lower"], "upper": res["upper"], "res": res, "checked": False,
            "note": {"bound_basis": "selection draws", "bound_unchecked": reason}}


def measured_distances(inputs: EstimationInputs, a: pl.DataFrame, b: pl.DataFrame) -> tuple[dict[str, float], dict[str, str]]:
    """Per latent, the distance between two selections: TV (categorical/binary) or KS (numeric), and which."""
    measured, kinds = {}, {}
    for h in latents(inputs):
        kind = kind_of(inputs, h)
        va, vb = valid(a, h), valid(b, h)
        if va.height == 0 or vb.height == 0:
            continue
        grid, (ca, cb) = code_values(kind, values_of(va.get_column(f"feat_{h}"), kind), values_of(vb.get_column(f"feat_{h}"), kind))
        pa = np.bincount(ca, weights=clusters_of(va).weights, minlength=grid.size)
        pb = np.bincount(cb, weights=clusters_of(vb).weights, minlength=grid.size)
        pa, pb = pa / pa.sum(), pb / pb.sum()
        measured[h] = ks_distance(pa, pb) if kind == "numeric" else float(0.5 * np.abs(pa - pb).sum())
        kinds[h] = "ks" if kind == "numeric" else "tv"
    return measured, kinds


class ForcingMass:
    """m_K = P(K extra world draws all succeed | R = 1), K in 1, 2, 4, 8, 16 (capped by the draws).

    Rows for the reference (condition ``reference``, i.i.d.) and each selection. For ``reward@K``
    (K >= 2) with a ``reward@1`` selection present, an extra row (feature ``bound``) gives the
    essay's bound 2(1 - m) for m = m_{K-1} of reward@1, read from draws the selection did not use
    (see the module docstring), beside the measured distance between the reward@1 and reward@K
    latent distributions: TV for categorical/binary latents, the KS distance (largest gap over
    events H <= t) for numeric ones. ``bound_exceeded`` (also in ``flags``) marks a measured
    distance above the bound's interval. Selections that select on the world (reward, best-of,
    tilt) reuse draws 0..K-1, so their own m_K is inflated by construction: flagged
    ``selection_uses_world_draws``.
    """

    name = "forcing_mass"

    def __init__(self, options: dict | None = None):
        options = dict(options or {})
        self.ks = tuple(int(k) for k in options.get("ks", KS))
        self.delta = float(options.get("delta", 0.05))

    def estimate(self, inputs: EstimationInputs) -> list[Estimate]:
        """Rows per (condition, K), plus the bound rows."""
        out: list[Estimate] = []
        world = _world(inputs.reference)
        if world is not None:
            out += self._rows(REFERENCE, world, Clusters.build(None, None, world.shape[0]), False)
        by_condition = {s.condition: s for s in inputs.selections}
        for sel in inputs.selections:
            kept = _with_draws(sel.kept)
            world = _world(kept)
            if world is None:
                continue
            out += self._rows(sel.condition, world, clusters_of(kept), sel.condition.startswith(("reward@", "best-of-", "tilt@")))
            k = _reward_k(sel.condition)
            suffix = sel.condition.split("/", 1)[1] if "/" in sel.condition else ""
            base = by_condition.get("reward@1" + (f"/{suffix}" if suffix else ""))
            if k and k >= 2 and base is not None and _world(_with_draws(base.kept)) is not None:
                out.append(self._bound_row(inputs, sel, base, k))
        return out

    def _rows(self, condition: str, world: np.ndarray, clusters: Clusters, selects: bool) -> list[Estimate]:
        rows, k_max = [], world.shape[1] - 1
        for k in self.ks:
            if k > k_max:
                continue
            res = forcing_rows(world, clusters, k, self.delta)
            if res["n"] == 0:
                continue
            note = with_flags(res["note"], SELECTION_USES_WORLD_DRAWS if selects else None)
            if selects:
                note[SELECTION_USES_WORLD_DRAWS] = True  # the boolean key older readers look for
            rows.append(row(self.name, condition, f"K={k}", res["point"], (res["lower"], res["upper"]), res["n"], res["method"],
                            K=k, bound=2 * (1 - res["point"]), p_rho_high=res["p_rho_high"], delta=self.delta, **note))
        return rows

    def _bound_row(self, inputs: EstimationInputs, sel: Selection, base: Selection, k: int) -> Estimate:
        kept = _with_draws(base.kept)
        world = _world(kept)
        exact = _exact_members(inputs, kept)
        mass = bound_mass(world, clusters_of(kept), k, exact)
        res = mass["res"]
        bound, bound_upper = 2 * (1 - mass["m"]), 2 * (1 - mass["lower"])
        measured, kinds = measured_distances(inputs, base.kept, sel.kept)
        worst = max(measured.values()) if measured else float("nan")
        checked = mass["checked"] and bool(measured) and bool(np.isfinite(bound_upper))
        exceeded = checked and worst > bound_upper
        note = {**res["note"], **mass["note"], "m": mass["m"], "m_condition": base.condition, "bound_k": k - 1,
                "measured_distance": measured, "distance_kind": kinds, "max_measured": worst,
                "bound_checked": checked, "bound_exceeded": exceeded}
        if mass["checked"] and not checked and "bound_unchecked" not in note:
            note["bound_unchecked"] = "no latent measured on both sides" if not measured else "m has no interval"
        if exact is not None:
            note["exact_m"] = float(proportion(exact.astype(np.float64), world[:, 0].astype(np.float64), clusters_of(kept))["point"])
        note = with_flags(note, BOUND_EXCEEDED if exceeded else None,
                          None if mass["checked"] else SELECTION_USES_WORLD_DRAWS)
        return row(self.name, sel.condition, "bound", bound, (2 * (1 - mass["upper"]), bound_upper), res["n"], res["method"], **note)


def _reward_k(condition: str) -> int | None:
    if not condition.startswith("reward@"):
        return None
    try:
        return int(condition.split("@", 1)[1].split("/", 1)[0])  # reward@4 or reward@4/prompt:5
    except ValueError:
        return None
