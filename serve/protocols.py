"""The model server's request formats -> a validated DataFrame: the platform's own predict route
(records, columnar or entity ids), the Open Inference Protocol (KServe V2 REST) and MLflow's
`/invocations` JSON, all ending in `to_frame`. Runs per request: one `set(map(type, values))` per
column, numpy for the rest; pydantic models (at the end) only document the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from math import prod
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

Datatype = Literal["FP64", "INT64", "BYTES", "BOOL"]
_DATATYPES = ("FP64", "INT64", "BYTES", "BOOL")
_NONE = type(None)


@dataclass(frozen=True)
class Column:
    """One feature column a model takes: its name, datatype and whether nulls are allowed."""

    name: str
    datatype: Datatype
    nullable: bool = True

    def __post_init__(self) -> None:
        if self.datatype not in _DATATYPES:
            raise ValueError(f"column {self.name!r}: datatype {self.datatype!r} is not one of {_DATATYPES}")


@dataclass(frozen=True)
class InputContract:
    """The input a served model accepts: its feature columns, in the order the model takes them."""

    columns: tuple[Column, ...]
    strict: bool = True  # unknown columns are an error (else dropped)
    max_rows: int = 1000
    _by_name: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        by_name = {c.name: c for c in self.columns}
        if not self.columns or len(by_name) != len(self.columns):
            raise ValueError("an input contract needs at least one column and unique column names")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)


class RequestError(Exception):
    """A request the server refuses: `status` is the HTTP status, `field` what was wrong, if known."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True, eq=False)
class Parsed:
    """The validated features (None for entity ids only) and each row's entity id (None if absent)."""

    frame: pd.DataFrame | None
    entities: list[str] | None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _quoted(names: Any, limit: int = 12) -> str:
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


# ---------------------------------------------------------------------------------- validation
_ACCEPTS = {"FP64": ({int, float, _NONE}, "a number"), "INT64": ({int, float, _NONE}, "an integer"),
            "BYTES": ({str, float, _NONE}, "a string"), "BOOL": ({bool, float, _NONE}, "a boolean")}


def _bad(col: Column, row: int, value: Any, why: str | None = None) -> RequestError:
    why = why or f"expected {_ACCEPTS[col.datatype][1]} ({col.datatype})"
    return RequestError(f"column {col.name!r} row {row}: {why}, got {_short(value)}", field=col.name)


def _null(col: Column, row: int) -> RequestError:
    return RequestError(f"column {col.name!r} row {row}: null is not allowed (the column is not nullable)",
                        field=col.name)


def _floats(col: Column, values: Any) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # a Python int beyond the float range
        row = next(i for i, v in enumerate(values) if type(v) is int and abs(v) > 1e308)
        raise _bad(col, row, values[row], "the number is out of range") from None


def _convert(col: Column, values: list | tuple) -> Any:
    types = set(map(type, values))
    allowed, _ = _ACCEPTS[col.datatype]
    if not types <= allowed:
        row = next(i for i, v in enumerate(values) if type(v) not in allowed)
        raise _bad(col, row, values[row])
    if col.datatype == "FP64":
        arr = _floats(col, values)
        if float in types or _NONE in types:
            inf = np.isinf(arr)
            if inf.any():
                row = int(inf.argmax())
                raise _bad(col, row, values[row], "infinity is not allowed")
            if not col.nullable:
                nulls = np.isnan(arr)
                if nulls.any():
                    raise _null(col, int(nulls.argmax()))
        return arr
    if col.datatype == "INT64":
        if types == {int}:
            try:
                return np.array(values, dtype=np.int64)
            except OverflowError:  # beyond INT64: the float path below names the row
                pass
        arr = _floats(col, values)
        nulls = np.isnan(arr)
        bad = ~nulls & ~((np.floor(arr) == arr) & (np.abs(arr) < 2.0**63))
        if bad.any():
            row = int(bad.argmax())
            raise _bad(col, row, values[row], "expected an integral number in the INT64 range")
        if nulls.any():
            if not col.nullable:
                raise _null(col, int(nulls.argmax()))
            return arr  # float64, NaN for the nulls
        return np.array(values, dtype=object).astype(np.int64) if int in types else arr.astype(np.int64)
    # BYTES and BOOL: a float can only be NaN (a null that json.loads read from `NaN`).
    if float in types:
        for i, v in enumerate(values):
            if type(v) is float and v == v:
                raise _bad(col, i, v)
        values = [None if type(v) is float else v for v in values]
        types = types - {float} | {_NONE}
    if _NONE in types and not col.nullable:
        raise _null(col, values.index(None))
    if col.datatype == "BOOL" and _NONE not in types:
        return np.array(values, dtype=bool)
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return pd.Series(arr, dtype=object, copy=False)  # kept object: pandas 3 would infer `str`


