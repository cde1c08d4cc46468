"""Infra validation before traffic, as TFX's InfraValidator does it: a new version, loaded
in the serving replicas at weight 0, must answer a sample of its own training rows over
real HTTP exactly as the model answers them offline, before it gets any weight.

This catches what the gate cannot: a model that does not unpickle in the serving
environment, a feature whose type the request path turns into something else (an int
column arriving as float, a category as a number), missing-value handling that differs
between a DataFrame and JSON.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlplatform.artifacts import ModelVersion, TrainingSet
from mlplatform.errors import PlatformError
from mlplatform.services import Services
from mlplatform.serving.client import ServeClient
from mlplatform.training.data import load_frame


class InfraCheck(BaseModel):
    version: str
    passed: bool
    rows: int
    mismatches: int = 0
    detail: str


def sample_rows(services: Services, name: str, version: str, n: int) -> pd.DataFrame:
    """Up to `n` rows of the training set the version was trained on (spread over it)."""
    mv = services.metadata.find(ModelVersion, f"models:/{name}/{version}")
    if mv is None or mv.training_set_id is None:
        raise PlatformError(f"{name} v{version}: no training set recorded; cannot infra-validate it")
    ts = services.metadata.get(TrainingSet, mv.training_set_id)
    if ts is None:
        raise PlatformError(f"{name} v{version}: training set {mv.training_set_id} is not recorded")
    df = load_frame(ts.uri, ts.content_hash)
    step = max(1, len(df) // n)
    return df.iloc[::step].head(n)[ts.features].reset_index(drop=True)


def json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or value is None:
        return None
    return value


def validate(services: Services, pipeline: str, name: str, version: str, n: int) -> InfraCheck:
    """Send the sample to the live replicas pinned to `version` and compare with offline."""
    try:
        sample = sample_rows(services, name, version, n)
        model = services.models.load(name, version)
        offline_labels = np.asarray(model.predict(sample))
        offline_proba = (np.asarray(model.predict_proba(sample)) if hasattr(model, "predict_proba")
                         else None)
    except Exception as exc:
        return InfraCheck(version=version, passed=False, rows=0,
                          detail=f"could not compute the offline answers: {type(exc).__name__}: {exc}")
    rows = [{c: json_value(v) for c, v in r.items()} for r in sample.to_dict("records")]
    client = ServeClient(services.settings, pipeline, timeout=60)
    resp = client.post("/predict", {"rows": rows}, version=version, purpose="infra-validation")
    if resp.status_code != 200:
        return InfraCheck(version=version, passed=False, rows=len(rows),
                          detail=f"the replica answered {resp.status_code}: {resp.text[:500]}")
    served = resp.json()["predictions"]
    mismatches = []
    for i, (row, label) in enumerate(zip(served, offline_labels, strict=True)):
        same = row["version"] == version and row["prediction"] == json_value(label)
        if same and offline_proba is not None:
            got = [row["probabilities"][k] for k in sorted(row["probabilities"], key=str)]
            order = sorted(enumerate(model.classes_), key=lambda t: str(t[1]))
            want = [offline_proba[i, j] for j, _ in order]
            same = np.allclose(got, want, rtol=0, atol=1e-12)
        if not same:
            mismatches.append(i)
    if mismatches:
        i = mismatches[0]
        return InfraCheck(version=version, passed=False, rows=len(rows), mismatches=len(mismatches),
                          detail=f"{len(mismatches)} of {len(rows)} training rows were answered differently "
                                 f"than offline; row {i}: served {served[i]['prediction']!r} "
                                 f"{served[i].get('probabilities')}, offline "
                                 f"{json_value(offline_labels[i])!r}")
    return InfraCheck(version=version, passed=True, rows=len(rows),
                      detail=f"{len(rows)} training rows answered exactly as offline")
