"""`platformctl rollout status | list | pause | resume | abort` and `platformctl ab status`: a
person's view of, and hand on, the rollouts the controller runs by itself.

Every change goes through the same compare-and-set as the controller's own, so a pause
typed while the controller decides cannot be lost: one of the two writes first, the
other re-reads.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.table import Table

from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, services_for
from mlplatform.errors import InputError
from mlplatform.rollout.state import GuardrailCheck, RolloutState, TestResult, VariantStats
from mlplatform.rollout.store import RolloutStore

app = typer.Typer(help="Canary / A-B rollouts: status, pause, resume, abort.", no_args_is_help=True)
ab_app = typer.Typer(help="A/B tests of the running rollouts.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The pipeline.")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (recorded in the timeline).")]


def _store() -> tuple[Any, RolloutStore]:
    services = services_for()
    return services, RolloutStore(services.metadata)


def _active(store: RolloutStore, name: str) -> RolloutState:
    state = store.active(name)
    if state is None:
        last = store.latest(name)
        was = f"; the last one, {last.id}, is {last.status}" if last else ""
        raise InputError(f"pipeline {name!r} has no active rollout{was}")
    return state


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _show(state: RolloutState) -> None:
    console.print(f"[bold]{state.pipeline}[/bold] rollout {state.id}: [bold]{state.status}[/bold] "
                  f"({state.strategy}, {state.phase}) v{state.challenger} at {state.weight}% against "
                  f"champion v{state.champion}", highlight=False)
    if state.reason:
        console.print(f"  {state.reason}", highlight=False)
    table = Table("at", "by", "action", "weight", "reasons")
    for e in state.timeline[-15:]:
        table.add_row(e.at.strftime("%H:%M:%S"), e.by, e.action, f"{e.weight}%", "; ".join(e.reasons)[:120])
    console.print(table)


@app.command("status")
@handle_errors
def status(name: NameArg, json_: JsonOpt = False) -> None:
    """The pipeline's active rollout (else its last one) with its timeline."""
    _, store = _store()
    state = store.latest(name)
    if state is None:
        raise InputError(f"pipeline {name!r} has had no rollout")
    if json_:
        print_json(state)
        return
    _show(state)


@app.command("list")
@handle_errors
def list_(name: Annotated[str | None, typer.Argument(help="One pipeline (default: all).")] = None,
          json_: JsonOpt = False) -> None:
    """Rollouts, newest first."""
    _, store = _store()
    found = store.list(name)
    if json_:
        print_json([s.model_dump(mode="json", exclude={"timeline", "plan"}) for s in found])
        return
    table = Table("id", "pipeline", "status", "strategy", "champion", "challenger", "weight", "reason")
    for s in found:
        table.add_row(s.id, s.pipeline, s.status, s.strategy, f"v{s.champion}", f"v{s.challenger}",
                      f"{s.weight}%", s.reason[:80])
    console.print(table)


def _change(name: str, how: str, reason: str, json_: bool) -> RolloutState:
    from mlplatform.errors import ClusterUnreachable
    from mlplatform.metadata.champion import default_actor
    from mlplatform.rollout import apply, controller
    from mlplatform.rollout.runner import ensure_runner
    from mlplatform.runtime.connect import connect

    services, store = _store()
    state = _active(store, name)
    by = default_actor()
    note = ""
    if how == "resume":
        # The controller needs the cluster: connect before anything is written, so a resume
        # that cannot start it leaves the rollout as it was (and can be retried).
        connect(services.settings)
        if state.status == "running":  # after a cluster restart: only its controller is missing
            started = ensure_runner(services.settings, name)
            note = "its controller was restarted" if started else "its controller is running"
            _print(state, json_, note)
            return state
    if how == "abort":
        try:
            saved = apply.abort(services, state, by=by, reason=reason)
        except ClusterUnreachable as exc:
            saved = store.get(state.id) or state
            note = (f"recorded, but the serving config is unchanged: {exc.message}; its controller "
                    "applies it when the cluster is back (`platformctl rollout resume` restarts it)")
        _print(saved, json_, note)
        return saved
    try:
        if how == "pause":
            new = controller.pause(state, by=by, reason=reason, now=_now())
        else:
            new = controller.resume(state, by=by, now=_now())
    except ValueError as exc:
        raise InputError(f"rollout {state.id}: {exc}") from None
    saved = store.save(new)
    if how == "resume":
        ensure_runner(services.settings, name)
    _print(saved, json_, note)
    return saved


def _print(state: RolloutState, json_: bool, note: str) -> None:
    if json_:
        print_json({**state.model_dump(mode="json"), "note": note})
        return
    _show(state)
    if note:
        console.print(note, highlight=False)


@app.command("pause")
@handle_errors
def pause(name: NameArg, reason: ReasonOpt = "paused by hand", json_: JsonOpt = False) -> None:
    """Hold the rollout where it is: the weights stay, no check decides until `resume`."""
    _change(name, "pause", reason, json_)