def _check_names(names: Any, contract: InputContract) -> None:
    missing = [n for n in contract.names if n not in names]
    if missing:
        raise RequestError(f"missing feature {missing[0]!r}", field=missing[0])
    if contract.strict and len(names) != len(contract.names):
        unknown = [n for n in names if n not in contract._by_name]
        raise RequestError(f"unknown column{'s' * (len(unknown) > 1)} {_quoted(unknown)} "
                           f"(the model takes {_quoted(contract.names)})", field=unknown[0])


def _check_count(n: int, contract: InputContract) -> None:
    if n == 0:
        raise RequestError("no rows")
    if n > contract.max_rows:
        raise RequestError(f"too many rows: {n} (the limit is {contract.max_rows})", status=413)


def to_frame(columns: dict[str, list], contract: InputContract) -> pd.DataFrame:
    """Validate a dict of column -> values against the contract; the frame has the contract's
    columns in its order. Raises RequestError (400, or 413 over `max_rows`)."""
    if type(columns) is not dict:
        raise RequestError(f"the features must be an object of column -> values, got {_short(columns)}")
    _check_names(columns, contract)
    n = first = None
    for name in contract.names:
        values = columns[name]
        if type(values) not in (list, tuple):
            raise RequestError(f"column {name!r} must be a list of values, got {_short(values)}", field=name)
        if n is None:
            n, first = len(values), name
        elif len(values) != n:
            raise RequestError(f"column {name!r} has {len(values)} values but {first!r} has {n}", field=name)
    _check_count(n, contract)
    return pd.DataFrame({c.name: _convert(c, columns[c.name]) for c in contract.columns}, copy=False)


# ------------------------------------------------------------------------------------- formats
def _records(rows: Any, contract: InputContract, where: str,
             entity: str | None = None) -> dict[str, list | tuple]:
    """Records (a list of objects) -> column -> values, with the entity column if rows carry it."""
    if type(rows) is not list:
        raise RequestError(f"{where!r} must be a list of objects, got {_short(rows)}", field=where)
    _check_count(len(rows), contract)
    if set(map(type, rows)) != {dict}:
        row = next(i for i, r in enumerate(rows) if type(r) is not dict)
        raise RequestError(f"{where}[{row}] must be an object, got {_short(rows[row])}", field=where)
    keys = set(rows[0]) if len(rows) == 1 else set().union(*rows)
    _check_names(keys - {entity} if entity not in contract._by_name else keys, contract)
    wanted = list(contract.names)
    if entity is not None and entity in keys and entity not in contract._by_name:
        wanted.append(entity)
    try:
        values = list(map(itemgetter(*wanted), rows))
    except KeyError as e:
        name = e.args[0]
        row = next(i for i, r in enumerate(rows) if name not in r)
        what = "entity column" if name == entity else "feature"
        raise RequestError(f"{where}[{row}] lacks the {what} {name!r}", field=name) from None
    if len(wanted) == 1:
        return {wanted[0]: values}
    return dict(zip(wanted, zip(*values, strict=True), strict=True))


def _entity_ids(values: Any, name: str) -> list[str]:
    if type(values) not in (list, tuple):
        raise RequestError(f"{name!r} must be a list of ids, got {_short(values)}", field=name)
    if not set(map(type, values)) <= {str, int}:
        row = next(i for i, v in enumerate(values) if type(v) not in (str, int))
        raise RequestError(f"{name!r} row {row}: an entity id is a string or an integer, got "
                           f"{_short(values[row])}", field=name)
    return list(map(str, values))


_PREDICT_FORMATS = ("rows", "columns", "entities")


