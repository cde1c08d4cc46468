"""check_block on its own (no Ray): the edge cases a real batch brings."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mlplatform.cli.app import app
from mlplatform.data.block_checks import CheckPlan, check_block
from mlplatform.errors import InputError
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import check_run_id
from mlplatform.spec import ColumnSchema, SchemaSpec


def _plan(*columns: ColumnSchema) -> CheckPlan:
    return CheckPlan(schema=SchemaSpec(columns=list(columns), strict=False), edges={}, sample_rate=1.0,
                     seed=0, row_id_column=None, valid_out="unused", quarantine_out="unused")


def _failures(part) -> dict:  # noqa: ANN001
    return {(k[0], k[1]): v.count for k, v in part.failures.items()}


def test_nan_counts_as_missing_and_does_not_hide_range_failures() -> None:
    table = pa.table({"x": pa.array([1.0, float("nan"), 5.0, 50.0])})
    plan = _plan(ColumnSchema(name="x", type="float", min=2, max=10, max_null_fraction=1))
    valid, quarantined, part = check_block(table, plan)
    assert _failures(part) == {("x", "min 2"): 1, ("x", "max 10"): 1}
    assert part.columns["x"].nulls == 1 and part.columns["x"].count == 3
    assert valid.num_rows == 2 and quarantined.num_rows == 2


def test_regex_with_nulls_and_dictionary_strings() -> None:
    ids = pa.array(["ab1", None, "zz", "cd2"]).dictionary_encode()
    plan = _plan(ColumnSchema(name="id", type="string", regex=r"[a-z]{2}\d", max_null_fraction=1))
    _, quarantined, part = check_block(pa.table({"id": ids}), plan)
    assert _failures(part) == {("id", "regex"): 1}
    assert quarantined.column("id").to_pylist() == ["zz"]


def test_bool_domain_and_all_null_columns() -> None:
    table = pa.table({"flag": pa.array([True, False, None]), "empty": pa.nulls(3),
                      "big": pa.array([2**60, 1, None], pa.int64())})
    plan = _plan(ColumnSchema(name="flag", type="bool", domain=["false", "true"], max_null_fraction=1),
                 ColumnSchema(name="empty", type="string", regex="x", max_null_fraction=1),
                 ColumnSchema(name="big", type="int", max_null_fraction=1))
    _, _, part = check_block(table, plan)
    assert _failures(part) == {}
    assert dict(part.columns["flag"].cats) == {"true": 1, "false": 1}
    assert part.columns["empty"].nulls == 3
    assert part.columns["big"].max == pytest.approx(2.0**60)
    assert np.isfinite(part.columns["big"].mean)


def test_run_ids_that_could_escape_their_folder_are_refused() -> None:
    assert check_run_id("demo-20260101-000000-ab12") == "demo-20260101-000000-ab12"
    for bad in ("../../..", "a b", "x;rm -rf /", "", "a/../b"):
        with pytest.raises(InputError, match="--run-id"):
            check_run_id(bad)


def test_a_malformed_metadata_url_is_an_input_error() -> None:
    with pytest.raises(InputError, match="metadata_url"):
        MetadataStore("not a url")


def test_init_with_a_bad_name_keeps_the_existing_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("precious")
    result = CliRunner().invoke(app, ["init", "Bad Name", "--out", "mine.yaml", "--force"])
    assert result.exit_code == 2 and "name" in result.output
    assert (tmp_path / "mine.yaml").read_text() == "precious"


def _stat_plan(sample_rate: float, **edges: np.ndarray) -> CheckPlan:
    return CheckPlan(schema=SchemaSpec(columns=[
        ColumnSchema(name="x", type="float", min=0, max=900, max_null_fraction=1),
        ColumnSchema(name="y", type="float", max_null_fraction=1),
        ColumnSchema(name="k", type="int", max_null_fraction=1)], strict=False),
        edges=edges, sample_rate=sample_rate, seed=0, row_id_column=None, valid_out=None,
        quarantine_out=None)


def test_block_statistics_with_nulls_nan_and_a_sample_are_exact() -> None:
    n = 1000
    x = np.arange(n, dtype=float)  # unique values: a sampled value names its row
    y = x.copy()
    y[::7] = np.nan
    nulls = np.zeros(n, dtype=bool)
    nulls[3::11] = True
    table = pa.table({"x": x, "y": pa.array(y, mask=nulls), "k": np.arange(n) - 5})
    edges = np.linspace(100.0, 600.0, 11)
    _, _, part = check_block(table, _stat_plan(0.3, x=edges, y=edges, k=edges))
    present = ~np.isnan(y) & ~nulls
    for name, values in (("x", x), ("y", y[present]), ("k", np.arange(n) - 5.0)):
        cp = part.columns[name]
        assert cp.count == values.size and cp.nulls == n - values.size
        assert cp.mean == pytest.approx(values.mean(), rel=1e-12)
        assert cp.m2 == pytest.approx(((values - values.mean()) ** 2).sum(), rel=1e-12)
        assert (cp.min, cp.max) == (values.min(), values.max())
        inside = values[(values >= 100) & (values <= 600)]
        assert cp.hist.tolist() == np.histogram(inside, bins=edges)[0].tolist()
        assert cp.under.counts.sum() == (values < 100).sum() and cp.over.counts.sum() == (values > 600).sum()
    # The same rows are drawn for every column: y's sample is x's less y's missing rows.
    sample_x, sample_y = part.columns["x"].sample[0], part.columns["y"].sample[0]
    assert 200 < sample_x.size < 400
    assert sample_y.tolist() == [v for v in sample_x if present[int(v)]]
    assert _failures(part) == {("x", "max 900"): 99}


def test_a_partial_keeps_its_values_when_the_next_block_reuses_the_buffers() -> None:
    # A missing value makes the non-missing ones a compacted copy: a reused buffer.
    first, second = np.r_[np.linspace(0, 10, 500), np.nan], np.r_[np.linspace(50, 90, 500), np.nan]
    edges = np.linspace(0.0, 10.0, 6)
    _, _, a = check_block(pa.table({"x": first, "y": first, "k": np.arange(501)}), _stat_plan(1.0, x=edges))
    hist, sample = a.columns["x"].hist.copy(), a.columns["x"].sample[0].copy()
    check_block(pa.table({"x": second, "y": second, "k": np.arange(501)}), _stat_plan(1.0, x=edges))
    assert a.columns["x"].hist.tolist() == hist.tolist() == [100] * 5
    assert a.columns["x"].sample[0].tolist() == sample.tolist() == first[:-1].tolist()


def test_row_groups_are_batched_into_tasks_in_file_order() -> None:
    from mlplatform.data.validation_tasks import TASK_ROWS, _work_items

    big = [{"path": "a", "row_group": i, "rows": 500_000} for i in range(4)]
    assert _work_items(big, 2) == [[("a", i)] for i in range(4)]  # a big row group is a task
    small = [{"path": p, "row_group": i, "rows": 300} for p in ("a", "b") for i in range(5)]
    work = _work_items(small, 2)  # 3000 rows: at least one task per CPU, each >= 1500 rows
    assert work == [[("a", 0), ("a", 1), ("a", 2), ("a", 3), ("a", 4)],
                    [("b", 0), ("b", 1), ("b", 2), ("b", 3), ("b", 4)]]
    many = [{"path": "a", "row_group": i, "rows": 50_000} for i in range(100)]
    assert {len(w) for w in _work_items(many, 2)} == {TASK_ROWS // 50_000}
    assert _work_items([], 2) == []
