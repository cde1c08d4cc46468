"""A model version hosted inside an ingress replica: loaded from the registry with its
sha256 checked before unpickling, with the input contract its requests are checked
against, and a predict that returns what the response and the prediction log need."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.models.registry import ModelRegistry
from mlplatform.spec import PipelineSpec, SchemaSpec
from serve.protocols import Column, InputContract, datatype_of_mlflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One batch's answer: labels (or values), and for classifiers the class probabilities."""

    outputs: np.ndarray
    probabilities: np.ndarray | None
    classes: list[Any] | None

    def score(self) -> np.ndarray | None:
        """The positive class's probability for a binary classifier, else the top probability."""
        if self.probabilities is None:
            return None
        if self.probabilities.shape[1] == 2:
            return self.probabilities[:, 1]
        return self.probabilities.max(axis=1)


@dataclass
class HostedVersion:
    name: str
    version: str
    sha256: str
    model: Any
    contract: InputContract
    task: str

    def predict(self, frame: pd.DataFrame) -> Prediction:
        if self.task == "classification" and hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(frame))
            classes = list(self.model.classes_)
            # What the estimator's own predict() returns (argmax over classes_), without
            # running the model twice: the response carries both.
            labels = np.asarray(self.model.classes_)[proba.argmax(axis=1)]
            return Prediction(labels, proba, classes)
        return Prediction(np.asarray(self.model.predict(frame)), None, None)

    def predict_plain(self, frame: pd.DataFrame) -> np.ndarray:
        """Exactly MLflow pyfunc's answer (the estimator's predict), for /invocations."""
        return np.asarray(self.model.predict(frame))


def contract_for(inputs: list[dict[str, Any]], schema: SchemaSpec | None, deploy_strict: bool,
                 max_rows: int) -> InputContract:
    """The model signature's columns and types; a column may be null unless the pipeline's
    schema forbids nulls in it (max_null_fraction 0). The signature's own `required` flag
    reflects only the sample it was inferred from, so it is not used for that."""
    no_nulls = {c.name for c in (schema.columns if schema else []) if c.max_null_fraction == 0.0}
    columns = tuple(Column(name=c["name"], datatype=datatype_of_mlflow(c["type"]),
                           nullable=c["name"] not in no_nulls)
                    for c in inputs)
    return InputContract(columns=columns, strict=deploy_strict, max_rows=max_rows)


def load_version(registry: ModelRegistry, spec: PipelineSpec, schema: SchemaSpec | None, name: str,
                 version: str, sha256: str) -> HostedVersion:
    """Load one version; refuses when the registry's files or the recorded sha256 differ from the
    sha256 the serving config names (the config was written for other files)."""
    model, inputs, recorded = registry.load_with_inputs(name, version)
    if recorded != sha256:
        raise ValueError(f"{name} v{version}: the serving config expects sha256 {sha256[:16]}, the "
                         f"registry recorded {recorded[:16]}")
    if not inputs:
        raise ValueError(f"{name} v{version}: the model has no input signature; cannot check requests")
    assert spec.deploy is not None
    contract = contract_for(inputs, schema, spec.deploy.strict_inputs, spec.deploy.max_rows)
    return HostedVersion(name=name, version=version, sha256=sha256, model=model, contract=contract,
                         task=spec.model.task)


class RowTransforms:
    """The pipeline's row-wise feature transformations, run in the replica on request rows that
    carry a view's raw columns but not the features its transformation derives: the same
    function (`features.views[].transformation`) that computed the training data, so a client
    need not re-implement it. Windowed aggregations need an entity's history and are not
    computed here; they come in the rows or from the online store (`entities`)."""

    def __init__(self, spec: PipelineSpec, schema: SchemaSpec | None):
        from mlplatform.features.definitions import resolve_views

        self.views = [v for v in resolve_views(spec).values() if v.transformation]
        src = spec.source
        self.raw = ({c.name for c in schema.columns} if schema else set()) | {
            c for c in (src.entity_column, src.timestamp_column) if c}

    def complete(self, body: dict[str, Any], contract: InputContract, entity: str | None) -> dict[str, Any]:
        """The body with the derived features added as columns; unchanged when nothing is missing."""
        from mlplatform.errors import InputError
        from mlplatform.features.compute import transform
        from serve.protocols import RequestError

        kind = "rows" if "rows" in body else "columns" if "columns" in body else None
        if kind is None or not self.views:
            return body
        given = body[kind]
        if kind == "rows" and isinstance(given, list) and given and isinstance(given[0], dict):
            present = set(given[0])
        elif kind == "columns" and isinstance(given, dict):
            present = set(given)
        else:
            return body  # malformed: the parser names the problem
        if all(n in present for n in contract.names):
            return body
        unknown = sorted(present - set(contract.names) - self.raw - {entity})
        if unknown and contract.strict:
            raise RequestError(f"unknown column(s) {unknown}: neither a feature of the model nor a raw "
                               "column of the pipeline's schema", field=unknown[0])
        df = pd.DataFrame(given)
        try:
            for view in self.views:
                df = transform(view, df)
        except InputError as exc:
            raise RequestError(f"the rows lack features the pipeline's transformations could not derive: "
                               f"{exc.message}") from None
        keep = [c for c in df.columns if c in set(contract.names) or c == entity]
        return {**{k: v for k, v in body.items() if k != kind},
                "columns": {c: df[c].astype(object).where(df[c].notna(), None).tolist() for c in keep}}
