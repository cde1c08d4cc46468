"""Registering a model trained outside a pipeline run (mlplatform.sdk), recorded as the
register step records one, so the rest of the platform treats it like any other version:
`registry.load` finds its sha256, lineage leads to the training set it was scored on, a
rollout or `models promote` can take it from there.

The record is a run of its own (cause `sdk`, the user's name, one `register` execution with
the training set as input and the version as output): who registered what, from which data,
is in the metadata store like every pipeline run's work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlplatform.artifacts import GateDecision, ModelVersion
from mlplatform.evaluation.metrics import evaluate_model
from mlplatform.run_ids import new_run_id

if TYPE_CHECKING:
    from mlplatform.sdk import PipelineHandle, TrainingData

CAUSE = "sdk"


def register(pipe: PipelineHandle, model: Any, data: TrainingData, decision: GateDecision, *,
             note: str = "") -> tuple[str, GateDecision]:
    platform = pipe.platform
    user, reg, store = platform.user, platform.services.models, platform.services.metadata
    tags = {"mlplatform.source": "sdk", "mlplatform.user": user, "mlplatform.note": note[:4000]}
    mlflow_run = reg.start_run(pipe.name, f"sdk-{user}", tags)
    holdout = evaluate_model(pipe.spec.model.task, model, data.X_test, data.y_test)
    reg.log(mlflow_run, metrics={f"holdout_{k}": v for k, v in holdout.items()},
            params={k: v for k, v in model.get_params(deep=False).items() if not callable(v)}
            if hasattr(model, "get_params") else {})
    sha = reg.log_model(mlflow_run, model, data.X_test.head(5))
    reg.end_run(mlflow_run)
    version, _ = reg.register(pipe.name, mlflow_run, tags={
        **tags, "gate.decision": "passed" if decision.passed else "rejected",
        "gate.reason": decision.reason[:4000], "gate.champion_version": decision.champion_version or "",
        "data.training_set_sha256": data.artifact.content_hash or "", "mlplatform.sha256": sha})
    run_id = new_run_id(pipe.name)
    store.start_run(pipe.name, run_id, {"cause": CAUSE, "user": user, "steps": ["register"],
                                        "cause_detail": f"registered from the SDK by {user}: {note}"[:500]})
    execution = store.start_execution(run_id, "register", {"user": user})
    store.link(execution, data.artifact.id or 0, "INPUT")
    mv = store.put(ModelVersion(uri=f"models:/{pipe.name}/{version}", content_hash=sha, name=pipe.name,
                                version=version, passed=decision.passed, mlflow_run_id=mlflow_run,
                                training_set_id=data.artifact.id))
    store.link(execution, mv.id or 0, "OUTPUT")
    if decision.passed:
        reg.set_challenger(pipe.name, version)
    line = (f"{pipe.name} v{version} registered by {user}: "
            + ("challenger" if decision.passed else "rejected by the gate") + f": {decision.reason}")
    store.finish_execution(execution, "COMPLETE", summary={"message": line, "version": version,
                                                          "passed": decision.passed, "user": user})
    store.finish_run(run_id, "SUCCEEDED", line)
    return version, decision
