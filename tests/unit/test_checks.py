"""check_block on its own (no Ray): the edge cases a real batch brings."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from mlplatform.cli.app import app
from mlplatform.data.validation import CheckPlan, check_block
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
