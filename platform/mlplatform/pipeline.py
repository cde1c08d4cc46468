"""The step graph: declared steps, executions, resume.

A step is a function declared with what it consumes and produces (artifact contracts
from `mlplatform.artifacts`); the order of a run comes from those declarations, so a
new step (deploy, rollout, monitor) is a new module, not an edit here. Step modules are
found by name: every `mlplatform.<package>.steps` and `mlplatform.<package>.<name>_step`
module is imported once. Each step run is one execution in the metadata store, with the
artifacts it read (INPUT) and wrote (OUTPUT). The first failing step stops the run;
running the same run id again resumes after the last completed step, so a fixed batch or
schema does not redo finished work.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

import mlplatform
from mlplatform.artifacts import ArtifactModel
from mlplatform.errors import InputError, PlatformError
from mlplatform.monitoring import metrics
from mlplatform.redact import redact_text
from mlplatform.run_ids import check_run_id, new_run_id
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_plan import SNAPSHOT_KEY, applies, snapshot

if TYPE_CHECKING:
    from mlplatform.metadata.store import MetadataStore
    from mlplatform.runtime.placement import Placement
    from mlplatform.services import Services

A = TypeVar("A", bound=ArtifactModel)


class StepResult(BaseModel):
    """What a step returns: typed artifacts it read and wrote, a summary, and how the run goes on."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inputs: list[ArtifactModel] = Field(default_factory=list)
    outputs: list[ArtifactModel] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    stop_run: bool = Field(False, description="End the run successfully here (e.g. no new data).")
    fail: str | None = Field(
        None, description="Fail the step with this message, but keep what it wrote (a quarantine, "
                          "a report) recorded as its outputs.")


class StepContext:
    """What a step gets: the spec, the services (stores, registry, Ray), the run, a logger."""

    def __init__(self, spec: PipelineSpec, services: Services, run_id: str, step: str,
                 log: Callable[[str], None], execution_id: int = 0):
        self.execution_id = execution_id
        self.spec = spec
        self.services = services
        self.settings: Settings = services.settings
        self.metadata: MetadataStore = services.metadata
        self.run_id = run_id
        self.step = step
        self._log = log
        # Where the step ran its data work (mlplatform.runtime.placement), if it chose: recorded
        # in its summary as `execution`.
        self.placement: Placement | None = None

    def log(self, message: str) -> None:
        self._log(f"[{self.step}] {message}")

    def upstream(self, model: type[A]) -> list[A]:
        """This run's `model` artifacts, written by executions that completed (so a resume sees
        them, and a failed attempt's outputs never feed the next step)."""
        return self.metadata.run_outputs(self.run_id, model)


StepFn = Callable[[StepContext], StepResult]


@dataclass(frozen=True)
class StepDef:
    name: str
    fn: StepFn
    consumes: tuple[type[ArtifactModel], ...]
    produces: tuple[type[ArtifactModel], ...]
    after: tuple[str, ...]


_STEPS: dict[str, StepDef] = {}
_DISCOVERED = False


def step(name: str, *, consumes: tuple[type[ArtifactModel], ...] = (),
         produces: tuple[type[ArtifactModel], ...] = (),
         after: tuple[str, ...] = ()) -> Callable[[StepFn], StepFn]:
    """Declare a step: what it consumes and produces places it in the graph; `after` orders it
    behind steps it shares no artifact with (rare)."""

    def register(fn: StepFn) -> StepFn:
        existing = _STEPS.get(name)
        if existing is not None and existing.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"step {name!r} is declared twice "
                             f"({existing.fn.__module__} and {fn.__module__})")
        _STEPS[name] = StepDef(name, fn, tuple(consumes), tuple(produces), tuple(after))
        return fn

    return register


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    for info in pkgutil.walk_packages(mlplatform.__path__, "mlplatform."):
        leaf = info.name.rsplit(".", 1)[-1]
        if not info.ispkg and (leaf == "steps" or leaf.endswith("_step")):
            importlib.import_module(info.name)
    _DISCOVERED = True


