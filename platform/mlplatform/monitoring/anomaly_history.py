"""What the anomaly detector compares: one point per run of a pipeline, read from the metadata store.

Each run becomes a `RunPoint`: its time (the run context's creation) and the value of every
series the run recorded. The series are named so that their kind is in the name:

- `duration:<step>`       the step's last COMPLETE execution; a step that ended the run early
                          (`stop_run`, e.g. ingest finding no new data) did a different, smaller job
                          and is left out, or it would drag the baseline down;
- `rows_in`, `rows_valid`, `quarantine_rate`   the validate step's summary (a rejected batch too:
                          its rows are what arrived);
- `metric:<model>:<metric>` the holdout value of the spec's own metric (`model.metric`, read from
                          the TrainedModel artifact's `model_spec`), not every metric the trainer
                          logged: a worse model moves all of them at once, and one cause must make
                          one alert;
- `live_quality:<metric>` the median of the realised live quality (MonitorResultRow kind
                          "quality") observed since the previous run, up to this one.

Everything is read in one session with a handful of queries, so that checking every run of a long
history stays cheap.
"""

from __future__ import annotations

import datetime as dt
import statistics
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from mlplatform.metadata.schema import ArtifactRow, ContextRow, EventRow, ExecutionRow, MonitorResultRow

if TYPE_CHECKING:
    from mlplatform.services import Services

# The champion's traffic when the quality rows name a variant; all rows when none does.
_MAIN_VARIANTS = (None, "", "champion", "all")


class RunPoint(BaseModel):
    run_id: str
    at: dt.datetime  # naive UTC, as the store keeps it
    status: str
    values: dict[str, float] = Field(default_factory=dict)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if out == out and abs(out) != float("inf") else None


def _primary_metric(entry: dict[str, Any], holdout: dict[str, Any]) -> str | None:
    """The spec's metric for a model: recorded in its model_spec; else the task's usual one."""
    metric = (entry.get("model_spec") or {}).get("metric") or entry.get("metric")
    if metric:
        return str(metric)
    for name in ("roc_auc", "rmse"):  # the spec defaults (ModelSpec.metric) by task
        if name in holdout:
            return name
    return sorted(holdout)[0] if holdout else None


def _metric_values(models: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in models:
        holdout = m.get("holdout") or {}
        metric = _primary_metric(m, holdout)
        value = _num(holdout.get(metric)) if metric else None
        if value is None:
            continue
        name = str(m.get("model_name") or m.get("name") or "model")
        if m.get("segment"):
            name += f"/{m['segment']}"
        out[f"metric:{name}:{metric}"] = value
    return out


def _step_values(execs: list[ExecutionRow]) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in execs:  # in id order: a later attempt of a step replaces an earlier one
        summary = e.summary or {}
        if e.status == "COMPLETE" and e.duration_s is not None and not summary.get("stop_run"):
            out[f"duration:{e.step}"] = float(e.duration_s)
        if e.step == "validate" and _num(summary.get("rows_in")) is not None:
            rows_in = float(summary["rows_in"])
            out["rows_in"] = rows_in
            valid = _num(summary.get("rows_valid"))
            if valid is not None:
                out["rows_valid"] = valid
            quarantined = _num(summary.get("rows_quarantined"))
            if quarantined is not None and rows_in > 0:
                out["quarantine_rate"] = quarantined / rows_in
    return out


def load_history(services: Services, pipeline: str, *, until: dt.datetime | None = None,
                 limit: int | None = None) -> list[RunPoint]:
    """The runs of `pipeline` created up to `until` (naive UTC), oldest first, with their series:
    the newest `limit` of them (the check at the end of every run reads a bounded history, however
    many runs the pipeline has had)."""
    with services.metadata.session() as s:
        pipe = s.scalar(select(ContextRow).where(ContextRow.type == "pipeline", ContextRow.name == pipeline))
        if pipe is None:
            return []
        query = select(ContextRow).where(ContextRow.parent_id == pipe.id, ContextRow.type == "pipeline_run")
        if until is not None:
            query = query.where(ContextRow.created_at <= until)
        if limit is not None:
            newest = s.scalars(query.order_by(ContextRow.created_at.desc(), ContextRow.id.desc())
                               .limit(limit)).all()
            runs = list(reversed(newest))
        else:
            runs = list(s.scalars(query.order_by(ContextRow.created_at, ContextRow.id)).all())
        ids = [r.id for r in runs]
        if not ids:
            return []
        execs: dict[int, list[ExecutionRow]] = {}
        for e in s.scalars(select(ExecutionRow).where(ExecutionRow.context_id.in_(ids))
                           .order_by(ExecutionRow.id)):
            execs.setdefault(e.context_id, []).append(e)
        models: dict[int, list[dict[str, Any]]] = {}
        for ctx_id, props in s.execute(
                select(ExecutionRow.context_id, ArtifactRow.properties)
                .join(EventRow, EventRow.execution_id == ExecutionRow.id)
                .join(ArtifactRow, EventRow.artifact_id == ArtifactRow.id)
                .where(ExecutionRow.context_id.in_(ids), ExecutionRow.status == "COMPLETE",
                       EventRow.type == "OUTPUT", ArtifactRow.kind == "model")
                .order_by(EventRow.id)):
            models.setdefault(ctx_id, []).append(dict(props or {}))
        quality = s.execute(
            select(MonitorResultRow.created_at, MonitorResultRow.name, MonitorResultRow.value,
                   MonitorResultRow.variant)
            .where(MonitorResultRow.pipeline == pipeline, MonitorResultRow.kind == "quality",
                   MonitorResultRow.created_at >= runs[0].created_at - dt.timedelta(days=7),
                   MonitorResultRow.created_at <= runs[-1].created_at)
            .order_by(MonitorResultRow.created_at)).all()
        points = []
        for r in runs:
            values = _step_values(execs.get(r.id, []))
            trained = models.get(r.id)
            if not trained:  # no artifact: the train step's summary has the holdout values too
                train = [e for e in execs.get(r.id, []) if e.step == "train" and e.status == "COMPLETE"]
                trained = list((train[-1].summary or {}).get("models") or []) if train else []
            values.update(_metric_values(trained))
            points.append(RunPoint(run_id=r.name, at=r.created_at,
                                   status=str((r.properties or {}).get("status", "?")), values=values))
    _add_live_quality(points, [(at, name, value, variant) for at, name, value, variant in quality])
    return points


def _add_live_quality(points: list[RunPoint],
                      rows: list[tuple[dt.datetime, str, float | None, str | None]]) -> None:
    """Give each run the median live quality observed since the previous run (up to its start):
    the quality the served model showed while this run's data was arriving."""
    if not rows:
        return
    main = [r for r in rows if r[3] in _MAIN_VARIANTS] or rows
    prev: dt.datetime | None = None
    for p in points:
        window: dict[str, list[float]] = {}
        for at, name, value, _ in main:
            v = _num(value)
            if (prev is None or at > prev) and at <= p.at and v is not None:
                window.setdefault(name, []).append(v)
        for name, vals in window.items():
            p.values[f"live_quality:{name}"] = statistics.median(vals)
        prev = p.at
