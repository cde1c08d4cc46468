"""The small distribution charts of the validation and live-drift reports, as inline SVG.

Written by hand because the plotting libraries' cost is fixed per figure: matplotlib drew a
batch's 14 charts in 1.1 s (75 ms a figure, most of it laying out ticks and text), nearly
all of a 4,000-row validate step (issue 15). These charts are a few rectangles, one path per
series and a handful of labels: the SVG costs well under a millisecond, is a few kB, and the
browser scales it. Axis ticks come from matplotlib's own locator (no drawing involved), so the
numbers on the axes are the ones a matplotlib chart would show.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np

WIDTH, HEIGHT = 420, 240
LEFT, RIGHT, TOP = 48, 10, 22
COLOURS = ("#1f77b4", "#ff7f0e")  # current, reference: matplotlib's first two


@dataclass(frozen=True)
class Series:
    label: str
    values: np.ndarray  # one per bin (stairs) or per category (bars)
    filled: bool = True


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    from matplotlib.ticker import MaxNLocator

    if not hi > lo:
        hi = lo + 1.0
    slack = 1e-12 * abs(hi)
    return [float(t) for t in MaxNLocator(n).tick_values(lo, hi) if lo - slack <= t <= hi + slack]


def _label(value: float) -> str:
    return f"{value:.4g}"


class _Frame:
    """Data coordinates to pixels, and the axes, title and legend around the plot area."""

    def __init__(self, title: str, x: tuple[float, float], y_max: float, bottom: int) -> None:
        self.x0, self.x1 = x if x[1] > x[0] else (x[0], x[0] + 1.0)
        self.y1 = y_max if y_max > 0 else 1.0
        self.bottom = bottom
        self.parts: list[str] = [
            f"<text x='{WIDTH / 2:.0f}' y='14' text-anchor='middle' font-size='12'>{escape(title)}</text>",
            f"<rect x='{LEFT}' y='{TOP}' width='{self.w:.1f}' height='{self.h:.1f}' "
            "fill='none' stroke='#444'/>"]

    @property
    def w(self) -> float:
        return WIDTH - LEFT - RIGHT

    @property
    def h(self) -> float:
        return HEIGHT - TOP - self.bottom

    def px(self, x: float) -> float:
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * self.w

    def py(self, y: float) -> float:
        return TOP + self.h - y / self.y1 * self.h

    def y_axis(self) -> None:
        for t in _ticks(0.0, self.y1, 4):
            y = self.py(t)
            self.parts.append(f"<line x1='{LEFT - 3}' x2='{LEFT}' y1='{y:.1f}' y2='{y:.1f}' stroke='#444'/>"
                              f"<text x='{LEFT - 5}' y='{y + 3:.1f}' text-anchor='end' font-size='9'>"
                              f"{_label(t)}</text>")

    def x_axis(self) -> None:
        for t in _ticks(self.x0, self.x1):
            x = self.px(t)
            base = TOP + self.h
            self.parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{base:.1f}' y2='{base + 3:.1f}' "
                              "stroke='#444'/>"
                              f"<text x='{x:.1f}' y='{base + 13:.1f}' text-anchor='middle' font-size='9'>"
                              f"{_label(t)}</text>")

    def legend(self, entries: list[tuple[str, str]]) -> None:
        for i, (label, style) in enumerate(entries):
            y = TOP + 6 + 12 * i
            x = WIDTH - RIGHT - 90
            self.parts.append(f"<rect x='{x}' y='{y}' width='12' height='7' {style}/>"
                              f"<text x='{x + 16}' y='{y + 7}' font-size='9'>{escape(label)}</text>")

    def svg(self, name: str) -> str:
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
                f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img' aria-label='{escape(name)}' "
                f"font-family='sans-serif'><title>{escape(name)}</title>{''.join(self.parts)}</svg>")


def stairs(name: str, edges: np.ndarray, series: list[Series], lines: list[tuple[float, str]]) -> str:
    """Densities over bins as steps (the first series filled), with vertical dashed lines
    (the schema's range) labelled in the legend."""
    xs = [float(edges[0]), float(edges[-1]), *(v for v, _ in lines)]
    top = max([float(np.nanmax(s.values)) for s in series if s.values.size] + [0.0]) * 1.05
    f = _Frame(name, (min(xs), max(xs)), top, bottom=30)
    legend: list[tuple[str, str]] = []
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        points = [f"{f.px(float(edges[0])):.1f},{f.py(0):.1f}"]
        for k, v in enumerate(np.nan_to_num(s.values.astype(float))):
            y = f.py(float(v))
            points += [f"{f.px(float(edges[k])):.1f},{y:.1f}", f"{f.px(float(edges[k + 1])):.1f},{y:.1f}"]
        points.append(f"{f.px(float(edges[-1])):.1f},{f.py(0):.1f}")
        style = (f"fill='{colour}' fill-opacity='0.5' stroke='none'" if s.filled
                 else f"fill='none' stroke='{colour}' stroke-width='1.5'")
        f.parts.append(f"<polyline points='{' '.join(points)}' {style}/>")
        legend.append((s.label, style if s.filled else f"fill='{colour}'"))
    for value, label in lines:
        x = f.px(value)
        f.parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{TOP}' y2='{TOP + f.h:.1f}' stroke='grey' "
                       "stroke-dasharray='4 3'/>")
        if label:
            legend.append((label, "fill='grey'"))
    f.x_axis()
    f.y_axis()
    f.legend(legend)
    return f.svg(name)


def bars(name: str, categories: list[str], series: list[Series]) -> str:
    """Shares per category side by side, the category names slanted under their bars."""
    top = max([float(np.max(s.values)) for s in series if s.values.size] + [0.0]) * 1.05
    f = _Frame(name, (-0.6, len(categories) - 0.4), top, bottom=70)
    width = 0.8 / max(len(series), 1)
    legend = []
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for k, v in enumerate(s.values.astype(float)):
            x0, y = f.px(k - 0.4 + i * width), f.py(float(v))
            f.parts.append(f"<rect x='{x0:.1f}' y='{y:.1f}' width='{f.px(width) - f.px(0):.1f}' "
                           f"height='{f.py(0) - y:.1f}' fill='{colour}'/>")
        legend.append((s.label, f"fill='{colour}'"))
    base = TOP + f.h
    for k, cat in enumerate(categories):
        x = f.px(k)
        f.parts.append(f"<text transform='translate({x:.1f},{base + 10:.1f}) rotate(-45)' text-anchor='end' "
                       f"font-size='9'>{escape(cat)}</text>")
    f.y_axis()
    f.legend(legend)
    return f.svg(name)
