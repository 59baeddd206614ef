"""Charts as inline SVG written by hand: no JavaScript, no fonts, no network, no style attributes.

Colours are SVG presentation attributes (allowed by the site's ``style-src 'self'`` policy, unlike
``style=""``); every text node and attribute value goes through :func:`markupsafe.escape`, so a
model name or category such as ``<script>`` is drawn as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from harness.leaderboard.fmt import fmt_interval, fmt_number

REFERENCE_COLOUR = "#4d4d4d"
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7f6d00", "#000000")  # Okabe-Ito
FONT = 11


def colour(index: int, reference: bool = False) -> str:
    """The colour of a series: grey for the reference, then a colour-blind-safe palette."""
    return REFERENCE_COLOUR if reference else PALETTE[index % len(PALETTE)]


def colour_map(models: Sequence[str]) -> dict[str, str]:
    """One colour per model id, so a model keeps its colour on every chart of the site."""
    return {m: colour(i) for i, m in enumerate(dict.fromkeys(models))}


def _pick(model: str | None, colours: dict[str, str] | None, fallback: int) -> str:
    if model is None:
        return REFERENCE_COLOUR
    return (colours or {}).get(model) or colour(fallback)


class Svg:
    """A tiny SVG builder: elements are appended as escaped strings."""

    def __init__(self, width: int, height: int, label: str):
        self.width, self.height, self.label, self.parts = width, height, label, []

    def add(self, tag: str, text: str | None = None, **attrs: Any) -> None:
        """Append one element; ``class_`` becomes ``class``, ``None`` attributes are dropped."""
        rendered = " ".join(f'{k.rstrip("_").replace("_", "-")}="{escape(_attr(v))}"' for k, v in attrs.items() if v is not None)
        self.parts.append(f"<{tag} {rendered}>{escape(text)}</{tag}>" if text is not None else f"<{tag} {rendered}/>")

    def text(self, x: float, y: float, text: str, anchor: str = "start", size: int = FONT, cls: str = "svg-text", **attrs: Any) -> None:
        """A text label."""
        self.add("text", text, x=x, y=y, text_anchor=anchor, font_size=size, class_=cls, **attrs)

    def tooltip_rect(self, x: float, y: float, w: float, h: float, fill: str, tip: str) -> None:
        """A rectangle carrying a hover title (a child ``<title>``)."""
        self.parts.append(f'<rect x="{_attr(x)}" y="{_attr(y)}" width="{_attr(max(w, 0))}" height="{_attr(max(h, 0))}" '
                          f'fill="{escape(fill)}"><title>{escape(tip)}</title></rect>')

    def render(self) -> Markup:
        """The finished ``<svg>`` element."""
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {self.width} {self.height}" '
                f'width="{self.width}" height="{self.height}" role="img" aria-label="{escape(self.label)}">'
                f"<title>{escape(self.label)}</title>")
        return Markup(head + "".join(self.parts) + "</svg>")


def _attr(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _short(text: Any, limit: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _legend(svg: Svg, names: Sequence[tuple[str, str]], x: float, y: float, max_x: float) -> float:
    """Draw a wrapping legend; returns the y below it."""
    cx = x
    for name, fill in names:
        label = _short(name, 32)
        width = 20 + 6.8 * len(label)
        if cx + width > max_x and cx > x:
            cx, y = x, y + 16
        svg.add("rect", x=cx, y=y - 9, width=10, height=10, fill=fill)
        svg.text(cx + 14, y, label)
        cx += width + 12
    return y + 12


@dataclass(frozen=True)
class Plot:
    """The plotting area of a chart, in SVG pixels (y grows downwards: ``top`` < ``bottom``)."""

    left: float
    top: float
    right: float
    bottom: float


def _y_axis(svg: Svg, plot: Plot, lo: float, hi: float, ticks: int = 4, pct: bool = False) -> None:
    """Horizontal gridlines from ``lo`` to ``hi`` with their labels left of the plot."""
    for i in range(ticks + 1):
        v = lo + (hi - lo) * i / ticks
        y = plot.bottom - (plot.bottom - plot.top) * i / ticks
        svg.add("line", x1=plot.left, y1=y, x2=plot.right, y2=y, class_="gridline")
        svg.text(plot.left - 4, y + 4, f"{v * 100:.0f}%" if pct else fmt_number(v, 2), anchor="end")


def bar_chart(chart: dict[str, Any], colours: dict[str, str] | None = None, width: int = 620) -> Markup:
    """Grouped bars: the share of each category (or histogram bin) per series, reference first."""
    series, bins = chart["series"], chart["bins"]
    svg = Svg(width, 0, f"{chart['latent']} under {chart['condition']}: reference vs model distribution")
    colours = [_pick(s["model"], colours, i) for i, s in enumerate(series)]
    names = [(f"{s['name']} (n={s['n']})", c) for s, c in zip(series, colours)]
    svg.text(10, 16, f"{chart['latent']} · {chart['condition']}", size=13, cls="svg-title")
    top = _legend(svg, names, 44, 36, width - 10) + 8
    left, right, bottom = 44, width - 10, top + 170
    svg.height = bottom + 40
    peak = max([max(s["shares"] or [0]) for s in series] + [0.01])
    step = 0.05 if peak <= 0.2 else 0.1 if peak <= 0.6 else 0.2
    ticks = max(1, math.ceil(peak / step - 1e-9))
    hi = min(1.0, ticks * step)
    _y_axis(svg, Plot(left, top, right, bottom), 0.0, hi, ticks=ticks, pct=True)
    group = (right - left) / max(1, len(bins))
    bar = max(1.0, (group - 6) / max(1, len(series)))
    for b, label in enumerate(bins):
        gx = left + b * group + 3
        for i, s in enumerate(series):
            share = s["shares"][b] if b < len(s["shares"]) else 0.0
            h = (bottom - top) * share / hi
            svg.tooltip_rect(gx + i * bar, bottom - h, bar - 1, h, colours[i], f"{s['name']} · {label}: {share * 100:.1f}% of {s['n']}")
        shown = label.split("–")[0] if chart["kind"] == "numeric" else label  # a bin is labelled by its left edge
        svg.text(gx + (group - 6) / 2 if chart["kind"] != "numeric" else gx - 3, bottom + 14, _short(shown, max(4, int(group / 6.5))),
                 anchor="middle")
    svg.add("line", x1=left, y1=bottom, x2=right, y2=bottom, class_="axis")
    what = "bin (labelled by its left edge)" if chart["kind"] == "numeric" else "value"
    svg.text(left, bottom + 32, f"share of items per {what} of {chart['latent']} ({chart['kind']})", cls="svg-caption")
    return svg.render()


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a + (b - a) * ((v - lo) / (hi - lo) if hi > lo else 0.5)


def curve_chart(curves: list[dict[str, Any]], colours: dict[str, str] | None = None, width: int = 620) -> Markup:
    """Forcing-set mass m_K against K (log scale), one line per series, with interval whiskers."""
    svg = Svg(width, 0, "forcing-set mass m_K against the number K of extra world draws")
    owners = [c["model"] for c in curves]
    # one model with several conditions (a model page): tell its lines apart by palette order instead
    cols = [_pick(c["model"], colours if owners.count(c["model"]) == 1 else None, i) for i, c in enumerate(curves)]
    top = _legend(svg, [(c["name"], col) for c, col in zip(curves, cols)], 40, 16, width - 10) + 8
    left, right, bottom = 44, width - 20, top + 180
    svg.height = bottom + 44
    ks = sorted({p["k"] for c in curves for p in c["points"]})
    _y_axis(svg, Plot(left, top, right, bottom), 0.0, 1.0)
    xs = {k: _scale(math.log2(k), math.log2(ks[0]), math.log2(ks[-1]), left + 20, right - 10) for k in ks}
    for k, x in xs.items():
        svg.text(x, bottom + 14, f"K={k}", anchor="middle")
    for c, col in zip(curves, cols):
        pts = [(xs[p["k"]], _scale(p["point"], 0, 1, bottom, top), p) for p in c["points"]]
        svg.add("polyline", points=" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in pts), fill="none", stroke=col, stroke_width=2)
        for x, y, p in pts:
            if p["lower"] is not None and p["upper"] is not None:
                svg.add("line", x1=x, x2=x, y1=_scale(p["lower"], 0, 1, bottom, top), y2=_scale(p["upper"], 0, 1, bottom, top), stroke=col, stroke_width=1.5)
            svg.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{escape(col)}"><title>{escape(c["name"])} · K={p["k"]}: '
                             f'{escape(fmt_interval(p["point"], p["lower"], p["upper"]))} (n={p["n"]})</title></circle>')
    svg.add("line", x1=left, y1=bottom, x2=right, y2=bottom, class_="axis")
    svg.text(left, bottom + 32, "m_K = P(K extra draws all succeed | R = 1); it falls towards m as K grows", cls="svg-caption")
    return svg.render()


def bound_chart(points: list[dict[str, Any]], colours: dict[str, str] | None = None, width: int = 620) -> Markup:
    """Measured distance against the predicted bound 2(1 - m) (with its interval as a horizontal
    whisker); a point above the diagonal exceeds the bound and is ringed in red."""
    svg = Svg(width, 300, "measured reward@1 vs reward@K latent distance against the predicted bound 2(1 - m)")
    left, right, top, bottom = 52, width - 20, 16, 250
    ends = [v for p in points for v in (p["bound"]["point"], p["bound"]["upper"], p["measured"]) if v is not None]
    hi = min(2.0, max([1.0] + ends))
    _y_axis(svg, Plot(left, top, right, bottom), 0.0, hi)
    for i in range(5):
        svg.text(_scale(hi * i / 4, 0, hi, left, right), bottom + 14, fmt_number(hi * i / 4, 2), anchor="middle")
    svg.add("line", x1=left, y1=bottom, x2=right, y2=top, class_="diagonal")
    models = list(dict.fromkeys(p["model"] for p in points))
    for p in points:
        col = _pick(p["model"], colours, models.index(p["model"]))
        b, y = p["bound"], _scale(min(p["measured"], hi), 0, hi, bottom, top)
        if b["lower"] is not None and b["upper"] is not None:
            x1, x2 = (_scale(min(max(v, 0.0), hi), 0, hi, left, right) for v in (b["lower"], b["upper"]))
            svg.add("line", x1=x1, x2=x2, y1=y, y2=y, stroke=col, stroke_width=1.5)
        tip = (f"{p['model_name']} · {p['condition']} · {p['feature']}: measured {p['distance']} {fmt_number(p['measured'])}, "
               f"bound {fmt_interval(b['point'], b['lower'], b['upper'])}")
        svg.parts.append(f'<circle cx="{_scale(min(max(b["point"], 0.0), hi), 0, hi, left, right):.1f}" cy="{y:.1f}" r="4.5" '
                         f'fill="{escape(col)}" class="{"above" if p["above_bound"] else "below"}"><title>{escape(tip)}</title></circle>')
    svg.text(left, bottom + 34, "x: predicted bound 2(1 - m) · y: measured distance · above the diagonal = bound exceeded", cls="svg-caption")
    return svg.render()


def forest_chart(rows: list[dict[str, Any]], label: str, lo: float | None = None, hi: float | None = None,
                 zero_line: bool = False, colours: dict[str, str] | None = None, width: int = 620) -> Markup:
    """Horizontal intervals, one row per entry (``name``, ``value`` = {point, lower, upper}, ``model``)."""
    rows = [r for r in rows if r["value"] and r["value"].get("point") is not None]
    svg = Svg(width, 40 + 24 * max(1, len(rows)), label)
    ends = [v for r in rows for v in (r["value"]["lower"], r["value"]["upper"], r["value"]["point"]) if v is not None]
    lo = min(ends + [0.0]) if lo is None else lo
    hi = max(ends + [lo + 1e-9]) if hi is None else hi
    left, right = 190, width - 110
    models = list(dict.fromkeys(r.get("model") for r in rows))
    for i, r in enumerate(rows):
        y, v = 22 + 24 * i, r["value"]
        col = _pick(r.get("model"), colours, models.index(r.get("model"))) if r.get("model") else colour(i)
        svg.text(left - 8, y + 4, _short(r["name"], 30), anchor="end")
        if v["lower"] is not None and v["upper"] is not None:
            svg.add("line", x1=_scale(v["lower"], lo, hi, left, right), x2=_scale(v["upper"], lo, hi, left, right), y1=y, y2=y, stroke=col, stroke_width=3)
        svg.parts.append(f'<circle cx="{_scale(v["point"], lo, hi, left, right):.1f}" cy="{y}" r="5" fill="{escape(col)}">'
                         f'<title>{escape(r["name"])}: {escape(fmt_interval(v["point"], v["lower"], v["upper"]))}</title></circle>')
        svg.text(right + 8, y + 4, fmt_interval(v["point"], v["lower"], v["upper"]), size=10)
    base = 14 + 24 * max(1, len(rows))
    if zero_line and lo < 0 < hi:
        svg.add("line", x1=_scale(0, lo, hi, left, right), x2=_scale(0, lo, hi, left, right), y1=6, y2=base - 6, class_="zero")
    svg.add("line", x1=left, x2=right, y1=base - 4, y2=base - 4, class_="axis")
    for v in (lo, (lo + hi) / 2, hi):
        svg.text(_scale(v, lo, hi, left, right), base + 10, fmt_number(v, 2), anchor="middle")
    return svg.render()


def _marker(svg: Svg, shape: str, x: float, y: float, col: str, tip: str, hollow: bool = False) -> None:
    fill = "none" if hollow else escape(col)
    paint = f'fill="{fill}" stroke="{escape(col)}" stroke-width="1.5"'
    if shape == "square":
        head = f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" {paint}>'
        tail = "</rect>"
    elif shape == "triangle":
        head = f'<polygon points="{x:.1f},{y - 4.5:.1f} {x - 4.5:.1f},{y + 3.5:.1f} {x + 4.5:.1f},{y + 3.5:.1f}" {paint}>'
        tail = "</polygon>"
    else:
        head = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" {paint}>'
        tail = "</circle>"
    svg.parts.append(f"{head}<title>{escape(tip)}</title>{tail}")


@dataclass(frozen=True)
class ChartText:
    """The words of a chart: ``label`` (its accessible name), the ``title`` above it, the ``caption`` below."""

    label: str
    title: str
    caption: str


@dataclass(frozen=True)
class XYAxes:
    """The axes of an :func:`xy_chart`: x tick positions and labels, the x range shown, and the y
    axis from ``y_floor`` up to the data (capped at ``y_cap`` when given)."""

    x_ticks: list[tuple[float, str]]
    x_range: tuple[float, float]
    y_floor: float = 0.0
    y_cap: float | None = None


def xy_chart(series: list[dict[str, Any]], *, text: ChartText, axes: XYAxes, bands: list[dict[str, Any]] = (),
             hlines: list[dict[str, Any]] = (), width: int = 620) -> Markup:
    """Lines (with interval bands) and single points (with whiskers) on a linear y axis.

    ``series``: {name, colour, points: [{x, point, lower, upper, tip, shape, hollow}], line (bool: join
    the points that have ``line`` set and shade their interval)}. ``bands``: {lower, upper, colour, name}
    horizontal bands, or {xs, uppers, colour, name} areas from 0; ``hlines``: {y, colour, name} dashed lines."""
    svg = Svg(width, 0, text.label)
    svg.text(10, 16, text.title, size=13, cls="svg-title")
    legend = [(s["name"], s["colour"]) for s in series] + [(b["name"], b["colour"]) for b in list(bands) + list(hlines) if b.get("name")]
    top = _legend(svg, list(dict.fromkeys(legend)), 52, 36, width - 10) + 8
    left, right, bottom = 52, width - 20, top + 180
    svg.height = bottom + 44
    ends = [v for s in series for p in s["points"] for v in (p["point"], p["lower"], p["upper"]) if v is not None]
    ends += [v for b in bands for v in ([b.get("upper")] if "upper" in b else b["uppers"]) if v is not None]
    hi = max(ends + [1e-3])
    shown = [h for h in hlines if h["y"] is not None and h["y"] <= max(hi * 1.25, 0.05)]
    hi = max([hi] + [h["y"] for h in shown]) * 1.05
    if axes.y_cap is not None:
        hi = min(hi, axes.y_cap)
    lo = axes.y_floor
    _y_axis(svg, Plot(left, top, right, bottom), lo, hi)
    x0, x1 = axes.x_range
    sx = lambda v: _scale(v, x0, x1, left + 12, right - 10)  # noqa: E731
    sy = lambda v: _scale(min(max(v, lo), hi), lo, hi, bottom, top)  # noqa: E731
    for x, tick in axes.x_ticks:
        svg.text(sx(x), bottom + 14, tick, anchor="middle")
    for b in bands:
        if "xs" in b:
            pts = [(sx(x), sy(u)) for x, u in zip(b["xs"], b["uppers"]) if u is not None]
            if len(pts) >= 2:
                outline = pts + [(pts[-1][0], sy(lo)), (pts[0][0], sy(lo))]
                svg.add("polygon", points=" ".join(f"{x:.1f},{y:.1f}" for x, y in outline), fill=b["colour"], fill_opacity=0.15, stroke="none")
        elif b.get("lower") is not None and b.get("upper") is not None:
            y1, y2 = sy(b["upper"]), sy(b["lower"])
            svg.add("rect", x=left, y=y1, width=right - left, height=max(y2 - y1, 1.0), fill=b["colour"], fill_opacity=0.2)
    for h in shown:
        svg.add("line", x1=left, x2=right, y1=sy(h["y"]), y2=sy(h["y"]), stroke=h["colour"], stroke_width=1.2, stroke_dasharray="5 4")
    for n, h in enumerate(h for h in hlines if h["y"] is not None and h not in shown):
        svg.text(right, top + 12 + 13 * n, f"{h['name']} = {fmt_number(h['y'], 2)}, above the axis", anchor="end", size=10, fill=h["colour"])
    for s in series:
        line = [p for p in s["points"] if s.get("line") and p.get("line", True)]
        band = [p for p in line if p["lower"] is not None and p["upper"] is not None]
        if len(band) >= 2:
            outline = [(sx(p["x"]), sy(p["upper"])) for p in band] + [(sx(p["x"]), sy(p["lower"])) for p in reversed(band)]
            svg.add("polygon", points=" ".join(f"{x:.1f},{y:.1f}" for x, y in outline), fill=s["colour"], fill_opacity=0.18, stroke="none")
        if len(line) >= 2:
            svg.add("polyline", points=" ".join(f"{sx(p['x']):.1f},{sy(p['point']):.1f}" for p in line), fill="none", stroke=s["colour"], stroke_width=2)
        for p in s["points"]:
            x = sx(p["x"])
            if p["lower"] is not None and p["upper"] is not None and not (len(band) >= 2 and p in band):
                svg.add("line", x1=x, x2=x, y1=sy(p["lower"]), y2=sy(p["upper"]), stroke=s["colour"], stroke_width=1.5)
            _marker(svg, p.get("shape", "circle"), x, sy(p["point"]), s["colour"], p["tip"], p.get("hollow", False))
    svg.add("line", x1=left, y1=bottom, x2=right, y2=bottom, class_="axis")
    svg.text(left, bottom + 32, text.caption, cls="svg-caption")
    return svg.render()


def _ticks(values: list[float], fmt=lambda v: fmt_number(v, 2), count: int = 5) -> list[tuple[float, str]]:
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [(lo, fmt(lo))]
    return [(lo + (hi - lo) * i / (count - 1), fmt(lo + (hi - lo) * i / (count - 1))) for i in range(count)]


GOODHART_SHAPES = {"reward": "square", "best-of-n": "triangle"}


def goodhart_charts(curves: list[dict[str, Any]], colours: dict[str, str] | None = None, width: int = 620) -> list[Markup]:
    """Two panels per pool (control success, mean latent shift) against the KL from the pool in nats:
    one curve per model (the tilt sweep as a line with its 95% band, reward@K squares, best-of-n
    triangles, low-ESS points hollow), the noise floor as a grey band, each model's bound as a dashed line."""
    out = []
    models = list(dict.fromkeys(c["model"] for c in curves))
    for pool in dict.fromkeys(c["pool"] for c in curves):
        group = [c for c in curves if c["pool"] == pool]
        kls = [p["kl"] for c in group for p in c["points"]]
        x_range = (min(kls + [0.0]), max(kls + [1e-3]))
        ticks = _ticks(list(x_range))
        for key, what, cap in (("success", "control success E_Q[r]", 1.0), ("shift", "mean latent shift (TV, KS)", 1.0)):
            series, bands, hlines = [], [], []
            for c in group:
                col = _pick(c["model"], colours, models.index(c["model"]))
                pts = [{"x": p["kl"], **p[key], "line": p["control"] in ("none", "tilt"), "shape": GOODHART_SHAPES.get(p["control"], "circle"),
                        "hollow": p["low_ess"], "tip": f"{c['model_name']} · {p['condition']} · KL {fmt_number(p['kl'], 3)} nats: "
                                                      f"{_tip_value(p[key])}" + (" (low ESS)" if p["low_ess"] else "")}
                       for p in c["points"] if p[key] is not None]
                if pts:
                    series.append({"name": c["model_name"], "colour": col, "points": pts, "line": True})
                if key == "shift" and c["noise_floor"] and c["noise_floor"]["lower"] is not None and c["noise_floor"]["upper"] is not None and not bands:
                    bands.append({**c["noise_floor"], "colour": REFERENCE_COLOUR, "name": "reference noise floor"})
                if key == "shift" and c["bound"] is not None:
                    hlines.append({"y": c["bound"], "colour": col, "name": f"bound 2(1-m_K) · {c['model_name']}"})
            if not series:
                continue
            words = ChartText(label=f"Goodhart curve, pool {pool}: {what} against KL from the pool", title=f"{what} · pool {pool}",
                              caption="x: KL from the pool (nats) · line: tilt sweep with 95% band · ■ reward@K · ▲ best-of-n")
            out.append(xy_chart(series, text=words, axes=XYAxes(ticks, x_range, y_cap=cap), bands=bands, hlines=hlines, width=width))
    return out


