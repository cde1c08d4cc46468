"""Soft constraints (what inference reads off the data) versus hard ones (what a person
wrote), and histograms that show where a shifted batch's values lie. No Ray: check_block
and combine, the per-block and driver halves of a validation pass."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import yaml
from pydantic import ValidationError

from mlplatform.data.block_checks import CheckPlan, check_block
from mlplatform.data.report import column_rows, render_html, report_json
from mlplatform.data.schema import infer_schema, schema_yaml, soften
from mlplatform.data.stats import (
    HIST_BINS,
    MAX_GRID_BINS,
    MAX_TAIL_BINS,
    DatasetStats,
    finalize,
    numeric_partial,
)
from mlplatform.data.validation import ValidationResult, combine
from mlplatform.data.verdict import drift_alert, shift_summary, verdict
from mlplatform.spec import ColumnSchema, PipelineSpec, SchemaSpec

SPEC = PipelineSpec.model_validate({"name": "prices", "source": {
    "path": "/nowhere", "entity_column": "item", "timestamp_column": "ts"}})


def _prices(n: int, scale: float, seed: int) -> pa.Table:
    """Item prices and sizes; `scale` > 1 is a covariate shift to larger items."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(1, 10, n) * scale
    return pa.table({"item": [f"i{i}" for i in range(n)], "size": size,
                     "price": size * 8 + rng.normal(0, 1, n),
                     "shop": rng.choice(["north", "south"], n)})


