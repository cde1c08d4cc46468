"""What the ingress reads from a `/predict` or `/feedback` body before choosing a version:
the sticky keys, the as-of time for online features, a body's rows for one version, and
the feedback items. The rows themselves are checked per version (serve.protocols)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from serve.protocols import RequestError

_FORMATS = ("rows", "columns", "entities")


def _format(body: Any) -> str:
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object with one of {list(_FORMATS)}, got "
                           f"{type(body).__name__}")
    found = [k for k in _FORMATS if k in body]
    if len(found) != 1:
        raise RequestError(f"the body must have exactly one of {list(_FORMATS)}, found "
                           f"{found or sorted(body)[:5]}")
    return found[0]


def entity_keys(body: Any, entity_column: str | None) -> list[str | None]:
    """One key per row (the entity id, the sticky-routing key), None where a row has none."""
    kind = _format(body)
    value = body[kind]
    if kind == "entities":
        if not isinstance(value, list) or not value:
            raise RequestError("entities must be a non-empty list of entity ids", field="entities")
        bad = [e for e in value if not isinstance(e, str | int) or isinstance(e, bool)]
        if bad:
            raise RequestError(f"entities: {bad[0]!r} is not an entity id (a string or an integer)",
                               field="entities")
        return [str(e) for e in value]
    if kind == "rows":
        if not isinstance(value, list) or not value:
            raise RequestError("rows must be a non-empty list of objects", field="rows")
        if not all(isinstance(r, dict) for r in value):
            bad = next(i for i, r in enumerate(value) if not isinstance(r, dict))
            raise RequestError(f"rows[{bad}] is {type(value[bad]).__name__}, not an object", field="rows")
        return [None if entity_column is None or r.get(entity_column) is None else str(r[entity_column])
                for r in value]
    if not isinstance(value, dict) or not value:
        raise RequestError("columns must be a non-empty object of column -> list of values",
                           field="columns")
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise RequestError("columns: every column must be a list, all of the same length", field="columns")
    n = lengths.pop()
    keys = value.get(entity_column) if entity_column else None
    return [None if keys is None or keys[i] is None else str(keys[i]) for i in range(n)]


def as_of(body: dict[str, Any]) -> dt.datetime | None:
    """`at`: the time online features must be fresh at (default: now), naive UTC."""
    raw = body.get("at")
    if raw is None:
        return None
    try:
        ts = pd.Timestamp(raw)
    except (ValueError, TypeError):
        raise RequestError(f"at: {raw!r} is not an ISO timestamp", field="at") from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def subset(body: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The part of a body that one version answers (rows routed to different versions)."""
    kind = _format(body)
    out = {k: v for k, v in body.items() if k not in _FORMATS}
    if kind == "columns":
        out["columns"] = {c: [vals[i] for i in rows] for c, vals in body["columns"].items()}
    else:
        out[kind] = [body[kind][i] for i in rows]
    return out


def parse_feedback(body: Any, max_items: int) -> list[dict[str, Any]]:
    """`{request_id, label}` or `{"feedback": [{request_id, label}, ...]}`."""
    if isinstance(body, dict) and "feedback" in body:
        items = body["feedback"]
        if set(body) - {"feedback"}:
            raise RequestError(f"unexpected field(s) {sorted(set(body) - {'feedback'})} beside 'feedback'")
        if not isinstance(items, list) or not items:
            raise RequestError("feedback must be a non-empty list of {request_id, label}", field="feedback")
    elif isinstance(body, dict):
        items = [body]
    else:
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    if len(items) > max_items:
        raise RequestError(f"{len(items)} feedback items is over the limit of {max_items}", 413)
    out = []
    for i, item in enumerate(items):
        where = f"feedback[{i}]" if len(items) > 1 or "feedback" in body else "body"
        if not isinstance(item, dict):
            raise RequestError(f"{where} is {type(item).__name__}, not an object")
        extra = set(item) - {"request_id", "label"}
        if extra:
            raise RequestError(f"{where}: unexpected field(s) {sorted(extra)}")
        rid, label = item.get("request_id"), item.get("label")
        if not isinstance(rid, str) or not rid:
            raise RequestError(f"{where}.request_id: {rid!r} is not a request id", field="request_id")
        if label is None or not isinstance(label, str | int | float | bool):
            raise RequestError(f"{where}.label: {label!r} is not a label (a number, string or boolean)",
                               field="label")
        out.append({"request_id": rid, "label": label})
    return out
