"""The reports' charts as inline SVG: heatmap, reliability diagram, grouped bars, curves, intervals.

Written by hand instead of with matplotlib because they are the only plots we draw and
matplotlib cost ~1 s of CPU per report on our machine (its import, then ~0.15 s per
figure rendered to PNG), which was most of what an evaluation spends after its last
prediction; these take about a millisecond each (docs/benchmarks.md, Start-up). Each
function returns one ``<svg>`` element (500 x 400, or taller for many interval rows)
that an HTML page embeds as it is; cluster/report/figures.py draws the reports' figures with them.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

W, H = 500, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 60  # margins around the plot area, px
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")  # one per series
FONT = 'font-family="sans-serif" font-size="12"'


def _e(x) -> str:
    return html.escape(str(x))


def _svg(title: str, body: list[str], h: int = H) -> str:
    head = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" {FONT}>'
    t = f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{_e(title)}</text>'
    return "".join([head, f"<title>{_e(title)}</title>", t, *body, "</svg>"])


class _Axes:
    """Data coordinates (x0..x1, y0..y1) -> pixels of the plot area."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, h: int = H, left: int = LEFT):
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1
        self.left, self.w, self.h, self.height = left, W - left - RIGHT, h - TOP - BOTTOM, h

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.w

    def py(self, y: float) -> float:
        return TOP + self.h - (y - self.y0) / (self.y1 - self.y0) * self.h

    def frame(self, xlabel: str, ylabel: str, yticks: Sequence[float]) -> list[str]:
        left = self.left
        out = [f'<rect x="{left}" y="{TOP}" width="{self.w}" height="{self.h}" fill="none" stroke="#000"/>']
        for v in yticks:
            y = self.py(v)
            out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#000"/>')
            out.append(f'<text x="{left - 7}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        x, y = left + self.w / 2, self.height - 12
        out.append(f'<text x="{x}" y="{y}" text-anchor="middle">{_e(xlabel)}</text>')
        out.append(
            f'<text x="16" y="{TOP + self.h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 16 {TOP + self.h / 2})">{_e(ylabel)}</text>'
        )
        return out

    def xtick(self, x: float, label: str) -> str:
        return f'<text x="{self.px(x):.1f}" y="{TOP + self.h + 16}" text-anchor="middle">{_e(label)}</text>'


def _blue(frac: float) -> str:
    """White -> dark blue, like matplotlib's "Blues" at 0 and 1."""
    lo, hi = (247, 251, 255), (8, 48, 107)
    return "#" + "".join(f"{round(a + (b - a) * frac):02x}" for a, b in zip(lo, hi, strict=True))


def confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "Confusion matrix") -> str:
    """Counts as a heatmap: rows = true class, columns = predicted."""
    k = len(labels)
    ax = _Axes(-0.5, k - 0.5, k - 0.5, -0.5)  # row 0 at the top
    top = max((v for row in matrix for v in row), default=0) or 1
    body = []
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            x, y = ax.px(j - 0.5), ax.py(i - 0.5)
            w, h = ax.w / k, ax.h / k
            ink = "#fff" if v > top / 2 else "#000"
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{_blue(v / top)}"/>'
            )
            body.append(
                f'<text x="{x + w / 2:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" '
                f'fill="{ink}">{v}</text>'
            )
    body += ax.frame("predicted", "true", [])
    body += [ax.xtick(j, lab) for j, lab in enumerate(labels)]
    body += [
        f'<text x="{LEFT - 7}" y="{ax.py(i) + 4:.1f}" text-anchor="end">{_e(lab)}</text>'
        for i, lab in enumerate(labels)
    ]
    return _svg(title, body)


