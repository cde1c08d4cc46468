"""The reports' hand-written SVG charts: well-formed, one per column, and drawn to scale (a
bin twice as dense is drawn twice as tall, a range line sits at its value)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
import pyarrow as pa

from mlplatform.data import svg_chart
from mlplatform.data.block_checks import CheckPlan, check_block
from mlplatform.data.report import render_html
from mlplatform.data.schema import infer_schema
from mlplatform.data.validation import combine

NS = "{http://www.w3.org/2000/svg}"


def _points(poly: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in poly.get("points", "").split()]  # type: ignore[misc]


def test_stairs_are_drawn_to_scale_with_the_range_lines_at_their_values() -> None:
    edges = np.array([0.0, 10.0, 20.0, 40.0])
    series = [svg_chart.Series("current", np.array([1.0, 3.0, 0.5])),
              svg_chart.Series("reference", np.array([2.0, 2.0, 2.0]), filled=False)]
    svg = svg_chart.stairs("a<b", edges, series, [(5.0, "range"), (40.0, "")])
    root = ET.fromstring(svg)
    assert root.get("aria-label") == "a<b" and root.find(f"{NS}title").text == "a<b"
    current, reference = root.findall(f"{NS}polyline")
    pts = _points(current)
    base = pts[0][1]
    heights = [base - pts[i][1] for i in (1, 3, 5)]  # the top of each bin's step
    assert abs(heights[1] - 3 * heights[0]) < 0.3
    assert abs(heights[2] - heights[0] / 2) < 0.3
    xs = [p[0] for p in pts[1:-1]]
    assert xs == sorted(xs) and abs((xs[3] - xs[2]) - (xs[1] - xs[0])) < 0.3  # equal-width bins
    assert abs((xs[5] - xs[4]) - 2 * (xs[1] - xs[0])) < 0.3  # the last bin is twice as wide
    assert current.get("fill") != "none" and reference.get("fill") == "none"
    dashed = [ln for ln in root.findall(f"{NS}line") if ln.get("stroke-dasharray")]
    assert len(dashed) == 2
    x_at = {round(float(ln.get("x1")), 1) for ln in dashed}
    assert round(xs[0] + (xs[1] - xs[0]) / 2, 1) in x_at  # 5.0: the middle of the first bin
    assert round(xs[-1], 1) in x_at  # 40.0: the right edge
    labels = [t.text for t in root.iter(f"{NS}text")]
    assert "current" in labels and "reference" in labels and "range" in labels


def test_bars_one_per_category_and_series() -> None:
    svg = svg_chart.bars("shop", ["north", "south", "west"],
                         [svg_chart.Series("current", np.array([0.5, 0.25, 0.25])),
                          svg_chart.Series("reference", np.array([0.2, 0.4, 0.4]))])
    root = ET.fromstring(svg)
    rects = [r for r in root.findall(f"{NS}rect") if float(r.get("height", 0)) > 0 and r.get("width") != "12"]
    bars = rects[1:]  # the first is the plot area's frame
    assert len(bars) == 6
    tall = {round(float(r.get("height")), 1) for r in bars}
    assert abs(max(tall) / min(tall) - 2.5) < 0.05  # 0.5 vs 0.2
    assert [t.text for t in root.iter(f"{NS}text") if t.get("transform")] == ["north", "south", "west"]


def test_the_validation_page_holds_one_well_formed_chart_per_column() -> None:
    rng = np.random.default_rng(0)
    table = pa.table({"item": [f"i{i}" for i in range(500)], "size": rng.uniform(1, 10, 500),
                      "shop": rng.choice(["north", "south"], 500)})
    schema, _ = infer_schema(table, entity="item")
    plan = CheckPlan(schema=schema, edges={}, sample_rate=1.0, seed=0, row_id_column="item",
                     valid_out=None, quarantine_out=None)
    result = combine([check_block(table, plan)[2]], schema)
    page = render_html(result, schema, None, "prices")
    charts = [ET.fromstring(c) for c in re.findall(r"<svg .*?</svg>", page, re.S)]
    assert [c.get("aria-label") for c in charts] == ["size", "shop"]  # the ids get no chart