def step_graph() -> list[StepDef]:
    """Every declared step, in an order where each comes after the producers of what it consumes."""
    _discover()
    producers: dict[type[ArtifactModel], set[str]] = {}
    for d in _STEPS.values():
        for kind in d.produces:
            producers.setdefault(kind, set()).add(d.name)
    deps = {d.name: ({p for k in d.consumes for p in producers.get(k, set())} | set(d.after)) - {d.name}
            for d in _STEPS.values()}
    unknown = {a for d in _STEPS.values() for a in d.after if a not in _STEPS}
    if unknown:
        raise PlatformError(f"steps declared after unknown step(s): {sorted(unknown)}")
    order: list[str] = []
    while len(order) < len(deps):
        ready = sorted(n for n, ds in deps.items() if n not in order and ds <= set(order))
        if not ready:
            raise PlatformError(f"the declared steps form a cycle: {sorted(set(deps) - set(order))}")
        order.append(ready[0])
    return [_STEPS[n] for n in order]


def registered_steps() -> list[str]:
    return [d.name for d in step_graph()]


class StepReport(BaseModel):
    step: str
    status: str  # COMPLETE | FAILED | RESUMED (already complete) | SKIPPED
    duration_s: float | None = None
    message: str = ""
    stop_run: bool = False


class RunReport(BaseModel):
    run_id: str
    pipeline: str
    status: str  # SUCCEEDED | FAILED
    message: str = ""
    steps: list[StepReport]