def reliability(count: Sequence[int], accuracy: Sequence[float], ece: float) -> str:
    """Accuracy per equal-width confidence bin (empty bins left out) against the diagonal."""
    nb = len(count)
    ax = _Axes(0, 1, 0, 1)
    body = []
    for b, (n, acc) in enumerate(zip(count, accuracy, strict=True)):
        if n:
            x, y = ax.px(b / nb), ax.py(acc)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{ax.w / nb:.1f}" height="{ax.py(0) - y:.1f}" '
                f'fill="{COLORS[0]}" fill-opacity="0.7" stroke="#000"/>'
            )
    body.append(
        f'<line x1="{ax.px(0)}" y1="{ax.py(0)}" x2="{ax.px(1)}" y2="{ax.py(1)}" '
        'stroke="#000" stroke-dasharray="6 4"/>'
    )
    body += ax.frame("confidence", "accuracy", [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    body += [ax.xtick(v, f"{v:g}") for v in (0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    body.append(_legend([("accuracy", COLORS[0]), ("perfect calibration", "#000")]))
    return _svg(f"Reliability diagram (ECE {ece:.3f})", body)


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], title: str) -> str:
    """One group of bars per ``groups`` entry, one bar per series, values in [0, 1]."""
    ax = _Axes(-0.5, len(groups) - 0.5, 0, 1)
    width = 0.8 / max(1, len(series))
    body = []
    for s, (name, values) in enumerate(series.items()):
        for g, v in enumerate(values):
            x0 = g - 0.4 + s * width
            x, y = ax.px(x0), ax.py(v)
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{ax.px(x0 + width) - x:.1f}" '
                f'height="{ax.py(0) - y:.1f}" fill="{COLORS[s % len(COLORS)]}">'
                f"<title>{_e(name)} {v:.4f}</title></rect>"
            )
    body += ax.frame("", "", [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    body += [ax.xtick(g, lab) for g, lab in enumerate(groups)]
    body.append(_legend([(name, COLORS[s % len(COLORS)]) for s, name in enumerate(series)]))
    return _svg(title, body)


def _legend(items: list[tuple[str, str]], corner: str = "top-left", h: int = H) -> str:
    """A boxed legend inside the plot area's ``corner`` (top-left, bottom-left or bottom-right)."""
    width = 40 + 7 * max(len(name) for name, _ in items)
    height = 18 * len(items) + 4
    x0 = W - RIGHT - 4 - width if corner.endswith("right") else LEFT + 4
    y0 = h - BOTTOM - 2 - height if corner.startswith("bottom") else TOP + 2
    out = [
        f'<rect x="{x0}" y="{y0}" width="{width}" height="{height}" '
        'fill="#fff" fill-opacity="0.85" stroke="#ccc"/>'
    ]
    for i, (name, color) in enumerate(items):
        y = y0 + 10 + i * 18
        out.append(f'<rect x="{x0 + 6}" y="{y - 9}" width="14" height="10" fill="{color}"/>')
        out.append(f'<text x="{x0 + 26}" y="{y}">{_e(name)}</text>')
    return f"<g>{''.join(out)}</g>"


def curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    step: bool = False,
    diagonal: bool = False,
    xmax: float = 1.0,
    ymax: float = 1.0,
    legend: str = "top-left",
    colors: Sequence[str] | None = None,
    legend_items: Sequence[tuple[str, str]] | None = None,
    markers: bool = False,
) -> str:
    """One polyline per named (xs, ys) series on [0, xmax] x [0, ymax]; ``step``: a step after each
    point (precision-recall, histograms); ``diagonal``: the dotted chance line (ROC); ``legend``:
    the corner the curves leave free (ROC curves rise top-left, PR curves run along the top).
    ``colors``: one per series (default: a colour each); ``legend_items``: (name, colour) entries
    instead of one per series (many series in a few groups); ``markers``: a dot at each point."""
    ax = _Axes(0, xmax, 0, ymax)
    colors = colors or [COLORS[s % len(COLORS)] for s in range(len(series))]
    body = []
    if diagonal:
        body.append(
            f'<line x1="{ax.px(0)}" y1="{ax.py(0)}" x2="{ax.px(xmax)}" y2="{ax.py(ymax)}" '
            'stroke="#000" stroke-dasharray="2 3"/>'
        )
    for (xs, ys), color in zip(series.values(), colors, strict=True):
        pts = []
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            if step and i:
                pts.append(f"{ax.px(x):.1f},{ax.py(ys[i - 1]):.1f}")
            pts.append(f"{ax.px(x):.1f},{ax.py(y):.1f}")
        body.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" stroke-width="2"/>')
        if markers:
            dot = '<circle cx="{:.1f}" cy="{:.1f}" r="2.5" fill="{}"/>'
            body += [dot.format(ax.px(x), ax.py(y), color) for x, y in zip(xs, ys, strict=True)]
    fracs = (0, 0.25, 0.5, 0.75, 1.0)
    body += ax.frame(xlabel, ylabel, [float(f"{ymax * f:.3g}") for f in fracs])
    body += [ax.xtick(xmax * f, f"{xmax * f:.3g}") for f in fracs]
    items = list(legend_items) if legend_items is not None else list(zip(series, colors, strict=True))
    if items:
        body.append(_legend(items, legend))
    return _svg(title, body)


def intervals(
    rows: Sequence[tuple[str, float, float, float, str]], title: str, xlabel: str, *, ref: float, bars: bool
) -> str:
    """One row per (name, value, low, high, colour), top to bottom: a point (or a bar from ``ref``)
    with its interval as a whisker; a dashed vertical line at ``ref``."""
    lo = min([ref, *(r[2] for r in rows)])
    hi = max([ref, *(r[3] for r in rows)])
    pad = (hi - lo) * 0.05 or 0.05
    h = TOP + BOTTOM + 24 * max(len(rows), 3)
    ax = _Axes(lo - pad, hi + pad, len(rows) - 0.5, -0.5, h=h, left=180)  # row 0 at the top
    body = []
    for i, (name, v, a, b, color) in enumerate(rows):
        y = ax.py(i)
        if bars:
            x0, x1 = sorted((ax.px(ref), ax.px(v)))
            x1 = max(x1, x0 + 1.5)  # a zero change still shows as a hairline
            body.append(
                f'<rect x="{x0:.1f}" y="{y - 8:.1f}" width="{x1 - x0:.1f}" height="16" fill="{color}"/>'
            )
        else:
            body.append(f'<circle cx="{ax.px(v):.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
        x0, x1 = ax.px(a), ax.px(b)
        body.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="#555"/>')
        body.append(f'<text x="{ax.left - 7}" y="{y + 4:.1f}" text-anchor="end">{_e(name)}</text>')
    body.append(
        f'<line x1="{ax.px(ref):.1f}" y1="{TOP}" x2="{ax.px(ref):.1f}" y2="{TOP + ax.h}" '
        'stroke="#000" stroke-dasharray="6 4"/>'
    )
    body += ax.frame(xlabel, "", [])
    span = (hi + pad) - (lo - pad)
    body += [ax.xtick(lo - pad + span * f, f"{lo - pad + span * f:.3g}") for f in (0.05, 0.5, 0.95)]
    return _svg(title, body, h=h)
