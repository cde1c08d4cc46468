import pyarrow as pa
import yaml

from mlplatform.data.schema import infer_schema, schema_yaml, type_matches
from mlplatform.data.synthetic import DemoDataConfig, generate_day
from mlplatform.spec import SchemaSpec


def _day(day: int = 1, **kw) -> pa.Table:  # noqa: ANN003
    return pa.Table.from_pandas(generate_day(DemoDataConfig(rows_per_day=3000, **kw), day),
                                preserve_index=False)


def test_inference_proposes_types_domains_ranges_and_roles() -> None:
    schema, notes = infer_schema(_day(), entity="customer_id", timestamp="event_ts", label="churned")
    cols = {c.name: c for c in schema.columns}
    assert cols["customer_id"].type == "string" and cols["customer_id"].domain is None
    assert cols["event_ts"].type == "timestamp"
    assert cols["country"].type == "category"
    assert cols["country"].domain == ["BR", "DE", "FR", "GB", "IN", "US"]
    assert cols["income"].type == "float" and 0 < cols["income"].max_null_fraction < 0.2
    assert cols["sessions_7d"].max_null_fraction == 0
    assert cols["age"].min is not None and cols["age"].min <= 18 and cols["age"].max >= 85
    assert cols["discount_rate"].min == 0  # non-negative data keeps a non-negative bound
    assert cols["churned"].serving is False
    assert schema.strict and schema.min_rows == 1
    assert "entity key" in notes["customer_id"] and "null" in notes["income"]


def test_yaml_is_commented_and_round_trips(tmp_path) -> None:  # noqa: ANN001
    schema, notes = infer_schema(_day(), entity="customer_id", timestamp="event_ts", label="churned")
    text = schema_yaml(schema, notes, source="day 1")
    assert text.startswith("# Schema inferred by mlplatform")
    assert text.count("\n  # ") == len(schema.columns)
    assert SchemaSpec.model_validate(yaml.safe_load(text)) == schema


def test_same_distribution_passes_the_inferred_ranges() -> None:
    schema, _ = infer_schema(_day(1), entity="customer_id", timestamp="event_ts", label="churned")
    other = _day(2, seed=99).to_pandas()
    for col in schema.columns:
        if col.min is not None:
            outside = ((other[col.name] < col.min) | (other[col.name] > col.max)).mean()
            assert outside < 0.01, (col.name, outside)


def test_type_matching() -> None:
    assert type_matches("float", pa.int64()) and type_matches("float", pa.float32())
    assert not type_matches("int", pa.float64())
    assert not type_matches("float", pa.string())
    assert type_matches("category", pa.dictionary(pa.int32(), pa.string()))
    assert type_matches("timestamp", pa.timestamp("us")) and type_matches("timestamp", pa.date32())
    assert type_matches("int", pa.null())  # an all-null column has no type to disagree with