def _tip_value(value: dict[str, Any]) -> str:
    """``0.12 [0.05, 0.20]``, or the point, ``no interval`` and why; then the flags."""
    text = fmt_interval(value["point"], value["lower"], value["upper"], value.get("reason"))
    shown = [f for f in value.get("flags") or [] if f != "low_ess"]  # low ESS is said apart
    return text + (f" · flags: {', '.join(f.replace('_', ' ') for f in shown)}" if shown else "")


def sync_charts(curves: list[dict[str, Any]], width: int = 620) -> list[Markup]:
    """One chart per model: distance to the reference against the number of exemplars n (log scale),
    one line per feature with its 95% band, each feature's noise floor as a shaded area."""
    out = []
    for c in curves:
        ns = sorted({p["n"] for f in c["features"] for p in f["points"]})
        if not ns:
            continue
        pos = (lambda n: math.log2(n)) if ns[0] >= 1 else (lambda n: math.log2(n + 1))
        series, bands = [], []
        for i, f in enumerate(c["features"]):
            col = colour(i)
            series.append({"name": f["feature"], "colour": col, "line": True, "points": [
                {"x": pos(p["n"]), "point": p["point"], "lower": p["lower"], "upper": p["upper"],
                 "tip": f"{c['model_name']} · {f['feature']} · n={p['n']}: {_tip_value(p)}"
                        + (f" (noise floor {fmt_number(p['noise_floor'], 3)})" if p["noise_floor"] is not None else "")}
                for p in f["points"]]})
            floor = [p for p in f["points"] if p["noise_floor"] is not None]
            if floor:
                bands.append({"xs": [pos(p["n"]) for p in floor], "uppers": [p["noise_floor"] for p in floor], "colour": REFERENCE_COLOUR,
                              "name": "noise floor" if not bands else None})
        x_range = (pos(ns[0]), pos(ns[-1]) if len(ns) > 1 else pos(ns[0]) + 1)
        words = ChartText(label=f"synchronisation curve of {c['model_name']}: distance to the reference against the number of exemplars",
                          title=f"{c['model_name']} · distance vs exemplars",
                          caption="x: number of exemplars n (log scale) · y: TV or KS (0-1) · grey: each feature's noise floor")
        out.append(xy_chart(series, text=words, axes=XYAxes([(pos(n), f"n={n}") for n in ns], x_range, y_cap=1.0), bands=bands, width=width))
    return out
