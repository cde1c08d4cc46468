"""The step graph: runs the steps of a pipeline run, records executions, resumes.

Steps are plain functions registered by name. Each step run is one execution in
the metadata store, with the artifacts it read (INPUT) and wrote (OUTPUT). The
first failing step stops the run; running the same run id again resumes after
the last completed step, so a fixed batch or schema does not redo finished work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import re
import secrets
import time
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from mlplatform.errors import InputError, PlatformError
from mlplatform.registry.metadata import Artifact, MetadataStore
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec

# The canonical order of the loop; a step joins the run once its module registers it.
PIPELINE_ORDER: tuple[str, ...] = (
    "ingest", "validate", "featurize", "training_set", "train", "evaluate", "register", "rollout",
)
# Modules that register the built-in steps (imported lazily: they pull in Ray).
BUILTIN_STEP_MODULES: tuple[str, ...] = (
    "mlplatform.data.ingest", "mlplatform.data.validate_step", "mlplatform.features.steps",
    "mlplatform.training.steps",
)


class ArtifactOut(BaseModel):
    """An artifact a step read or wrote, before it has an id."""

    uri: str
    kind: str
    content_hash: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


class StepResult(BaseModel):
    inputs: list[ArtifactOut] = Field(default_factory=list)
    outputs: list[ArtifactOut] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    stop_run: bool = Field(False, description="End the run successfully here (e.g. no new data).")
    fail: str | None = Field(
        None, description="Fail the step with this message, but keep what it wrote (a quarantine, "
                          "a report) recorded as its outputs.")


class StepContext:
    """What a step gets: the spec, the stores, the run, and a way to report progress."""

    def __init__(self, spec: PipelineSpec, settings: Settings, store: MetadataStore, run_id: str,
                 step: str, log: Callable[[str], None], execution_id: int = 0):
        self.execution_id = execution_id
        self.spec = spec
        self.settings = settings
        self.store = store
        self.run_id = run_id
        self.step = step
        self._log = log

    def log(self, message: str) -> None:
        self._log(f"[{self.step}] {message}")

    def upstream(self, step: str, kind: str | None = None) -> list[Artifact]:
        """Outputs of an earlier step of this run (from the store, so resumes see them)."""
        return [a for a in self.store.artifacts_of_run(self.run_id, step)
                if kind is None or a.kind == kind]


StepFn = Callable[[StepContext], StepResult]
_STEPS: dict[str, StepFn] = {}


def step(name: str) -> Callable[[StepFn], StepFn]:
    """Register a step function under `name`."""
    if name not in PIPELINE_ORDER:
        raise ValueError(f"unknown step {name!r}; the loop is {PIPELINE_ORDER}")

    def register(fn: StepFn) -> StepFn:
        _STEPS[name] = fn
        return fn

    return register


def registered_steps() -> list[str]:
    for module in BUILTIN_STEP_MODULES:
        importlib.import_module(module)
    return [s for s in PIPELINE_ORDER if s in _STEPS]


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


def new_run_id(pipeline: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{pipeline}-{stamp}-{secrets.token_hex(2)}"


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def check_run_id(run_id: str) -> str:
    """Run ids name folders and travel in a shell command: letters, digits, . _ - only."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise InputError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    return run_id


