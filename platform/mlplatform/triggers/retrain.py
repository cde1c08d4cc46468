"""A retraining run: training_set -> train -> ... on the data the pipeline has validated already.

A schedule, drift or quality trigger often fires when no new batch arrived; a full run would
stop at ingest ("nothing new"). The training_set step needs its run's validated batch (it
names the newest row, the end of the training window) and reads every validated batch of
the pipeline in that window, not only this run's. So a retraining run starts by adopting the
pipeline's newest validated batch: one COMPLETE execution `retrain_from` that lists it as its
output (lineage says which batch the run retrained on and which run validated it), then runs
the steps after featurize. Resuming the same run does not adopt twice.
"""

from __future__ import annotations

from typing import Any

from mlplatform.artifacts import ValidatedBatch
from mlplatform.errors import InputError
from mlplatform.metadata.schema import ContextRow
from mlplatform.pipeline import step_graph
from mlplatform.services import Services
from mlplatform.spec import PipelineSpec

ADOPT_STEP = "retrain_from"


def retrain_steps() -> list[str]:
    """The steps after featurize, in graph order (ingest, validate and featurize are skipped:
    their outputs for the validated data exist)."""
    names = [d.name for d in step_graph()]
    return names[names.index("featurize") + 1:]


def adopt_validated_batch(spec: PipelineSpec, services: Services, run_id: str,
                          properties: dict[str, Any]) -> ValidatedBatch:
    """Give run `run_id` the pipeline's newest validated batch; InputError when it has none."""
    store = services.metadata
    found = store.run_outputs(run_id, ValidatedBatch) if store.run(run_id) else []
    if found:
        return found[0]
    newest = store.outputs_of(ValidatedBatch, pipeline=spec.name, step="validate")
    if not newest:
        raise InputError(f"pipeline {spec.name!r} has no validated batch to retrain on: a retraining "
                         "run needs one full run first")
    _, from_run, batch = newest[0]
    store.start_run(spec.name, run_id, properties)
    with store.session() as s:  # adopting is not an attempt of the run: run_pipeline counts those
        row = s.query(ContextRow).filter_by(type="pipeline_run", name=run_id).one()
        row.properties = {**row.properties, "attempts": 0}
    exec_id = store.start_execution(run_id, ADOPT_STEP, {"validated_by": from_run})
    store.link(exec_id, batch.id or 0, "OUTPUT")
    msg = f"retraining on the validated data up to batch {batch.snapshot} (validated by run {from_run})"
    store.finish_execution(exec_id, "COMPLETE", summary={"message": msg, "stop_run": False,
                                                         "validated_by": from_run, "batch": batch.uri})
    return batch
