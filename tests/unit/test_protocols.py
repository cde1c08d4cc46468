"""The model server's request formats: predict (rows/columns/entities), V2 and MLflow -> a frame."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from serve.protocols import (
    Column,
    ErrorResponse,
    FeedbackRequest,
    InputContract,
    MlflowRequest,
    PredictRequest,
    PredictResponse,
    RequestError,
    V2InferRequest,
    V2InferResponse,
    V2ModelMetadata,
    datatype_of_mlflow,
    parse_mlflow,
    parse_predict,
    parse_v2,
    to_frame,
    v2_infer_response,
    v2_model_metadata,
)

COLUMNS = (Column("age", "INT64", nullable=False), Column("income", "FP64"), Column("country", "BYTES"),
           Column("active", "BOOL"))
CONTRACT = InputContract(COLUMNS)


def expected(age: list, income: list, country: list, active: list, index: list | None = None) -> pd.DataFrame:
    """The frame built by hand, with the dtypes the contract promises."""
    frame = pd.DataFrame({"age": np.array(age, dtype=np.int64), "income": np.array(income, dtype=np.float64),
                          "country": pd.Series(country, dtype=object), "active": np.array(active)})
    if index is not None:
        frame.index = pd.Index(index)
    return frame


def refused(fn, *args, status: int = 400) -> RequestError:  # noqa: ANN001
    with pytest.raises(RequestError) as info:
        fn(*args)
    assert info.value.status == status, info.value.message
    assert str(info.value) == info.value.message
    return info.value


def columns(**overrides: list) -> dict[str, list]:
    return {"age": [41, 29], "income": [1.5, 2.0], "country": ["DE", "FR"], "active": [True, False],
            **overrides}


# ------------------------------------------------------------------------------------- predict
def test_predict_rows_with_entity_column() -> None:
    body = {"rows": [{"customer_id": "c-1", "age": 41, "income": 1.5, "country": "DE", "active": True},
                     {"active": False, "country": "FR", "income": 2, "age": 29, "customer_id": 7}]}
    parsed = parse_predict(body, CONTRACT, "customer_id")
    pd.testing.assert_frame_equal(parsed.frame, expected([41, 29], [1.5, 2.0], ["DE", "FR"], [True, False]))
    assert parsed.entities == ["c-1", "7"]
    assert list(parsed.frame.columns) == ["age", "income", "country", "active"]


def test_predict_rows_without_entity_and_columnar() -> None:
    rows = parse_predict({"rows": [{"age": 41, "income": 1.5, "country": "DE", "active": True}]}, CONTRACT,
                         "customer_id")
    assert rows.entities is None
    pd.testing.assert_frame_equal(rows.frame, expected([41], [1.5], ["DE"], [True]))
    cols = parse_predict({"columns": {**columns(), "customer_id": ["a", "b"]}}, CONTRACT, "customer_id")
    pd.testing.assert_frame_equal(cols.frame, expected([41, 29], [1.5, 2.0], ["DE", "FR"], [True, False]))
    assert cols.entities == ["a", "b"]


def test_predict_entities_only() -> None:
    parsed = parse_predict({"entities": ["c-1", 2]}, CONTRACT, "customer_id")
    assert parsed.frame is None and parsed.entities == ["c-1", "2"]
    assert "no entity key" in refused(parse_predict, {"entities": ["c-1"]}, CONTRACT, None).message
    assert "row 1" in refused(parse_predict, {"entities": ["c-1", True]}, CONTRACT, "id").message
    assert refused(parse_predict, {"entities": []}, CONTRACT, "id").message == "no rows"
    refused(parse_predict, {"entities": ["x"] * 1001}, CONTRACT, "id", status=413)


def test_entity_column_that_is_also_a_feature_stays_in_the_frame() -> None:
    contract = InputContract((Column("store", "BYTES"), Column("x", "FP64")))
    parsed = parse_predict({"rows": [{"store": "s1", "x": 1.0}]}, contract, "store")
    assert parsed.entities == ["s1"] and list(parsed.frame.columns) == ["store", "x"]


@pytest.mark.parametrize("body, found", [
    ({"rows": [], "columns": {}}, "'rows', 'columns'"),
    ({}, "got {}"),
    ({"row": []}, "'row'"),
    ({"rows": [], "key": "x"}, "'rows', 'key'"),
    ([1, 2], "got [1, 2]"),
])
def test_predict_needs_exactly_one_format(body: object, found: str) -> None:
    err = refused(parse_predict, body, CONTRACT, "id")
    assert "exactly one of 'rows', 'columns', 'entities'" in err.message and found in err.message


def test_predict_row_errors_name_the_row() -> None:
    full = {"age": 1, "income": 1.0, "country": "DE", "active": True}
    err = refused(parse_predict, {"rows": [{**full, "id": "a"}, full]}, CONTRACT, "id")
    assert err.message == "rows[1] lacks the entity column 'id'" and err.field == "id"
    partial = {k: v for k, v in full.items() if k != "income"}
    err = refused(parse_predict, {"rows": [full, partial]}, CONTRACT, "id")
    assert err.message == "rows[1] lacks the feature 'income'" and err.field == "income"
    err = refused(parse_predict, {"rows": [full, [1]]}, CONTRACT, None)
    assert "rows[1] must be an object" in err.message
    assert "'rows' must be a list" in refused(parse_predict, {"rows": full}, CONTRACT, None).message
    err = refused(parse_predict, {"rows": [{**full, "id": None}]}, CONTRACT, "id")
    assert "'id' row 0" in err.message and "None" in err.message


def test_predict_columnar_lengths() -> None:
    err = refused(parse_predict, {"columns": columns(income=[1.0])}, CONTRACT, None)
    assert err.message == "column 'income' has 1 values but 'age' has 2" and err.field == "income"
    err = refused(parse_predict, {"columns": {**columns(), "id": ["a"]}}, CONTRACT, "id")
    assert "'id' has 1 values" in err.message
    assert "must be an object" in refused(parse_predict, {"columns": [1]}, CONTRACT, None).message
    assert "must be a list" in refused(parse_predict, {"columns": columns(age=5)}, CONTRACT, None).message


# ------------------------------------------------------------------------------------ to_frame
def test_to_frame_missing_unknown_and_counts() -> None:
    cols = columns()
    del cols["income"]
    err = refused(to_frame, cols, CONTRACT)
    assert err.message == "missing feature 'income'" and err.field == "income"
    err = refused(to_frame, columns(zip=[1, 2]), CONTRACT)
    assert "unknown column 'zip'" in err.message and err.field == "zip"
    lenient = InputContract(COLUMNS, strict=False)
    pd.testing.assert_frame_equal(to_frame(columns(zip=[1, 2]), lenient), to_frame(columns(), CONTRACT))
    assert refused(to_frame, columns(age=[], income=[], country=[], active=[]), CONTRACT).message == "no rows"
    small = InputContract(COLUMNS, max_rows=1)
    err = refused(to_frame, columns(), small, status=413)
    assert "2" in err.message and "limit is 1" in err.message


def test_to_frame_orders_columns_and_coerces_numbers() -> None:
    frame = to_frame({"active": [True], "country": ["DE"], "income": [3], "age": [4.0]}, CONTRACT)
    pd.testing.assert_frame_equal(frame, expected([4], [3.0], ["DE"], [True]))  # int for FP64, 4.0 for INT64


@pytest.mark.parametrize("column, value, why", [
    ("income", True, "expected a number (FP64), got True"),
    ("income", "1.5", "expected a number (FP64), got '1.5'"),
    ("income", math.inf, "infinity is not allowed"),
    ("age", 1.5, "expected an integral number"),
    ("age", False, "expected an integer (INT64), got False"),
    ("age", 2**64, "in the INT64 range"),
    ("income", 10**400, "out of range"),
    ("country", 5, "expected a string (BYTES), got 5"),
    ("active", 1, "expected a boolean (BOOL), got 1"),
    ("active", "true", "expected a boolean (BOOL), got 'true'"),
    ("age", None, "null is not allowed"),
    ("age", math.nan, "null is not allowed"),
])
def test_to_frame_refuses_wrong_values_naming_column_and_row(column: str, value: object, why: str) -> None:
    good = columns()[column][0]
    err = refused(to_frame, columns(**{column: [good, value]}), CONTRACT)
    assert err.message.startswith(f"column {column!r} row 1: ") and why in err.message, err.message
    assert err.field == column


def test_long_values_are_truncated_in_messages() -> None:
    err = refused(to_frame, columns(income=[1.0, "x" * 500]), CONTRACT)
    shown = err.message.split("got ", 1)[1]
    assert len(shown) == 60 and shown.endswith("...")


def test_nulls_where_allowed() -> None:
    contract = InputContract((Column("n", "INT64"), Column("x", "FP64"), Column("s", "BYTES"),
                              Column("b", "BOOL")))
    frame = to_frame({"n": [1, None], "x": [None, math.nan], "s": [None, math.nan], "b": [True, None]},
                     contract)
    obj = {"dtype": object}
    want = pd.DataFrame({"n": [1.0, np.nan], "x": [np.nan, np.nan], "s": pd.Series([None, None], **obj),
                         "b": pd.Series([True, None], **obj)})
    pd.testing.assert_frame_equal(frame, want)
    assert frame["s"][0] is None
    assert to_frame({"n": [1], "x": [1.0], "s": ["a"], "b": [False]}, contract)["n"].dtype == np.int64
    not_null = InputContract((Column("s", "BYTES", nullable=False),))
    err = refused(to_frame, {"s": ["a", "b", None]}, not_null)
    assert err.message == "column 's' row 2: null is not allowed (the column is not nullable)"
    assert "row 0" in refused(to_frame, {"s": [math.nan]}, not_null).message


def test_contract_and_error_basics() -> None:
    assert CONTRACT.names == ("age", "income", "country", "active")
    with pytest.raises(ValueError):
        Column("x", "FLOAT")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        InputContract((Column("a", "FP64"), Column("a", "BOOL")))
    err = RequestError("nope")
    assert (err.status, err.field, str(err)) == (400, None, "nope")


# ------------------------------------------------------------------------------------------- V2
def v2(**overrides: dict) -> dict:
    inputs = {"age": {"name": "age", "shape": [2], "datatype": "INT64", "data": [41, 29]},
              "income": {"name": "income", "shape": [2, 1], "datatype": "FP32", "data": [[1.5], [2.0]]},
              "country": {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["DE", "FR"]},
              "active": {"name": "active", "shape": [2], "datatype": "BOOL", "data": [True, False]}}
    for name, change in overrides.items():
        inputs[name] = {**inputs.get(name, {"name": name}), **change}
    return {"id": "r-1", "parameters": {"content_type": "pd"}, "inputs": list(inputs.values()),
            "outputs": [{"name": "predict"}]}


def test_v2_happy_path_flattens_nested_data() -> None:
    frame, request_id = parse_v2(v2(age={"datatype": "INT32", "shape": [2, 1], "data": [[41.0], [29]]}),
                                 CONTRACT)
    assert request_id == "r-1"
    pd.testing.assert_frame_equal(frame, expected([41, 29], [1.5, 2.0], ["DE", "FR"], [True, False]))
    body = v2()
    del body["id"]
    assert parse_v2(body, CONTRACT)[1] is None


@pytest.mark.parametrize("change, status, words", [
    ({"income": {"datatype": "INT64"}}, 400, ["input 'income'", "'INT64'", "model's FP64"]),
    ({"country": {"datatype": "FP64", "data": [1.0, 2.0]}}, 400, ["input 'country'", "BYTES"]),
    ({"age": {"datatype": "FP64"}}, 400, ["input 'age'", "INT64"]),
    ({"age": {"data": [41, 29, 3]}}, 400, ["input 'age'", "shape [2] holds 2", "has 3"]),
    ({"age": {"shape": [2, 2], "data": [[1, 2], [3, 4]]}}, 400, ["input 'age'", "not [n] or [n, 1]"]),
    ({"income": {"shape": [3], "data": [1, 2, 3]}}, 400, ["input 'income' has 3 rows but 'age' has 2"]),
    ({"age": {"shape": [2], "data": [[1], 2]}}, 400, ["input 'age'", "mixes nested"]),
    ({"age": {"data": [41, "x"]}}, 400, ["column 'age' row 1", "'x'"]),
    ({"zip": {"shape": [2], "datatype": "FP64", "data": [1, 2]}}, 400, ["unknown input 'zip'"]),
    ({"age": {"extra": 1}}, 400, ["input 'age' must have"]),
])
def test_v2_errors_name_the_input(change: dict, status: int, words: list[str]) -> None:
    err = refused(parse_v2, v2(**change), CONTRACT, status=status)
    assert all(w in err.message for w in words), err.message


def test_v2_request_level_errors() -> None:
    assert "unknown field(s) 'model'" in refused(parse_v2, {**v2(), "model": "m"}, CONTRACT).message
    body = v2()
    body["inputs"] = body["inputs"][1:]
    assert refused(parse_v2, body, CONTRACT).message == "missing feature 'age'"
    body["inputs"] = [*v2()["inputs"], v2()["inputs"][0]]
    assert "appears twice" in refused(parse_v2, body, CONTRACT).message
    assert "'inputs'" in refused(parse_v2, {"inputs": []}, CONTRACT).message
    many = [{"name": "age", "shape": [1001], "datatype": "INT64", "data": [1] * 1001}]
    refused(parse_v2, {"inputs": many}, CONTRACT, status=413)
    lenient = InputContract(COLUMNS, strict=False)
    frame, _ = parse_v2(v2(zip={"shape": [2], "datatype": "FP64", "data": [1, 2]}), lenient)
    assert list(frame.columns) == list(CONTRACT.names)


def test_v2_response_helpers() -> None:
    response = v2_infer_response("churn", "3", "r-1", {
        "predict": np.array([0, 1]), "score": np.array([0.25, 0.5], dtype=np.float32),
        "label": np.array(["no", "yes"], dtype=object), "flag": np.array([True, False]),
        "proba": np.array([[0.9, 0.1], [0.2, 0.8]])})
    assert response["model_name"] == "churn" and response["model_version"] == "3" and response["id"] == "r-1"
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["predict"] == {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]}
    assert by_name["score"]["datatype"] == "FP64" and by_name["score"]["data"] == [0.25, 0.5]
    assert by_name["label"]["datatype"] == "BYTES" and by_name["label"]["data"] == ["no", "yes"]
    assert by_name["flag"]["datatype"] == "BOOL" and by_name["proba"]["shape"] == [2, 2]
    assert by_name["proba"]["data"] == [0.9, 0.1, 0.2, 0.8]
    json.dumps(response)
    V2InferResponse.model_validate(response)
    meta = v2_model_metadata("churn", ["3", "4"], CONTRACT, [("predict", "INT64")])
    assert meta["platform"] == "sklearn" and meta["versions"] == ["3", "4"]
    assert meta["inputs"][1] == {"name": "income", "datatype": "FP64", "shape": [-1]}
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    V2ModelMetadata.model_validate(meta)


# --------------------------------------------------------------------------------------- MLflow
def test_mlflow_formats() -> None:
    want = expected([41, 29], [1.5, 2.0], ["DE", "FR"], [True, False])
    records = [{"age": 41, "income": 1.5, "country": "DE", "active": True},
               {"age": 29, "income": 2.0, "country": "FR", "active": False}]
    split = {"columns": ["active", "age", "income", "country"], "data": [[True, 41, 1.5, "DE"],
                                                                         [False, 29, 2, "FR"]]}
    pd.testing.assert_frame_equal(parse_mlflow({"dataframe_split": split}, CONTRACT), want)
    pd.testing.assert_frame_equal(parse_mlflow({"dataframe_split": {**split, "index": [10, 11]}}, CONTRACT),
                                  expected([41, 29], [1.5, 2.0], ["DE", "FR"], [True, False], index=[10, 11]))
    pd.testing.assert_frame_equal(parse_mlflow({"dataframe_records": records, "params": {}}, CONTRACT), want)
    pd.testing.assert_frame_equal(parse_mlflow({"instances": records}, CONTRACT), want)
    pd.testing.assert_frame_equal(parse_mlflow({"inputs": records}, CONTRACT), want)
    pd.testing.assert_frame_equal(parse_mlflow({"inputs": columns()}, CONTRACT), want)


def test_mlflow_errors() -> None:
    records = [{"age": 41, "income": 1.5, "country": "DE", "active": True}]
    err = refused(parse_mlflow, {"dataframe_records": records, "instances": records}, CONTRACT)
    assert err.message.startswith("The input must be a JSON dictionary with exactly one of the input fields")
    assert "Received dictionary with input fields: ['dataframe_records', 'instances']" in err.message
    assert "Received a list." in refused(parse_mlflow, records, CONTRACT).message
    assert "input fields: ['data']" in refused(parse_mlflow, {"data": records}, CONTRACT).message
    err = refused(parse_mlflow, {"instances": records, "params": {"k": 1}}, CONTRACT)
    assert err.message == "params are not supported" and err.field == "params"
    split = {"columns": ["age", "income", "country", "active"], "data": [[1, 1.0, "DE", True], [1, 1.0]]}
    def split_error(payload: dict) -> str:
        return refused(parse_mlflow, {"dataframe_split": payload}, CONTRACT).message

    assert "data[1] must be a list of 4 values" in split_error(split)
    split["data"] = [[1, 1.0, "DE", True]]
    assert "index must be a list of 1 labels" in split_error({**split, "index": [1, 2]})
    assert "'dataframe_split' must be an object" in split_error({**split, "x": 1})
    err = refused(parse_mlflow, {"dataframe_records": [{**records[0], "zip": 1}]}, CONTRACT)
    assert "unknown column 'zip'" in err.message
    refused(parse_mlflow, {"instances": records * 1001}, CONTRACT, status=413)


def test_datatype_of_mlflow() -> None:
    assert [datatype_of_mlflow(t) for t in ("double", "float", "long", "integer", "string", "binary",
                                            "boolean", "datetime")] == \
        ["FP64", "FP64", "INT64", "INT64", "BYTES", "BYTES", "BOOL", "BYTES"]
    with pytest.raises(ValueError, match="tensor"):
        datatype_of_mlflow("tensor")


# ---------------------------------------------------------------------------- OpenAPI models
def test_pydantic_models_document_the_api() -> None:
    assert PredictRequest.model_validate({"rows": [{"age": 1}]}).rows == [{"age": 1}]
    for bad in ({"rows": [], "entities": ["a"]}, {"rows": [], "key": "k"}):
        with pytest.raises(ValidationError):
            PredictRequest.model_validate(bad)
    with pytest.raises(ValidationError):
        V2InferRequest.model_validate({**v2(), "extra": 1})
    V2InferRequest.model_validate(v2())
    assert MlflowRequest.model_validate({"dataframe_split": {"columns": ["a"], "data": [[1]]}})
    one = FeedbackRequest.model_validate({"request_id": "r", "label": True}).items()
    assert len(one) == 1 and one[0].label is True
    batch = FeedbackRequest.model_validate({"feedback": [{"request_id": "r", "label": 1.5}] * 2})
    assert [item.label for item in batch.items()] == [1.5, 1.5]
    for model in (PredictRequest, PredictResponse, V2InferRequest, V2InferResponse, V2ModelMetadata,
                  MlflowRequest, ErrorResponse, FeedbackRequest):
        json.dumps(model.model_json_schema())


def test_one_row_predict_parse_timing() -> None:
    body = {"rows": [{"customer_id": "c-1", "age": 41, "income": 1.5, "country": "DE", "active": True}]}
    parse_predict(body, CONTRACT, "customer_id")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        parse_predict(body, CONTRACT, "customer_id")
    print(f"\none-row predict parse: {(time.perf_counter() - start) / n * 1e6:.0f} µs")