def spec_hash(spec: PipelineSpec) -> str:
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_pipeline(spec: PipelineSpec, settings: Settings, *, run_id: str | None = None,
                 only: list[str] | None = None, job_id: str | None = None,
                 log: Callable[[str], None] = print,
                 properties: dict[str, Any] | None = None) -> RunReport:
    """Run (or resume) one pipeline run; never raises for a step's failure."""
    available = registered_steps()
    if only:
        unknown = [s for s in only if s not in available]
        if unknown:
            raise InputError(f"--step {', '.join(unknown)}: not a step; choose from {available}")
    steps = [s for s in available if not only or s in only]
    store = MetadataStore(settings.metadata_url)
    run_id = run_id or new_run_id(spec.name)
    check_run_id(run_id)
    props: dict[str, Any] = {**(properties or {}), "spec_hash": spec_hash(spec), "steps": steps}
    if job_id:
        props["job_id"] = job_id
    try:
        store.start_run(spec.name, run_id, props)
    except ValueError as exc:
        raise InputError(f"--run-id {run_id}: {exc}") from None
    done = store.completed_steps(run_id)
    log(f"run {run_id} of pipeline {spec.name!r}: steps {' -> '.join(steps)}")
    reports: list[StepReport] = []
    stopped: str | None = None
    for name in steps:
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
        report = _run_step(name, spec, settings, store, run_id, log)
        reports.append(report)
        if report.status == "FAILED":
            msg = f"step {name!r} failed: {report.message}"
            store.finish_run(run_id, "FAILED", msg)
            log(f"run {run_id} FAILED: {msg}")
            return RunReport(run_id=run_id, pipeline=spec.name, status="FAILED", message=msg,
                             steps=reports)
        if report.stop_run:
            stopped = report.message or f"step {name!r} ended the run"
    message = stopped or "all steps complete"
    store.finish_run(run_id, "SUCCEEDED", message)
    log(f"run {run_id} SUCCEEDED: {message}")
    return RunReport(run_id=run_id, pipeline=spec.name, status="SUCCEEDED", message=message,
                     steps=reports)


def _run_step(name: str, spec: PipelineSpec, settings: Settings, store: MetadataStore,
              run_id: str, log: Callable[[str], None]) -> StepReport:
    exec_id = store.start_execution(run_id, name, {"spec_hash": spec_hash(spec)})
    ctx = StepContext(spec, settings, store, run_id, name, log, execution_id=exec_id)
    log(f"[{name}] started")
    t0 = time.perf_counter()
    try:
        result = _STEPS[name](ctx)
    except PlatformError as exc:
        store.finish_execution(exec_id, "FAILED", error=exc.message)
        log(f"[{name}] FAILED: {exc.message}")
        return StepReport(step=name, status="FAILED", duration_s=time.perf_counter() - t0,
                          message=exc.message)
    except Exception as exc:  # a bug or an unexpected fault: keep the traceback in the record
        detail = f"{type(exc).__name__}: {exc}"
        store.finish_execution(exec_id, "FAILED", error=traceback.format_exc())
        log(f"[{name}] FAILED with an unexpected error: {detail}\n{traceback.format_exc()}")
        return StepReport(step=name, status="FAILED", duration_s=time.perf_counter() - t0,
                          message=detail)
    # Record lineage before marking the execution COMPLETE: a crash in between
    # leaves a RUNNING execution, which a resume re-runs.
    for art in result.inputs:
        a = store.put_artifact(art.uri, art.kind, art.content_hash, art.properties)
        store.link(exec_id, a.id, "INPUT")
    for art in result.outputs:
        a = store.put_artifact(art.uri, art.kind, art.content_hash, art.properties)
        store.link(exec_id, a.id, "OUTPUT")
    summary = {**result.summary, "message": result.message, "stop_run": result.stop_run}
    elapsed = time.perf_counter() - t0
    if result.fail:
        store.finish_execution(exec_id, "FAILED", summary=summary, error=result.fail)
        log(f"[{name}] FAILED: {result.fail}")
        return StepReport(step=name, status="FAILED", duration_s=elapsed, message=result.fail)
    store.finish_execution(exec_id, "COMPLETE", summary=summary)
    log(f"[{name}] complete in {elapsed:.2f}s{': ' + result.message if result.message else ''}")
    return StepReport(step=name, status="COMPLETE", duration_s=elapsed, message=result.message,
                      stop_run=result.stop_run)


__all__ = ["ArtifactOut", "StepContext", "StepResult", "run_pipeline", "step"]