def parse_predict(body: Any, contract: InputContract, entity_column: str | None) -> Parsed:
    """`POST /{pipeline}/predict`: exactly one of {"rows": [{...}]}, {"columns": {col: [...]}} or
    {"entities": [id, ...]}. Rows and columns may carry `entity_column`, the sticky key, which
    reaches the model only if the contract lists it."""
    if type(body) is not dict or len(body) != 1 or next(iter(body)) not in _PREDICT_FORMATS:
        found = f"found {_quoted(body)}" if type(body) is dict and body else f"got {_short(body)}"
        raise RequestError(f"the body must be an object with exactly one of {_quoted(_PREDICT_FORMATS)}; "
                           f"{found}")
    fmt, payload = next(iter(body.items()))
    if fmt == "entities":
        if entity_column is None:
            raise RequestError("this model has no entity key: send 'rows' or 'columns'", field="entities")
        if type(payload) is list:
            _check_count(len(payload), contract)
        return Parsed(None, _entity_ids(payload, "entities"))
    if fmt == "rows":
        columns = _records(payload, contract, "rows", entity_column)
    elif type(payload) is dict:
        columns = payload
    else:
        raise RequestError(f"'columns' must be an object, got {_short(payload)}", field="columns")
    entities = None
    if entity_column is not None and entity_column in columns:
        ids = columns[entity_column]
        if entity_column not in contract._by_name:
            columns = {k: v for k, v in columns.items() if k != entity_column}
        entities = _entity_ids(ids, entity_column)
    frame = to_frame(columns, contract)
    if entities is not None and len(entities) != len(frame):
        raise RequestError(f"column {entity_column!r} has {len(entities)} values but the features have "
                           f"{len(frame)}", field=entity_column)
    return Parsed(frame, entities)


_V2_ACCEPTS = {"FP64": ("FP64", "FP32", "FP16"), "BYTES": ("BYTES",), "BOOL": ("BOOL",),
               "INT64": ("INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8")}
_V2_KEYS = {"id", "parameters", "inputs", "outputs"}
_V2_TENSOR_KEYS = {"name", "shape", "datatype", "data", "parameters"}


def _flatten(data: list, name: str) -> list:
    while data and type(data[0]) is list:
        if set(map(type, data)) != {list}:
            raise RequestError(f"input {name!r}: 'data' mixes nested lists and values", field=name)
        data = list(chain.from_iterable(data))
    return data


def parse_v2(body: Any, contract: InputContract) -> tuple[pd.DataFrame, str | None]:
    """An Open Inference Protocol (KServe V2) REST infer request, one input per feature column
    (shape [n] or [n, 1]) -> (the frame, the request id if given). `parameters` and `outputs` are
    accepted and ignored."""
    if type(body) is not dict:
        raise RequestError(f"the body must be an inference request object, got {_short(body)}")
    if body.keys() - _V2_KEYS:
        raise RequestError(f"unknown field(s) {_quoted(sorted(body.keys() - _V2_KEYS))} in the inference "
                           f"request (allowed: {_quoted(sorted(_V2_KEYS))})")
    request_id = body.get("id")
    if request_id is not None and type(request_id) is not str:
        raise RequestError(f"'id' must be a string, got {_short(request_id)}", field="id")
    inputs = body.get("inputs")
    if type(inputs) is not list or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors", field="inputs")
    columns: dict[str, list] = {}
    rows = first = None
    for j, tensor in enumerate(inputs):
        name = tensor.get("name") if type(tensor) is dict else None
        if type(name) is not str:
            raise RequestError(f"inputs[{j}] must be a tensor object with a string 'name'", field="inputs")
        if tensor.keys() - _V2_TENSOR_KEYS or not tensor.keys() >= _V2_TENSOR_KEYS - {"parameters"}:
            raise RequestError(f"input {name!r} must have 'name', 'shape', 'datatype', 'data' and may have "
                               f"'parameters'; it has {_quoted(tensor)}", field=name)
        if name in columns:
            raise RequestError(f"input {name!r} appears twice", field=name)
        col = contract._by_name.get(name)
        if col is None:
            if contract.strict:
                raise RequestError(f"unknown input {name!r} (the model takes {_quoted(contract.names)})",
                                   field=name)
            continue
        datatype, shape, data = tensor["datatype"], tensor["shape"], tensor["data"]
        if datatype not in _V2_ACCEPTS[col.datatype]:
            accepted = ", ".join(_V2_ACCEPTS[col.datatype])
            raise RequestError(f"input {name!r}: datatype {_short(datatype)} does not match the model's "
                               f"{col.datatype} (accepted: {accepted})", field=name)
        if (type(shape) is not list or not 1 <= len(shape) <= 2 or set(map(type, shape)) != {int}
                or shape[0] < 0 or shape[1:] not in ([], [1])):
            raise RequestError(f"input {name!r}: shape {_short(shape)} is not [n] or [n, 1] (one input per "
                               "feature column)", field=name)
        if rows is None:
            rows, first = shape[0], name
            _check_count(rows, contract)
        elif shape[0] != rows:
            raise RequestError(f"input {name!r} has {shape[0]} rows but {first!r} has {rows}", field=name)
        if type(data) is not list:
            raise RequestError(f"input {name!r}: 'data' must be a list, got {_short(data)}", field=name)
        data = _flatten(data, name)
        if len(data) != prod(shape):
            raise RequestError(f"input {name!r}: shape {shape} holds {prod(shape)} elements but 'data' has "
                               f"{len(data)}", field=name)
        columns[name] = data
    return to_frame(columns, contract), request_id


_MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_MLFLOW_REQUIRED = ("The input must be a JSON dictionary with exactly one of the input fields "
                    "{'dataframe_split', 'dataframe_records', 'instances', 'inputs'}")


def _split(payload: Any, contract: InputContract) -> pd.DataFrame:
    if type(payload) is not dict or payload.keys() - {"columns", "data", "index"}:
        raise RequestError("'dataframe_split' must be an object with 'columns', 'data' and optionally "
                           "'index'", field="dataframe_split")
    names, data = payload.get("columns"), payload.get("data")
    if type(names) is not list or set(map(type, names)) - {str} or len(set(names)) != len(names):
        raise RequestError("dataframe_split.columns must be a list of distinct column names", field="columns")
    if type(data) is not list:
        raise RequestError("dataframe_split.data must be a list of rows", field="data")
    _check_count(len(data), contract)
    if set(map(type, data)) != {list} or set(map(len, data)) != {len(names)}:
        row = next(i for i, r in enumerate(data) if type(r) is not list or len(r) != len(names))
        raise RequestError(f"dataframe_split.data[{row}] must be a list of {len(names)} values (one per "
                           f"column), got {_short(data[row])}", field="data")
    frame = to_frame(dict(zip(names, zip(*data, strict=True), strict=True)), contract)
    index = payload.get("index")
    if index is not None:
        if type(index) is not list or len(index) != len(data) or set(map(type, index)) & {list, dict}:
            raise RequestError(f"dataframe_split.index must be a list of {len(data)} labels", field="index")
        frame.index = pd.Index(index)
    return frame


def parse_mlflow(body: Any, contract: InputContract) -> pd.DataFrame:
    """MLflow's scoring server JSON (`POST /invocations`): exactly one of dataframe_split,
    dataframe_records, instances (records) or inputs (column -> values, or records); other top-level
    fields are ignored, as MLflow does, but non-empty `params` are refused."""
    if type(body) is not dict:
        got = "a list" if type(body) is list else f"unexpected input type '{type(body).__name__}'"
        raise RequestError(f"{_MLFLOW_REQUIRED}. Received {got}.")
    found = [k for k in _MLFLOW_FORMATS if k in body]
    if len(found) != 1:
        raise RequestError(f"{_MLFLOW_REQUIRED}. Received dictionary with input fields: {list(body)}.")
    if body.get("params") not in (None, {}):
        raise RequestError("params are not supported", field="params")
    fmt, payload = found[0], body[found[0]]
    if fmt == "dataframe_split":
        return _split(payload, contract)
    if fmt == "inputs" and type(payload) is dict:
        return to_frame(payload, contract)
    return to_frame(_records(payload, contract, fmt), contract)


