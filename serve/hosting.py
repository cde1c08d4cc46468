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