def _validate(table: pa.Table, schema: SchemaSpec, blocks: int = 3) -> ValidationResult:
    plan = CheckPlan(schema=schema, edges={}, sample_rate=1.0, seed=0, row_id_column="item",
                     valid_out=None, quarantine_out=None)
    step = -(-table.num_rows // blocks)
    parts = [check_block(table.slice(i, step), plan)[2] for i in range(0, table.num_rows, step)]
    return combine(parts, schema)


def _inferred() -> SchemaSpec:
    schema, _ = infer_schema(_prices(300, 1.0, seed=1), entity="item")
    return schema


def _hardened(schema: SchemaSpec) -> SchemaSpec:
    """What a person gets by deleting the `soft:` lines of the inferred YAML: one edit."""
    text = "\n".join(line for line in schema_yaml(schema).splitlines() if "soft:" not in line)
    return SchemaSpec.model_validate(yaml.safe_load(text))


def test_inference_marks_ranges_and_small_domains_soft_and_says_how_to_harden() -> None:
    schema = _inferred()
    cols = {c.name: c for c in schema.columns}
    assert cols["size"].soft == ["min", "max"] and cols["price"].soft == ["min", "max"]
    assert cols["shop"].domain == ["north", "south"] and cols["shop"].soft == ["domain"]
    assert cols["item"].soft == []  # an id: no domain, nothing soft
    text = schema_yaml(schema)
    soft_lines = [line for line in text.splitlines() if line.strip().startswith("soft:")]
    assert len(soft_lines) == 3 and all("delete to enforce" in line for line in soft_lines)
    assert "Soft (values outside are counted and reported as a shift" in text
    assert SchemaSpec.model_validate(yaml.safe_load(text)) == schema
    hard = _hardened(schema)
    assert all(c.soft == [] for c in hard.columns)
    assert [(c.min, c.max, c.domain) for c in hard.columns] == [(c.min, c.max, c.domain)
                                                                for c in schema.columns]


def test_inferred_soft_range_reports_a_shift_and_a_hard_one_quarantines() -> None:
    shifted = _prices(400, 5.0, seed=2)  # sizes up to 5x the inferred maximum: right types
    soft = _validate(shifted, _inferred())
    assert soft.rows_quarantined == 0 and soft.rows_valid == 400 and soft.failures == []
    assert verdict(soft, SPEC) == []
    assert soft.shifted_columns == ["size", "price"]
    size = next(s for s in soft.shifts if s.column == "size")
    expected = int(np.sum(shifted.column("size").to_numpy() > _inferred().columns[1].max))
    assert size.constraint == "range" and size.outside == expected and size.fraction == expected / 400
    assert size.fraction > 0.5 and size.shifted
    assert size.seen_max == pytest.approx(float(np.max(shifted.column("size").to_numpy())))
    assert size.samples and len(size.row_ids) == len(size.samples)

    hard = _validate(shifted, _hardened(_inferred()))
    assert hard.rows_quarantined > 0.5 * 400 and hard.shifts == []
    assert {(f.column, f.check.split()[0], f.level) for f in hard.failures} == {
        ("size", "max", "row"), ("price", "max", "row")}
    assert verdict(hard, SPEC) and "max_invalid_fraction" in verdict(hard, SPEC)[0]


def test_hand_written_range_without_the_marker_stays_hard() -> None:
    table = pa.table({"x": pa.array([5.0, 50.0, 300.0, 400.0, -1.0])})
    written = SchemaSpec.model_validate(yaml.safe_load(
        "strict: false\ncolumns:\n  - {name: x, type: float, min: 0, max: 100}\n"))
    result = _validate(table, written, blocks=2)
    assert result.rows_quarantined == 3 and result.shifts == []
    half = SchemaSpec(columns=[ColumnSchema(name="x", type="float", min=0, max=100, soft=["max"])],
                      strict=False)
    mixed = _validate(table, half, blocks=2)  # a soft max, a hard min
    assert mixed.rows_quarantined == 1 and [f.check for f in mixed.failures] == ["min 0"]
    assert [(s.column, s.outside, s.expected) for s in mixed.shifts] == [("x", 2, "[-inf, 100]")]


def test_soft_domain_counts_new_categories_and_a_hard_one_quarantines_them() -> None:
    table = pa.table({"shop": pa.array(["north"] * 6 + ["east"] * 3 + ["west"] + [None])})
    col = ColumnSchema(name="shop", type="category", domain=["north", "south"], max_null_fraction=1)
    soft = _validate(table, SchemaSpec(columns=[col.model_copy(update={"soft": ["domain"]})]))
    assert soft.rows_quarantined == 0 and soft.failures == []
    (shift,) = soft.shifts
    assert (shift.constraint, shift.outside, shift.samples) == ("domain", 4, ["east", "west"])
    assert "'east'" in shift.message
    hard = _validate(table, SchemaSpec(columns=[col]))
    assert hard.rows_quarantined == 4 and hard.shifts == []
    # A person who allowed some unseen share still gets the dataset check, not a shift.
    share = _validate(table, SchemaSpec(columns=[col.model_copy(update={"max_unseen_fraction": 0.1})]))
    assert [(f.check, f.level) for f in share.failures] == [("domain", "dataset")] and not share.shifts


def test_few_values_outside_a_soft_range_are_reported_but_are_no_shift() -> None:
    values = np.r_[np.linspace(0, 100, 995), [150.0] * 5]
    schema = SchemaSpec(columns=[ColumnSchema(name="x", type="float", min=0, max=120, soft=["min", "max"])])
    (stray,) = _validate(pa.table({"x": values}), schema).shifts
    assert stray.outside == 5 and not stray.shifted


def test_soft_must_name_constraints_the_column_sets() -> None:
    with pytest.raises(ValidationError, match=r"soft names \['max'\]"):
        ColumnSchema(name="x", type="float", min=0, soft=["min", "max"])
    with pytest.raises(ValidationError, match="soft"):
        ColumnSchema.model_validate({"name": "x", "type": "float", "min": 0, "soft": ["minimum"]})


def test_recorded_schemas_from_before_soft_are_softened() -> None:
    old = SchemaSpec(columns=[ColumnSchema(name="x", type="float", min=0, max=1),
                              ColumnSchema(name="c", type="category", domain=["a"]),
                              ColumnSchema(name="s", type="string", regex="a+")])
    assert [c.soft for c in soften(old).columns] == [["min", "max"], ["domain"], []]


def test_report_names_the_shift_apart_from_invalid_rows() -> None:
    schema = _inferred()
    result = _validate(_prices(400, 5.0, seed=2), schema)
    rows = {r.column: r for r in column_rows(result, schema)}
    assert rows["size"].verdict == "shift" and rows["size"].failures == []
    assert rows["size"].shift and "outside" in rows["size"].shift[0]
    assert "soft" in " ".join(rows["size"].checks)
    data = report_json(result, schema)
    assert data["shifted_columns"] == ["size", "price"] and data["rows_quarantined"] == 0
    assert data["failures"] == [] and data["shifts"][0]["column"] == "size"
    html = render_html(result, schema, None, "prices")
    assert "Shift on size, price" in html and "<h2>Shift</h2>" in html


def test_a_shift_alone_is_alerted_and_summarised_like_drift() -> None:
    result = _validate(_prices(400, 5.0, seed=2), _inferred())
    assert result.drift is None  # no reference: only the shift can say the data moved
    severity, message = drift_alert(result, "previous batch")  # type: ignore[misc]
    assert severity == "warning" and message.startswith("shift on size, price")
    summary = shift_summary(result)
    assert set(summary) == {"size", "price"} and summary["size"]["fraction"] > 0.5
    assert drift_alert(_validate(_prices(400, 1.0, seed=5), _inferred()), "x") is None


# --- histograms -----------------------------------------------------------------------------


def _histogram(values: np.ndarray, edges: np.ndarray, blocks: int = 4):  # noqa: ANN202
    parts = [numeric_partial(v, "float", 0, edges, None) for v in np.array_split(values, blocks)]
    total = parts[0]
    for p in parts[1:]:
        total.merge(p)
    return finalize({"x": total}, values.size, 20_000).columns["x"].numeric.histogram


def test_a_shifted_batch_is_drawn_where_its_values_lie() -> None:
    edges = np.linspace(0.0, 100.0, HIST_BINS + 1)  # the reference's bins
    values = np.random.default_rng(3).uniform(50, 500, 5000)  # up to 5x the reference's max
    hist = _histogram(values, edges)
    assert hist.edges[: HIST_BINS + 1] == edges.tolist()  # the reference's bins, then tails
    assert hist.edges[-1] >= values.max() and hist.overflow_bins > 0 and hist.underflow_bins == 0
    expected, _ = np.histogram(values, bins=np.asarray(hist.edges))
    assert hist.counts == expected.tolist()
    last_ref_bin = hist.counts[HIST_BINS - 1]
    assert last_ref_bin < 2 * max(hist.counts[:HIST_BINS - 1])  # no spike at the reference's max
    assert sum(hist.counts) == values.size


def test_tails_stay_bounded_and_blocks_agree_with_one_pass() -> None:
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    rng = np.random.default_rng(4)
    values = np.r_[rng.uniform(-3, 1, 2000), rng.uniform(0, 1, 2000), 1e9, rng.uniform(1, 40, 500)]
    rng.shuffle(values)
    hist = _histogram(values, edges, blocks=7)
    assert hist.overflow_bins <= MAX_TAIL_BINS and hist.underflow_bins <= MAX_TAIL_BINS
    assert hist.counts == _histogram(values, edges, blocks=1).counts
    expected, _ = np.histogram(values, bins=np.asarray(hist.edges))
    assert hist.counts == expected.tolist() and hist.edges[0] <= -3


def test_the_next_batch_uses_these_bins_until_tails_make_them_too_many() -> None:
    edges = np.linspace(0.0, 100.0, HIST_BINS + 1)
    slightly = _histogram(np.r_[np.linspace(0, 100, 50), 104.0], edges)
    far = _histogram(np.r_[np.linspace(0, 100, 50), 2_000.0], edges)
    stats = DatasetStats(rows=1, sample_size=1, columns={})
    for name, hist in (("slightly", slightly), ("far", far)):
        stats.columns[name] = finalize({name: numeric_partial(np.array([1.0]), "float", 0, None, None)},
                                       1, 1).columns[name]
        stats.columns[name].numeric.histogram = hist  # type: ignore[union-attr]
    grid = stats.hist_edges()
    assert grid["slightly"].tolist() == slightly.edges and len(slightly.edges) - 1 == HIST_BINS + 1
    assert len(far.edges) - 1 > MAX_GRID_BINS
    assert grid["far"].tolist() == np.linspace(far.edges[0], far.edges[-1], HIST_BINS + 1).tolist()
