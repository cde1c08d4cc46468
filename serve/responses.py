"""JSON responses of the ingress, built without FastAPI's encoder (numpy scalars and arrays,
datetimes and NaN handled here, once), and the `{"error": ...}` shape every 4xx/5xx uses."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
from fastapi.responses import Response


def jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=json.dumps(payload, default=jsonable), status_code=status,
                    media_type="application/json", headers=headers)


def error(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


def scalar(value: Any) -> Any:
    """A model output as JSON: numpy scalars unwrapped, NaN/inf as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
