"""The trigger loop: each tick releases the claim of a run that ended, asks every trigger of the
spec whether to fire, and applies the verdicts safely (claims.py) by submitting pipeline runs
as Ray Jobs with the trigger as their cause.

`Watcher.tick(now)` is one pass with an explicit clock (what the tests drive); `Watcher.run`
ticks until stopped and never dies of one failing tick: the error is recorded (an alert,
once per distinct message) and the next tick goes on. `WatcherActor` hosts a Watcher on the
cluster as a detached named actor (see watch_actor.py), so the loop outlives the CLI.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from mlplatform.errors import InputError, PlatformError
from mlplatform.run_ids import new_run_id
from mlplatform.services import Services
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_types import duration_seconds
from mlplatform.triggers import claims, sources
from mlplatform.triggers.sources import Proposal

log = logging.getLogger(__name__)

# A claim with no job after this long: its watcher died between claiming and submitting.
STALE_CLAIM = dt.timedelta(minutes=10)
MANUAL_RUN_HORIZON = dt.timedelta(hours=2)


class Outcome(BaseModel):
    trigger: str
    status: str  # submitted | skipped | failed | waiting | lost (another watcher acted)
    reason: str
    run_id: str | None = None
    job_id: str | None = None


class TickReport(BaseModel):
    at: dt.datetime
    released: list[str] = Field(default_factory=list, description="Runs whose claim ended.")
    outcomes: list[Outcome] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


Submit = Callable[..., object]


class Watcher:
    """The triggers of one pipeline. `spec_file` is the file submitted with each run (under
    `working_dir`, uploaded as the job's working directory); `base_dir` is where the spec's
    relative paths resolve (the folder the user wrote it in)."""

    def __init__(self, spec: PipelineSpec, settings: Settings, spec_file: Path, *, name: str,
                 working_dir: Path | None = None, base_dir: Path | None = None,
                 only_steps: list[str] | None = None):
        if spec.triggers is None:
            raise InputError(f"spec {spec_file}: no `triggers` section: nothing to watch",
                             hint="add triggers (new_data, schedule, drift, quality) to the spec")
        self.spec, self.settings, self.spec_file, self.name = spec, settings, spec_file, name
        self.working_dir = working_dir
        self.base_dir = base_dir
        self.only_steps = only_steps  # tests: stop runs after the steps they need
        self.services = Services(settings)
        self._last_poll: dt.datetime | None = None
        self._alerted: set[str] = set()
        self._stop = threading.Event()
        self.last_tick: TickReport | None = None

    # -- one pass -------------------------------------------------------------------------

    def tick(self, now: dt.datetime | None = None) -> TickReport:
        now = claims.naive(now or dt.datetime.now(dt.UTC))
        report = TickReport(at=now)
        try:
            self._reap(now, report)
        except Exception as exc:  # noqa: BLE001 - the loop records and goes on
            self._error(report, "releasing finished runs", exc)
        for name, check in self._checks(now):
            try:
                proposal = check()
                if proposal is not None:
                    self._apply(proposal, now, report)
            except Exception as exc:  # noqa: BLE001 - one trigger's failure stops no other
                self._error(report, f"trigger {name}", exc)
        self.last_tick = report
        return report

    def _checks(self, now: dt.datetime) -> list[tuple[str, Callable[[], Proposal | None]]]:
        t = self.spec.triggers
        assert t is not None
        spec, services = self.spec, self.services
        out: list[tuple[str, Callable[[], Proposal | None]]] = []
        if t.new_data is not None and (self._last_poll is None or now - self._last_poll >= dt.timedelta(
                seconds=duration_seconds(t.new_data.poll))):
            self._last_poll = now
            out.append(("new_data", lambda: sources.check_new_data(spec, services, self._state("new_data"),
                                                                   now)))
        if t.schedule is not None:
            out.append(("schedule", lambda: sources.check_schedule(spec, self._state("schedule"), now)))
        if t.drift is not None and "batch" in t.drift.on:
            out.append(("drift", lambda: sources.check_batch_drift(spec, services, self._state("drift"),
                                                                   now)))
        if t.drift is not None and "live" in t.drift.on:
            out.append(("live_drift", lambda: self._monitor("live_drift", sources.check_live_drift, now)))
        if t.quality is not None:
            out.append(("quality", lambda: self._monitor("quality", sources.check_quality, now)))
        return out

    def _state(self, trigger: str) -> claims.TriggerState:
        return claims.read_state(self.services.metadata, self.spec.name, trigger)

    def _monitor(self, trigger: sources.TriggerName, check: Callable[..., Proposal | None],
                 now: dt.datetime) -> Proposal | None:
        """A live check runs once per monitoring.interval among all watchers: the slot first."""
        slot = sources.monitor_due(self.spec, self._state(trigger), now, trigger)
        if slot is None or not claims.cas_state(self.services.metadata, slot.seen, slot.state or {}, now=now):
            return None
        return check(self.spec, self.services, slot.seen, now)

    # -- applying a verdict ---------------------------------------------------------------

    def _gate(self, now: dt.datetime) -> str | None:
        """Why no run may start now (a run is active, min_interval), or None."""
        store, pipeline = self.services.metadata, self.spec.name
        active = claims.active_run(store, pipeline)
        if active is not None:
            return f"a run is active: {active.run_id} ({active.cause})"
        manual = self._running_unclaimed()
        if manual is not None:
            return f"a run is active: {manual} (started by hand)"
        t = self.spec.triggers
        assert t is not None
        last = claims.last_submitted_at(store, pipeline)
        gap = dt.timedelta(seconds=duration_seconds(t.min_interval))
        if last is not None and now - last < gap:
            return (f"min_interval {t.min_interval}: the last triggered run started at "
                    f"{last.isoformat(timespec='seconds')} UTC")
        return None

    def _running_unclaimed(self) -> str | None:
        """A run of this pipeline started without a claim (`platformctl submit`, the demo) that
        is still running: its job is not finished, or, run in-process, it started within
        MANUAL_RUN_HORIZON (a run whose driver died stays RUNNING in the store for ever)."""
        from sqlalchemy import select

        from mlplatform.metadata.schema import ContextRow
        from mlplatform.runtime.jobs import TERMINAL, JobsClient

        since = claims.naive(dt.datetime.now(dt.UTC)) - MANUAL_RUN_HORIZON
        with self.services.metadata.session() as s:
            pipe = s.scalar(select(ContextRow.id).where(ContextRow.type == "pipeline",
                                                        ContextRow.name == self.spec.name))
            rows = [] if pipe is None else s.execute(
                select(ContextRow.name, ContextRow.properties)
                .where(ContextRow.parent_id == pipe, ContextRow.type == "pipeline_run",
                       ContextRow.created_at >= since)).all()
        for name, props in rows:
            props = props or {}
            if props.get("status") != "RUNNING":
                continue
            job = props.get("job_id")
            if job is None:
                return str(name)
            try:
                if JobsClient(self.settings).status(str(job)).status not in TERMINAL:
                    return str(name)
            except PlatformError:  # unknown to the cluster: gone
                continue
        return None

    def _apply(self, p: Proposal, now: dt.datetime, report: TickReport) -> None:
        store, pipeline = self.services.metadata, self.spec.name
        if not p.fire:  # only the trigger's state moves (the schedule's start, a batch seen)
            if p.state is not None:
                claims.cas_state(store, p.seen, p.state, now=now)
            return
        blocked = self._gate(now)
        if blocked and p.waits:  # a new batch waits for its own run, consumed by nobody
            report.outcomes.append(Outcome(trigger=p.trigger, status="waiting", reason=blocked))
            return
        if p.state is not None and not claims.cas_state(store, p.seen, p.state, now=now):
            report.outcomes.append(Outcome(trigger=p.trigger, status="lost",
                                           reason="another watcher acted on this first"))
            return
        fire = {"pipeline": pipeline, "trigger": p.trigger, "now": now, "watcher": self.name,
                "details": {**p.details, "cause": p.cause}}
        if blocked:
            self._record(report, fire, "skipped", f"{p.detail}; not started: {blocked}")
            return
        run_id = new_run_id(pipeline)
        if not claims.claim_run(store, pipeline, run_id, cause=p.cause, watcher=self.name, now=now):
            if p.waits:  # give the batch back: it waits for its own run
                self._unclaim(p.trigger, p.details.get("hashes", []), now)
            active = claims.active_run(store, pipeline)
            self._record(report, fire, "skipped", f"{p.detail}; not started: a run is active"
                         + (f": {active.run_id}" if active else ""))
            return
        try:
            job_id = self._submit(run_id, p)
        except Exception as exc:  # noqa: BLE001 - recorded as the fire's outcome
            claims.release_run(store, pipeline, run_id)
            if p.waits:  # the batch was never submitted: the next poll tries it again
                self._unclaim(p.trigger, p.details.get("hashes", []), now)
            self._record(report, fire, "failed", f"{p.detail}; submitting failed: {_reason(exc)}",
                         run_id=run_id)
            return
        claims.set_claim_job(store, pipeline, run_id, job_id)
        self._record(report, fire, "submitted", p.detail, run_id=run_id, job_id=job_id)

    def _submit(self, run_id: str, p: Proposal) -> str:
        from mlplatform.runtime.jobs import submit_pipeline

        sub = submit_pipeline(self.settings, self.spec_file, run_id=run_id, pipeline=self.spec.name,
                              steps=self.only_steps, working_dir=self.working_dir, cause=p.cause,
                              cause_detail=p.detail, retrain=p.retrain, base_dir=self.base_dir)
        return sub.job_id

    def _record(self, report: TickReport, fire: dict, status: claims.FireStatus, reason: str, *,
                run_id: str | None = None, job_id: str | None = None) -> None:
        claims.record_fire(self.services.metadata, status=status, reason=reason, run_id=run_id,
                           job_id=job_id, **fire)
        report.outcomes.append(Outcome(trigger=fire["trigger"], status=status, reason=reason,
                                       run_id=run_id, job_id=job_id))
        if status != "submitted":
            self._alert("warning" if status == "failed" else "info", f"trigger {fire['trigger']} "
                        f"of {self.spec.name}: {reason}", kind=f"trigger_{status}", run_id=run_id)

    # -- releasing claims --------------------------------------------------------------------

    def _reap(self, now: dt.datetime, report: TickReport) -> None:
        """Release the claim of a run whose job ended or is gone; a claim that never got a job
        (its watcher died in between) after STALE_CLAIM."""
        store = self.services.metadata
        active = claims.active_run(store, self.spec.name)
        if active is None:
            return
        if active.job_id is None:
            if now - active.claimed_at > STALE_CLAIM:
                claims.release_run(store, self.spec.name, active.run_id)
                report.released.append(active.run_id)
            return
        from mlplatform.runtime.jobs import TERMINAL, JobsClient

        try:
            status = JobsClient(self.settings).status(active.job_id).status
        except InputError:  # the job is unknown to the cluster (a restarted head): gone
            status = "GONE"
        if status in TERMINAL or status == "GONE":
            claims.release_run(store, self.spec.name, active.run_id)
            report.released.append(active.run_id)
            if status != "SUCCEEDED":  # its batch was perhaps never ingested: the next poll retries it
                for f in claims.fires(store, self.spec.name, limit=50):
                    if f.run_id == active.run_id and f.trigger == "new_data":
                        self._unclaim("new_data", f.details.get("hashes", []), now)

    def _unclaim(self, trigger: str, hashes: list[str], now: dt.datetime) -> None:
        """Take batch hashes out of the claimed set (compare-and-set, retried on a lost race)."""
        store = self.services.metadata
        for _ in range(5):
            seen = claims.read_state(store, self.spec.name, trigger)
            state = {**seen.state, "claimed": sorted(set(seen.state.get("claimed", [])) - set(hashes))}
            if claims.cas_state(store, seen, state, now=now):
                return

    # -- errors --------------------------------------------------------------------------------

    def _error(self, report: TickReport, where: str, exc: BaseException) -> None:
        message = f"{where}: {_reason(exc)}"
        report.errors.append(message)
        log.warning("watcher %s: %s\n%s", self.name, message, traceback.format_exc())
        self._alert("warning", f"watcher of {self.spec.name}: {message}", kind="trigger_error")

    def _alert(self, severity: str, message: str, *, kind: str, run_id: str | None = None) -> None:
        """Once per distinct message per watcher: a repeating failure is one alert, not one a tick."""
        if message in self._alerted or severity == "info":
            return
        self._alerted.add(message)
        try:
            from mlplatform.monitoring.alerts import raise_alert

            raise_alert(self.services, pipeline=self.spec.name, source="trigger", kind=kind,
                        severity=severity, message=message, run_id=run_id)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - an alert that cannot be written stops nothing
            log.warning("watcher %s: could not record the alert %r", self.name, message)

    # -- the loop --------------------------------------------------------------------------------

    def tick_seconds(self) -> float:
        """How often the loop ticks: the new-data poll, at most 30 s (a cron has minutes)."""
        t = self.spec.triggers
        assert t is not None
        poll = duration_seconds(t.new_data.poll) if t.new_data is not None else 30
        return float(max(1, min(poll, 30)))

    def run(self) -> None:
        """Tick until `stop()`; a failing tick is logged and the loop goes on."""
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - tick records its own errors; this is the last net
                log.exception("watcher %s: tick failed", self.name)
            self._stop.wait(self.tick_seconds())

    def stop(self) -> None:
        self._stop.set()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PlatformError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