@app.command("resume")
@handle_errors
def resume(name: NameArg, json_: JsonOpt = False) -> None:
    """Resume a paused rollout (its current step starts a new window), and restart its runner
    if none is running (after a cluster restart)."""
    _change(name, "resume", "", json_)


@app.command("abort")
@handle_errors
def abort(name: NameArg, reason: ReasonOpt = "aborted by hand", json_: JsonOpt = False) -> None:
    """Stop the rollout: the champion takes all the traffic back at once; the challenger is dropped."""
    _change(name, "abort", reason, json_)


class VariantRow(BaseModel):
    variant: str
    version: str
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    outcomes: int
    outcome_rate: float | None


class ABStatus(BaseModel):
    pipeline: str
    rollout_id: str
    status: str
    phase: str
    weight: int
    metric: str | None
    variants: list[VariantRow]
    test: TestResult | None
    guardrails: list[GuardrailCheck]
    next_action: str
    next_check_at: dt.datetime | None


def _row(variant: str, s: VariantStats) -> VariantRow:
    return VariantRow(variant=variant, version=s.version, requests=s.requests, errors=s.errors,
                      error_rate=None if s.total == 0 else s.errors / s.total, p50_ms=s.p50_ms,
                      p99_ms=s.p99_ms, outcomes=s.outcomes, outcome_rate=s.outcome_mean)


def ab_status_of(services: Any, state: RolloutState) -> ABStatus:
    """Per-variant numbers since the rollout started, the test at this look, and what the
    controller would do if it checked now (a dry run of the same pure function)."""
    from mlplatform.rollout import controller, guardrails
    from mlplatform.rollout.observe import observe
    from mlplatform.rollout.plan import RolloutSpec
    from mlplatform.rollout.stats import ab_test

    plan = RolloutSpec.model_validate(state.plan)
    now = _now()
    obs = observe(plan, state, storage_uri=services.settings.storage_uri, service=state.service, now=now)
    test = ab_test(plan.ab_test, obs.cumulative_champion, obs.cumulative_challenger) if plan.ab_test else None
    checks = guardrails.check(plan.guardrails, obs.champion, obs.challenger, shadow=state.phase == "shadow")
    action, when = "none (finished)", None
    if state.status == "running":
        decision = controller.decide(plan, state, obs, max(now, state.step_started_at + dt.timedelta(
            seconds=plan.interval_s)))
        action, when = decision.action, decision.next_check_at
    elif state.status == "paused":
        action = "wait for a person: platformctl rollout resume | abort"
    metric = plan.ab_test.metric if plan.ab_test else (
        plan.guardrails.quality.metric if plan.guardrails.quality else None)
    challenger_variant = "shadow" if state.phase == "shadow" else "challenger"
    return ABStatus(pipeline=state.pipeline, rollout_id=state.id, status=state.status, phase=state.phase,
                    weight=state.weight, metric=metric,
                    variants=[_row("champion", obs.cumulative_champion),
                              _row(challenger_variant, obs.cumulative_challenger)],
                    test=test, guardrails=checks, next_action=action, next_check_at=when)


@ab_app.command("status")
@handle_errors
def ab_status(name: NameArg, json_: JsonOpt = False) -> None:
    """Per variant: requests, errors, p50/p99 latency, outcome rate; the lift with its interval,
    the test's verdict and the controller's next action."""
    services, store = _store()
    state = store.active(name) or store.latest(name)
    if state is None:
        raise InputError(f"pipeline {name!r} has had no rollout")
    out = ab_status_of(services, state)
    if json_:
        print_json(out)
        return
    console.print(f"[bold]{name}[/bold] rollout {out.rollout_id}: {out.status} ({out.phase}, "
                  f"challenger at {out.weight}%)", highlight=False)
    table = Table("variant", "version", "requests", "errors", "p50 ms", "p99 ms", "outcomes",
                  f"{out.metric or 'outcome'}")

    def f(x: float | None, spec: str = ".1f") -> str:
        return "-" if x is None else format(x, spec)

    for v in out.variants:
        table.add_row(v.variant, f"v{v.version}", str(v.requests), str(v.errors), f(v.p50_ms), f(v.p99_ms),
                      str(v.outcomes), f(v.outcome_rate, ".4f"))
    console.print(table)
    if out.test is not None:
        t = out.test
        console.print(f"A/B ({t.method}): lift {f(t.lift, '+.4f')} [{f(t.ci_low, '+.4f')}, "
                      f"{f(t.ci_high, '+.4f')}], p {f(t.p_value, '.4f')}: [bold]{t.verdict}[/bold]",
                      highlight=False)
    for c in out.guardrails:
        console.print(f"guardrail {c.name}: {c.status}: {c.detail}", highlight=False)
    console.print(f"next: {out.next_action}" + (f" at {out.next_check_at:%H:%M:%S}" if out.next_check_at
                                                else ""), highlight=False)
