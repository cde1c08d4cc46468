"""What each trigger looks at, and the fire it proposes: functions of (spec, services, state,
now) that start nothing and write nothing. The watcher applies a proposal (compare-and-set of
the state, the active-run claim, the submission), so the rules of *when* live here and the
rules of *how safely* in claims.py.

- new_data: files under source.path whose content hash is neither ingested (nor set aside)
  by the pipeline nor already claimed by an earlier fire: one run per new batch.
- schedule: a five-field UTC cron; the first watch starts counting from `now`; scheduled
  times that passed while nobody watched are one fire, never one each.
- drift (batch): the newest validate step's drift share reached the threshold and no train
  step ran after it; (live): the served traffic's drift report (mlplatform.monitoring).
- quality: the live metric (realised, or estimated for classifiers) crossed the threshold.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select

from mlplatform import storage
from mlplatform.artifacts import RejectedSourceFile, SourceFile, ValidationReport
from mlplatform.metadata.schema import ContextRow, ExecutionRow
from mlplatform.services import Services
from mlplatform.spec import PipelineSpec
from mlplatform.triggers.claims import TriggerState, naive

Cause = Literal["manual", "new_data", "schedule", "drift", "live_drift", "quality"]
TriggerName = Literal["new_data", "schedule", "drift", "live_drift", "quality"]


class Proposal(BaseModel):
    """A trigger's verdict for one tick: the state to write (compare-and-set against `seen`)
    and, when `fire`, the run to start."""

    trigger: TriggerName
    seen: TriggerState
    state: dict[str, Any] | None = Field(None, description="None: nothing to write (already claimed).")
    fire: bool = True
    cause: Cause = "manual"
    detail: str = ""
    retrain: bool = Field(False, description="Retrain on the validated data (no new batch to ingest).")
    waits: bool = Field(False, description="When a run is active or min_interval has not passed, "
                        "wait without consuming the evidence (a new batch waits for its own run).")
    details: dict[str, Any] = Field(default_factory=dict)


def iso(value: dt.datetime) -> str:
    return naive(value).isoformat()


def from_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


# -- new data ----------------------------------------------------------------------------


def source_hashes(spec: PipelineSpec) -> dict[str, str]:
    """Path -> content hash of every batch file under source.path (what ingest would list)."""
    from mlplatform.data.ingest import SUFFIXES

    fs, root = storage.resolve(spec.source.path)
    try:
        files = storage.list_files(fs, root, SUFFIXES[spec.source.format])
    except FileNotFoundError:
        return {}
    out = {}
    for f in files:
        try:
            out[f.path] = storage.sha256_file(fs, f.path)
        except OSError:  # unreadable now: ingest will say why; the next poll tries again
            continue
    return out


def check_new_data(spec: PipelineSpec, services: Services, seen: TriggerState,
                   now: dt.datetime) -> Proposal | None:
    store = services.metadata
    known = store.consumed_hashes(spec.name, "ingest", SourceFile.kind)
    known |= {a.content_hash for _, _, a in store.outputs_of(RejectedSourceFile, pipeline=spec.name,
                                                             step="ingest") if a.content_hash}
    claimed = set(seen.state.get("claimed", []))
    hashes = source_hashes(spec)
    new = {p: h for p, h in sorted(hashes.items()) if h not in known and h not in claimed}
    if not new:
        return None
    names = [p.rsplit("/", 1)[-1] for p in new]
    # Keep only claims ingest has not consumed yet: the state stays small.
    state = {"claimed": sorted((claimed - known) | set(new.values()))}
    return Proposal(trigger="new_data", seen=seen, state=state, cause="new_data", waits=True,
                    detail=f"{len(new)} new file(s) in {spec.source.path}: {', '.join(names[:5])}"
                           + (f" and {len(names) - 5} more" if len(names) > 5 else ""),
                    details={"files": list(new), "hashes": sorted(new.values())})


# -- schedule ----------------------------------------------------------------------------


def check_schedule(spec: PipelineSpec, seen: TriggerState, now: dt.datetime) -> Proposal | None:
    from croniter import croniter

    assert spec.triggers is not None and spec.triggers.schedule is not None
    cron = spec.triggers.schedule.cron
    now = naive(now)
    if "last" not in seen.state:  # the first watch counts from now: no catch-up of the past
        return Proposal(trigger="schedule", seen=seen, state={"cron": cron, "last": iso(now)}, fire=False)
    last = from_iso(seen.state["last"])
    it = croniter(cron, last)
    due: list[dt.datetime] = []
    while (nxt := it.get_next(dt.datetime)) <= now:
        due.append(nxt)
        if len(due) > 1000:  # a long outage of a minutely cron: counting further says nothing
            break
    if not due:
        return None
    missed = f" ({len(due) - 1} earlier scheduled time(s) passed unwatched)" if len(due) > 1 else ""
    return Proposal(trigger="schedule", seen=seen, state={"cron": cron, "last": iso(due[-1])},
                    cause="schedule", retrain=True,
                    detail=f"cron {cron!r}: scheduled at {iso(due[-1])} UTC{missed}",
                    details={"scheduled_at": iso(due[-1]), "missed": len(due) - 1})


# -- drift -------------------------------------------------------------------------------


def drift_threshold(spec: PipelineSpec) -> float:
    assert spec.triggers is not None and spec.triggers.drift is not None
    t = spec.triggers.drift.threshold
    return t if t is not None else spec.validation.drift.dataset_drift_share


def _steps(services: Services, pipeline: str, step: str) -> list[tuple[ExecutionRow, str]]:
    """The pipeline's executions of `step`, newest first, with their run ids."""
    pipe = ContextRow.__table__.alias("pipe")
    with services.metadata.session() as s:
        rows = s.execute(
            select(ExecutionRow, ContextRow.name)
            .join(ContextRow, ExecutionRow.context_id == ContextRow.id)
            .join(pipe, ContextRow.parent_id == pipe.c.id)
            .where(pipe.c.name == pipeline, pipe.c.type == "pipeline", ExecutionRow.step == step,
                   ExecutionRow.status.in_(("COMPLETE", "FAILED")))
            .order_by(ExecutionRow.id.desc()).limit(20)).all()
        return [(e, run) for e, run in rows]


