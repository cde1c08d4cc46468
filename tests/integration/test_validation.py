"""Validation on the session's real Ray: conservation of rows, lazy failure lists,
quarantine on disk, exact statistics, drift on the shifted features only."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlplatform import manifest
from mlplatform.data.block_checks import REASON
from mlplatform.data.schema import infer_schema
from mlplatform.data.synthetic import DemoDataConfig, generate_day
from mlplatform.data.validation import validate_dataset
from mlplatform.spec import ColumnSchema, DriftSpec, SchemaSpec

pytestmark = pytest.mark.ray
ROLES = ("customer_id", "event_ts", "churned")


def _table(day: int, **kw) -> pa.Table:  # noqa: ANN003
    return pa.Table.from_pandas(generate_day(DemoDataConfig(rows_per_day=2000, **kw), day),
                                preserve_index=False)


def _ds(table: pa.Table, blocks: int = 3):  # noqa: ANN202
    import ray

    step = -(-table.num_rows // blocks)
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])


@pytest.fixture(scope="module")
def schema(ray_connected) -> SchemaSpec:  # noqa: ANN001
    inferred, _ = infer_schema(_table(1), entity="customer_id", timestamp="event_ts", label="churned")
    return inferred


@pytest.fixture(scope="module")
def hard_schema(schema: SchemaSpec) -> SchemaSpec:
    """The inferred schema as a person who reviewed it enforces it: every `soft` entry deleted."""
    return schema.model_copy(update={"columns": [c.model_copy(update={"soft": []}) for c in schema.columns]})


def test_broken_batch_lists_every_failure_and_quarantines_rows(hard_schema: SchemaSpec,
                                                               tmp_path: Path) -> None:
    broken = _table(2, break_day=2)
    result = validate_dataset(_ds(broken), hard_schema, valid_out=str(tmp_path / "valid"),
                              quarantine_out=str(tmp_path / "q"), row_id_column="customer_id")
    assert result.rows_in == broken.num_rows == result.rows_valid + result.rows_quarantined
    found = {(f.column, f.check, f.level) for f in result.failures}
    assert ("creditScore", "unexpected column", "schema") in found
    assert ("credit_score", "missing column", "schema") in found
    assert ("age", "type", "schema") in found
    assert ("sessions_7d", "max_null_fraction", "dataset") in found
    assert ("country", "domain", "row") in found
    domain = next(f for f in result.failures if f.check == "domain")
    assert domain.samples == ["XX"] * len(domain.samples) and len(domain.row_ids) == len(domain.samples)
    assert domain.fraction == pytest.approx(domain.failing / broken.num_rows)
    # Folders given as plain paths are committed: read through their manifests.
    quarantined = pads.dataset(manifest.committed_files(str(tmp_path / "q"))[1],
                               format="parquet").to_table().to_pandas()
    valid = pads.dataset(manifest.committed_files(str(tmp_path / "valid"))[1], format="parquet").to_table()
    assert len(quarantined) == result.rows_quarantined and valid.num_rows == result.rows_valid
    assert (quarantined["country"] == "XX").sum() == domain.failing
    assert quarantined[REASON].str.contains("country: domain").sum() == domain.failing


def test_an_inferred_domain_reports_new_categories_as_a_shift(schema: SchemaSpec) -> None:
    broken = _table(2, break_day=2)
    result = validate_dataset(_ds(broken), schema, row_id_column="customer_id")
    assert result.rows_quarantined == 0 and not [f for f in result.failures if f.level == "row"]
    assert result.schema_breaks  # the renamed column and the changed type still break the schema
    (country,) = [s for s in result.shifts if s.column == "country"]
    xx = int((broken.column("country").to_pandas() == "XX").sum())
    assert (country.constraint, country.outside, country.samples) == ("domain", xx, ["XX"])
    assert country.shifted and result.shifted_columns == ["country"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), st.floats(-50, 150, allow_nan=False)), min_size=1,
                       max_size=300),
       cats=st.lists(st.sampled_from(["a", "b", "c", "zz", None]), min_size=300, max_size=300),
       blocks=st.integers(1, 4))
def test_rows_in_equal_valid_plus_quarantined(ray_connected, values, cats, blocks) -> None:  # noqa: ANN001
    table = pa.table({"x": pa.array(values, pa.float64()), "c": pa.array(cats[: len(values)])})
    schema = SchemaSpec(columns=[
        ColumnSchema(name="x", type="float", min=0, max=100, max_null_fraction=1),
        ColumnSchema(name="c", type="category", domain=["a", "b", "c"], max_null_fraction=1)])
    result = validate_dataset(_ds(table, blocks), schema)
    x = pd.Series(values, dtype="float64")
    c = pd.Series(cats[: len(values)], dtype="object")
    expected_bad = ((x < 0) | (x > 100) | (c.notna() & ~c.isin(["a", "b", "c"]))).sum()
    assert result.rows_in == len(values)
    assert result.rows_quarantined == expected_bad
    assert result.rows_valid + result.rows_quarantined == result.rows_in


def test_statistics_are_exact(schema: SchemaSpec) -> None:
    table = _table(3)
    df = table.to_pandas()
    stats = validate_dataset(_ds(table, 4), schema).stats
    for name in ("income", "age", "spend_30d"):
        s = stats.columns[name]
        assert s.nulls == df[name].isna().sum() and s.count == df[name].notna().sum()
        assert s.numeric is not None
        assert s.numeric.mean == pytest.approx(df[name].mean(), rel=1e-9)
        assert s.numeric.std == pytest.approx(df[name].std(), rel=1e-9)
        assert (s.numeric.min, s.numeric.max) == (df[name].min(), df[name].max())
        assert s.numeric.quantiles["p50"] == pytest.approx(df[name].quantile(0.5))
    counts = stats.columns["device"].categorical
    assert counts is not None and counts.counts == df["device"].value_counts().to_dict()
    assert stats.columns["device"].nulls == df["device"].isna().sum()


def test_histograms_use_the_reference_bins(schema: SchemaSpec) -> None:
    ref = validate_dataset(_ds(_table(1)), schema).stats
    cur_table = _table(4)
    cur = validate_dataset(_ds(cur_table), schema, reference=ref).stats
    edges = ref.columns["income"].numeric.histogram.edges  # type: ignore[union-attr]
    hist = cur.columns["income"].numeric.histogram  # type: ignore[union-attr]
    core = slice(hist.underflow_bins, len(hist.edges) - hist.overflow_bins)
    assert hist.edges[core] == edges and hist.exact  # the reference's bins, plus tails if needed
    values = cur_table.column("income").to_pandas().dropna().to_numpy()
    inside = (values >= edges[0]) & (values <= edges[-1])  # the reference's last bin is closed
    expected, _ = np.histogram(values[~inside], bins=hist.edges)
    expected[hist.underflow_bins: hist.underflow_bins + len(edges) - 1] += np.histogram(
        values[inside], bins=edges)[0]
    assert hist.counts == expected.tolist() and sum(hist.counts) == len(values)


def test_drift_only_on_the_shifted_features(schema: SchemaSpec) -> None:
    ref = validate_dataset(_ds(_table(1, drift_day=3)), schema).stats
    same = validate_dataset(_ds(_table(2, drift_day=3)), schema, reference=ref,
                            drift_spec=DriftSpec(), exclude_from_drift=ROLES)
    assert same.drift is not None and same.drift.drifted_features == []
    shifted = validate_dataset(_ds(_table(3, drift_day=3)), schema, reference=ref,
                               drift_spec=DriftSpec(), exclude_from_drift=ROLES)
    assert shifted.drift is not None
    assert set(shifted.drift.drifted_features) == {"income", "days_since_last_login", "device"}
    assert not shifted.drift.dataset_drift  # 3 of 13 features is below half


def test_parquet_path_matches_the_dataset_path(hard_schema: SchemaSpec, tmp_path: Path) -> None:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from mlplatform.data.validation import validate_parquet

    broken = _table(2, break_day=2)
    pq.write_table(broken, tmp_path / "b.parquet", row_group_size=300)  # several row groups
    via_parquet = validate_parquet([str(tmp_path / "b.parquet")], pafs.LocalFileSystem(), hard_schema,
                                   quarantine_out=str(tmp_path / "q"), row_id_column="customer_id")
    via_dataset = validate_dataset(_ds(broken), hard_schema, row_id_column="customer_id")
    assert (via_parquet.rows_in, via_parquet.rows_valid, via_parquet.rows_quarantined) == (
        via_dataset.rows_in, via_dataset.rows_valid, via_dataset.rows_quarantined)
    assert {(f.column, f.check, f.failing) for f in via_parquet.failures} == {
        (f.column, f.check, f.failing) for f in via_dataset.failures}
    a, b = via_parquet.stats.columns["income"].numeric, via_dataset.stats.columns["income"].numeric
    assert a is not None and b is not None and a.mean == pytest.approx(b.mean, rel=1e-12)
    country = via_parquet.stats.columns["country"].categorical
    assert country == via_dataset.stats.columns["country"].categorical
    assert pads.dataset(tmp_path / "q", format="parquet").count_rows() == via_parquet.rows_quarantined


def test_parquet_on_ray_equals_one_process(hard_schema: SchemaSpec, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray tasks of a few row groups each, more of them than the window in flight, merged in
    file order: the same report as the row groups one after another in this process."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from mlplatform.data import validation

    files = []
    for day in (2, 3, 4):
        path = tmp_path / f"day{day}.parquet"
        pq.write_table(_table(day, break_day=2 if day == 2 else None), path, row_group_size=250)
        files.append(str(path))
    fs = pafs.LocalFileSystem()
    # Without the columns the broken day renames or retypes: its rows stay comparable.
    schema = hard_schema.model_copy(update={"columns": [c for c in hard_schema.columns
                                                        if c.name not in ("age", "credit_score")]})
    kw = {"reference": validation.validate_parquet(files[1:], fs, schema, local=True).stats,
          "drift_spec": DriftSpec(), "exclude_from_drift": ROLES, "row_id_column": "customer_id",
          "sample_size": 1000}
    from mlplatform.data import validation_tasks

    monkeypatch.setattr(validation_tasks, "TASK_ROWS", 500)  # 12 tasks of 2 row groups
    on_ray = validation.validate_parquet(files, fs, schema, quarantine_out=str(tmp_path / "q"), **kw)
    local = validation.validate_parquet(files, fs, schema, local=True, **kw)
    assert on_ray.rows_in == local.rows_in == 6000 and local.rows_quarantined > 0
    assert (on_ray.rows_valid, on_ray.rows_quarantined) == (local.rows_valid, local.rows_quarantined)
    assert [f.model_dump() for f in on_ray.failures] == [f.model_dump() for f in local.failures]
    for name, a in on_ray.stats.columns.items():
        b = local.stats.columns[name]
        assert (a.count, a.nulls, a.categorical, a.time_range) == (b.count, b.nulls, b.categorical,
                                                                    b.time_range)
        if a.numeric is not None and b.numeric is not None:
            assert a.numeric.mean == pytest.approx(b.numeric.mean, rel=1e-12)
            assert a.numeric.std == pytest.approx(b.numeric.std, rel=1e-9)
            assert (a.numeric.quantiles, a.numeric.histogram) == (b.numeric.quantiles, b.numeric.histogram)
    for name, sample in local.stats.samples.items():
        assert on_ray.stats.samples[name].tolist() == sample.tolist()  # the same rows, in file order
    assert on_ray.drift is not None and local.drift is not None
    assert on_ray.drift.model_dump() == local.drift.model_dump()
    assert pads.dataset(tmp_path / "q", format="parquet").count_rows() == on_ray.rows_quarantined