def spec_hash(spec: PipelineSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_pipeline(spec: PipelineSpec, services: Services | Settings, *, run_id: str | None = None,
                 only: list[str] | None = None, job_id: str | None = None,
                 log: Callable[[str], None] = print,
                 properties: dict[str, Any] | None = None) -> RunReport:
    """Run (or resume) one pipeline run; never raises for a step's failure."""
    if isinstance(services, Settings):
        from mlplatform.services import Services

        services = Services(services)
    graph = step_graph()
    available = [d.name for d in graph]
    if only:
        unknown = [s for s in only if s not in available]
        if unknown:
            raise InputError(f"--step {', '.join(unknown)}: not a step; choose from {available}")
    steps = [d for d in graph if not only or d.name in only]
    store = services.metadata
    run_id = run_id or new_run_id(spec.name)
    check_run_id(run_id)
    props: dict[str, Any] = {**(properties or {}), "spec_hash": spec_hash(spec),
                             "steps": [d.name for d in steps]}
    applied: dict[str, Any] = {}
    try:  # what `platformctl plan` compares a changed spec with, once this run has trained on it
        applied[SNAPSHOT_KEY] = snapshot(spec).model_dump(mode="json")
    except PlatformError as exc:  # a transformation that does not import: featurize says so
        log(f"spec snapshot not recorded: {exc.message}")
    if job_id:
        props["job_id"] = job_id
    try:
        store.start_run(spec.name, run_id, props)
    except ValueError as exc:
        raise InputError(f"--run-id {run_id}: {exc}") from None
    done = store.completed_steps(run_id)
    log(f"run {run_id} of pipeline {spec.name!r}: steps {' -> '.join(d.name for d in steps)}")
    reports: list[StepReport] = []
    stopped: str | None = None
    for d in steps:
        name = d.name
        if stopped is not None:
            reports.append(StepReport(step=name, status="SKIPPED", message=stopped))
            continue
        if name in done:
            prev = done[name]
            log(f"[{name}] already complete in this run ({prev.duration_s:.2f}s): resuming after it")
            reports.append(StepReport(step=name, status="RESUMED", duration_s=prev.duration_s))
            if prev.summary.get("stop_run"):
                stopped = prev.summary.get("message", "stopped by an earlier step")
            continue
        report = _run_step(d, spec, services, run_id, log)
        metrics.record_step(spec.name, name, report.status, report.duration_s or 0.0)
        reports.append(report)
        if report.status == "FAILED":
            msg = f"step {name!r} failed: {report.message}"
            store.finish_run(run_id, "FAILED", msg)
            metrics.record_run(spec.name, str(props.get("cause") or "manual"), "FAILED")
            _after_run(services, spec.name, run_id, msg, log)
            log(f"run {run_id} FAILED: {msg}")
            return RunReport(run_id=run_id, pipeline=spec.name, status="FAILED", message=msg,
                             steps=reports)
        if report.stop_run:
            stopped = report.message or f"step {name!r} ended the run"
    message = stopped or "all steps complete"
    store.finish_run(run_id, "SUCCEEDED", message,
                     applied if applies({r.step: r.status for r in reports}) else None)
    metrics.record_run(spec.name, str(props.get("cause") or "manual"), "SUCCEEDED")
    _after_run(services, spec.name, run_id, None, log)
    log(f"run {run_id} SUCCEEDED: {message}")
    return RunReport(run_id=run_id, pipeline=spec.name, status="SUCCEEDED", message=message,
                     steps=reports)


def _after_run(services: Services, pipeline: str, run_id: str, failure: str | None,
               log: Callable[[str], None]) -> None:
    """A failed run becomes an alert; every finished run's figures are compared with the
    pipeline's history (mlplatform.monitoring.anomaly). Neither may change the run's outcome."""
    from mlplatform.monitoring import alerts, anomaly

    if failure is not None:
        try:
            alerts.alert_failed_run(services, pipeline, run_id, failure)
        except Exception as exc:  # noqa: BLE001 - the run's own record already says it failed
            log(f"could not record the failed run's alert: {type(exc).__name__}: {redact_text(str(exc))}")
    for alert in anomaly.check_run(services, pipeline, run_id):
        log(f"anomaly: {alert.message}")


def _run_step(d: StepDef, spec: PipelineSpec, services: Services, run_id: str,
              log: Callable[[str], None]) -> StepReport:
    name, store = d.name, services.metadata
    exec_id = store.start_execution(run_id, name, {"spec_hash": spec_hash(spec)})
    ctx = StepContext(spec, services, run_id, name, log, execution_id=exec_id)
    log(f"[{name}] started")
    t0 = time.perf_counter()
    try:
        result = d.fn(ctx)
        undeclared = sorted({type(a).kind for a in result.outputs if type(a) not in d.produces})
        if undeclared:
            raise PlatformError(f"step {name!r} wrote {undeclared}, which it does not declare in "
                                f"`produces` ({sorted(k.kind for k in d.produces)})")
    except PlatformError as exc:
        # The record and the job log are shown on the dashboard: never a store's password.
        message = redact_text(exc.message)
        store.finish_execution(exec_id, "FAILED", error=message)
        log(f"[{name}] FAILED: {message}")
        return StepReport(step=name, status="FAILED", duration_s=time.perf_counter() - t0,
                          message=message)
    except Exception as exc:  # a bug or an unexpected fault: keep the traceback in the record
        detail = redact_text(f"{type(exc).__name__}: {exc}")
        trace = redact_text(traceback.format_exc())
        store.finish_execution(exec_id, "FAILED", error=trace)
        log(f"[{name}] FAILED with an unexpected error: {detail}\n{trace}")
        return StepReport(step=name, status="FAILED", duration_s=time.perf_counter() - t0,
                          message=detail)
    # Record lineage before marking the execution COMPLETE: a crash in between
    # leaves a RUNNING execution, which a resume re-runs.
    for art in result.inputs:
        store.link(exec_id, store.put(art).id or 0, "INPUT")
    for art in result.outputs:
        store.link(exec_id, store.put(art).id or 0, "OUTPUT")
    summary = {**result.summary, "message": result.message, "stop_run": result.stop_run}
    if ctx.placement is not None:
        summary.setdefault("execution", ctx.placement.summary())
    metrics.record_summary_rows(spec.name, summary)  # the validate step's counts, also when it fails
    elapsed = time.perf_counter() - t0
    if result.fail:
        result.fail = redact_text(result.fail)
        store.finish_execution(exec_id, "FAILED", summary=summary, error=result.fail)
        log(f"[{name}] FAILED: {result.fail}")
        return StepReport(step=name, status="FAILED", duration_s=elapsed, message=result.fail)
    store.finish_execution(exec_id, "COMPLETE", summary=summary)
    log(f"[{name}] complete in {elapsed:.2f}s{': ' + result.message if result.message else ''}")
    return StepReport(step=name, status="COMPLETE", duration_s=elapsed, message=result.message,
                      stop_run=result.stop_run)


__all__ = ["StepContext", "StepResult", "run_pipeline", "step", "step_graph"]