def _drifted_share(services: Services, run_id: str, summary: dict[str, Any]) -> float | None:
    """The share of drifted features the validate step found, from its report; None: no drift check."""
    for rep in services.metadata.run_outputs(run_id, ValidationReport):
        if not rep.json_:
            continue
        try:
            fs, path = storage.resolve(rep.json_)
            with fs.open_input_stream(path) as f:
                drift = json.loads(f.read()).get("drift")
        except (OSError, ValueError):
            continue
        return None if drift is None else float(drift["drifted_share"])
    return 1.0 if summary.get("dataset_drift") else None


def check_batch_drift(spec: PipelineSpec, services: Services, seen: TriggerState,
                      now: dt.datetime) -> Proposal | None:
    validations = [(e, run) for e, run in _steps(services, spec.name, "validate")
                   if "drifted_features" in (e.summary or {})]
    if not validations:
        return None
    ex, run_id = validations[0]
    if ex.id <= int(seen.state.get("execution", 0)):
        return None
    state = {"execution": ex.id}
    share = _drifted_share(services, run_id, ex.summary)
    threshold = drift_threshold(spec)
    if share is None or share < threshold or not spec.validation.drift.trigger_retraining:
        return Proposal(trigger="drift", seen=seen, state=state, fire=False)
    ended = ex.ended_at or ex.started_at
    trained = [r for e, r in _steps(services, spec.name, "train")
               if e.status == "COMPLETE" and e.started_at >= ended]
    if trained:  # the run that validated it (or a later one) retrained already
        return Proposal(trigger="drift", seen=seen, state=state, fire=False)
    drifted = list(ex.summary.get("drifted_features", []))
    return Proposal(trigger="drift", seen=seen, state=state, cause="drift", retrain=True,
                    detail=f"batch of run {run_id} drifted: {share:.0%} of the features "
                           f"({', '.join(drifted)}) >= threshold {threshold:.0%}",
                    details={"run_id": run_id, "execution": ex.id, "drifted_share": share,
                             "drifted_features": drifted})


