"""The baseline server of benchmarks/serving.py: the same registered model behind plain FastAPI +
uvicorn, with nothing of the platform's request path (no routing, contract checks, prediction
log or Ray hop), so the benchmark shows what that path costs.

    BASELINE_MODEL_NAME=demo BASELINE_MODEL_VERSION=1 BASELINE_SPEC=spec.yaml PLATFORM_HOME=... \\
        uvicorn --app-dir benchmarks serving_baseline:app --workers 2 --no-access-log

A module of its own because `uvicorn --workers N` imports the app by name in each worker
process. The model is loaded at import (in each worker) with the platform's ModelRegistry
(`load_with_inputs`, which `ModelRegistry.load` wraps: the same sha256-checked pickle, plus the
signature's column types). POST /<pipeline>/predict takes the platform's single formats:
{"rows": [{...}]} -> a DataFrame with the signature's dtypes -> predict_proba; or {"entities":
[id], "at": ISO} -> FeatureStore.get_online_features (the same SQLite online store) -> the
same. The handler is `async def`, like the platform's ingress, so it runs on the event loop
with no thread hop: the fastest plain way to serve this model.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import Response

from mlplatform.features.store import PRESENT, FeatureStore
from mlplatform.services import Services
from mlplatform.settings import load_settings
from mlplatform.spec_loader import load_spec

_settings = load_settings()
_services = Services(_settings)
_NAME = os.environ["BASELINE_MODEL_NAME"]
_model, _inputs, _ = _services.models.load_with_inputs(_NAME, os.environ["BASELINE_MODEL_VERSION"])
_COLUMNS = [c["name"] for c in _inputs]
# Every numeric column as float64: a null in a one-row frame would otherwise make it `object`.
_DTYPES = {c["name"]: object if c["type"] in ("string", "binary", "datetime") else np.float64
           for c in _inputs}
_spec = load_spec(os.environ["BASELINE_SPEC"])
_features = FeatureStore(_spec, _settings)
_SERVICE = _spec.model.feature_service or "all_features"
_CLASSES = [c.item() if isinstance(c, np.generic) else c for c in _model.classes_]

app = FastAPI()


def _answer(frame: pd.DataFrame) -> Response:
    proba = _model.predict_proba(frame)
    out = [{"prediction": _CLASSES[int(p.argmax())],
            "probabilities": {str(c): float(p[k]) for k, c in enumerate(_CLASSES)},
            "score": float(p[1])} for p in proba]
    return Response(json.dumps({"predictions": out}), media_type="application/json")


def _error(message: str, status: int) -> Response:
    return Response(json.dumps({"error": message}), status_code=status, media_type="application/json")


@app.post(f"/{_spec.name}/predict")
async def predict(request: Request) -> Response:
    body: dict[str, Any] = json.loads(await request.body())
    if "entities" in body:
        at = pd.Timestamp(body["at"]).to_pydatetime() if body.get("at") else None
        vectors = _features.get_online_features([str(e) for e in body["entities"]], _SERVICE, at=at)
        if any(s not in (PRESENT, "NULL_VALUE") for v in vectors for s in v.statuses.values()):
            return _error("an entity has no fresh online features", 404)
        rows = [vec.values for vec in vectors]
    else:
        rows = body["rows"]
    frame = pd.DataFrame.from_records(rows, columns=_COLUMNS).astype(_DTYPES)
    return _answer(frame)