def datatype_of_mlflow(type_name: str) -> Datatype:
    """The datatype of an MLflow signature ColSpec type ("double", "long", "string", ...)."""
    try:
        return _MLFLOW_TYPES[type_name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unsupported MLflow column type {type_name!r}") from None


_MLFLOW_TYPES: dict[str, Datatype] = {"double": "FP64", "float": "FP64", "long": "INT64", "integer": "INT64",
                                       "string": "BYTES", "binary": "BYTES", "boolean": "BOOL",
                                       "datetime": "BYTES"}


# ------------------------------------------------------------------------------- V2 responses
_KINDS: dict[str, Datatype] = {"f": "FP64", "i": "INT64", "u": "INT64", "b": "BOOL", "O": "BYTES",
                               "U": "BYTES", "S": "BYTES"}


def v2_infer_response(model_name: str, model_version: str, request_id: str,
                      outputs: dict[str, np.ndarray]) -> dict:
    """The V2 infer response: one tensor per output, data flattened row-major."""
    tensors = []
    for name, values in outputs.items():
        arr = np.asarray(values)
        if arr.dtype.kind not in _KINDS:
            raise ValueError(f"output {name!r}: no V2 datatype for numpy dtype {arr.dtype}")
        datatype, data = _KINDS[arr.dtype.kind], arr.ravel().tolist()
        if datatype == "BYTES":
            data = [v.decode() if isinstance(v, bytes) else v for v in data]
        tensors.append({"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data})
    return {"model_name": model_name, "model_version": model_version, "id": request_id, "outputs": tensors}


def v2_model_metadata(name: str, versions: list[str], contract: InputContract,
                      outputs: list[tuple[str, Datatype]]) -> dict:
    """The V2 model metadata response (`GET /v2/models/{name}`)."""
    return {"name": name, "versions": list(versions), "platform": "sklearn",
            "inputs": [{"name": c.name, "datatype": c.datatype, "shape": [-1]} for c in contract.columns],
            "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in outputs]}


# ------------------------------------------------- pydantic models: the OpenAPI document, not validation
_Scalar = bool | int | float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    """`POST /{pipeline}/predict`: exactly one of `rows`, `columns` or `entities`. Rows and columns may
    carry the pipeline's entity column: the sticky routing key, a feature only if the model takes it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"rows": [{"customer_id": "c-17", "age": 41, "country": "DE"}]},
        {"columns": {"age": [41, 29], "country": ["DE", "FR"]}},
        {"entities": ["c-17", "c-18"], "at": "2026-01-05T23:59:14"}]})
    rows: list[dict[str, _Scalar]] | None = Field(None, description="Records: column -> value, per row.")
    columns: dict[str, list[_Scalar]] | None = Field(None, description="Column -> values, equal lengths.")
    entities: list[str | int] | None = Field(None, description="Entity ids: features from the online store.")
    at: str | None = Field(None, description="With `entities`: the time (ISO 8601) the online features must "
                           "be fresh at, within each view's TTL; default now.")

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if sum(v is not None for v in (self.rows, self.columns, self.entities)) != 1:
            raise ValueError("exactly one of 'rows', 'columns', 'entities'")
        return self


class PredictRow(BaseModel):
    """The prediction for one row; send `request_id` back with the feedback."""

    request_id: str
    version: str = Field(description="The model version that answered.")
    variant: str = Field(description="Who answered: champion, challenger, or pinned (the "
                         "x-model-version header chose the version).")
    prediction: _Scalar
    probabilities: dict[str, float] | None = Field(None, description="Class -> probability (classifiers).")
    score: float | None = Field(None, description="The positive class's probability (binary classifiers), "
                                "else the top class's.")


class PredictResponse(BaseModel):
    """The predictions, in the order of the request's rows."""

    predictions: list[PredictRow]


class V2Tensor(_Strict):
    """An Open Inference Protocol tensor: an input is one feature column, shape [n] or [n, 1]; `data` is
    flat or nested row-major, the product of `shape` values in all."""

    name: str
    shape: list[int]
    datatype: str = Field(description="BOOL, INT8..INT64, UINT8..UINT64, FP16..FP64 or BYTES.")
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2InferRequest(_Strict):
    """Open Inference Protocol (KServe V2) infer request; `id` is echoed, `outputs` ([{name}]) ignored."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[dict[str, Any]] | None = None


class V2InferResponse(BaseModel):
    """Open Inference Protocol infer response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    """A model input or output; shape [-1]: any number of rows."""

    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    """Open Inference Protocol model metadata."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class MlflowDataframeSplit(_Strict):
    """pandas' `split` orient: column names, rows of values and, optionally, the index."""

    columns: list[str]
    data: list[list[_Scalar]]
    index: list[Any] | None = None


class MlflowRequest(BaseModel):
    """MLflow scoring server JSON (`POST /invocations`): exactly one of the four inputs; `instances` are
    records, `inputs` column -> values or records; `params` must be absent or empty."""

    dataframe_split: MlflowDataframeSplit | None = None
    dataframe_records: list[dict[str, _Scalar]] | None = None
    instances: list[dict[str, _Scalar]] | None = None
    inputs: dict[str, list[_Scalar]] | list[dict[str, _Scalar]] | None = None
    params: dict[str, Any] | None = None


class MlflowResponse(BaseModel):
    """MLflow's response: one prediction per row."""

    predictions: list[Any]


class ErrorResponse(BaseModel):
    """A refused request (4xx) or a server error (5xx)."""

    error: str


class FeedbackItem(_Strict):
    """The true label of an earlier prediction, by its `request_id`."""

    request_id: str = Field(min_length=1)
    label: bool | int | float | str


class FeedbackBatch(_Strict):
    """Several labels at once."""

    feedback: list[FeedbackItem]


class FeedbackRequest(RootModel[FeedbackItem | FeedbackBatch]):
    """One feedback item, or {"feedback": [items]}."""

    def items(self) -> list[FeedbackItem]:
        return self.root.feedback if isinstance(self.root, FeedbackBatch) else [self.root]


class FeedbackResponse(BaseModel):
    """How many labels were accepted."""

    accepted: int