def monitor_due(spec: PipelineSpec, seen: TriggerState, now: dt.datetime,
                name: TriggerName) -> Proposal | None:
    """The slot of one live check (every monitoring.interval): claimed by compare-and-set before
    the check runs, so two watchers never compute it (and alert) twice."""
    from mlplatform.spec_types import duration_seconds

    last = seen.state.get("checked_at")
    interval = dt.timedelta(seconds=duration_seconds(spec.monitoring.interval))
    if last is not None and naive(now) - from_iso(last) < interval:
        return None
    return Proposal(trigger=name, seen=seen, state={**seen.state, "checked_at": iso(now)}, fire=False)


def check_live_drift(spec: PipelineSpec, services: Services, seen: TriggerState,
                     now: dt.datetime) -> Proposal | None:
    """Run the live-drift report over the last window (its alert is raised by it)."""
    from mlplatform.monitoring.live_drift import run_live_drift  # helper module, imported on use
    from mlplatform.spec_types import duration_seconds

    report = run_live_drift(services, spec, window_s=duration_seconds(spec.monitoring.window),
                            now=now, alert=True)
    threshold = drift_threshold(spec)
    if not report.enough_rows or report.drifted_share < threshold:
        return None
    return Proposal(trigger="live_drift", seen=seen, cause="live_drift", retrain=True,
                    detail=f"served traffic of {report.model_version} drifted: "
                           f"{report.drifted_share:.0%} of the features "
                           f"({', '.join(report.drifted_features)}) >= threshold {threshold:.0%} "
                           f"over {report.rows} predictions",
                    details={"model_version": report.model_version, "drifted_share": report.drifted_share,
                             "drifted_features": list(report.drifted_features),
                             "report": report.report_uri, "rows": report.rows})


def check_quality(spec: PipelineSpec, services: Services, seen: TriggerState,
                  now: dt.datetime) -> Proposal | None:
    """The live metric against the trigger's bound (realised, or the estimate when asked)."""
    from mlplatform.evaluation.metric_names import greater_is_better
    from mlplatform.monitoring.quality import run_quality
    from mlplatform.spec_types import duration_seconds

    assert spec.triggers is not None and spec.triggers.quality is not None
    q = spec.triggers.quality
    higher = greater_is_better(q.metric)
    bound = q.min_value if higher else q.max_value
    assert bound is not None
    report = run_quality(services, spec, window_s=duration_seconds(spec.monitoring.window), now=now,
                         alert=True, min_value=bound)
    value = quality_value(report, q.metric, estimated=q.estimated)
    if value is None:
        return None
    if (value >= bound) if higher else (value <= bound):
        return None
    kind = "realised" if getattr(report, "realised", None) is not None else "estimated"
    return Proposal(trigger="quality", seen=seen, cause="quality", retrain=True,
                    detail=f"live {q.metric} ({kind}) {value:.4f} {'below' if higher else 'above'} "
                           f"{bound} over {getattr(report, 'rows', '?')} prediction(s)",
                    details={"metric": q.metric, "value": value, "estimated": kind == "estimated",
                             "report": getattr(report, "report_uri", None)})


def quality_value(report: Any, metric: str, *, estimated: bool) -> float | None:
    """The live value the trigger judges: the realised metric (labels arrived); with
    `estimated`, the CBPE estimate while they have not. None: no verdict in this window."""
    if getattr(report, "metric", metric) != metric:
        return None
    value = getattr(report, "realised", None)
    if value is None and estimated:
        value = getattr(report, "estimated", None)
    if value is None or value != value:  # None or NaN
        return None
    return float(value)
