"""The rollout controller: pure functions of (plan, state, observations, now), no I/O, no Ray,
no clock, so every rule is tested on hand-built numbers and a restarted runner decides the
same as the one that died. The runner stores the returned state (compare-and-set on
`revision`, which is the store's and never changed here) and then applies it to serving.

The rules (mlplatform.rollout.plan says what each strategy means):

- A check is due `interval` after `step_started_at`, the start of the current window; before
  that the answer is a quiet wait. `step_started_at` moves to `now` whenever a window has
  been judged: a new step, a passing shadow check, an A/B look that passed its guardrails, a
  failed check. So `failure_limit` counts failures on distinct windows (one burst of errors
  fails one check, not every later check whose window still holds it), a late regression in a
  long A/B test is not diluted by days of good traffic, and a window short of requests keeps
  growing until it has enough or `step_timeout` runs out.
- A quiet decision (no event) leaves the state exactly as it was: nothing to store. Every other
  decision appends its Event (with every check and the A/B test look) to the timeline.
- The A/B test reads the cumulative observations (every outcome of the experiment); a verdict
  that the challenger is worse rolls back at once, in the canary phase too.
- Pausing after failed guardrails also takes the challenger's traffic away (weight 0): a model
  that failed should not keep answering while a person looks; `resume` gives its step's weight
  back. An inconclusive pause (too little traffic) keeps the weight: nothing wrong was seen.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from mlplatform.rollout import guardrails
from mlplatform.rollout.plan import RolloutSpec
from mlplatform.rollout.state import (
    ACTIVE,
    Action,
    Decision,
    Event,
    GuardrailCheck,
    Observations,
    Phase,
    RolloutState,
    TestResult,
)


def start(plan: RolloutSpec, *, rollout_id: str, pipeline: str, model_name: str, champion: str,
          challenger: str, run_id: str | None, now: dt.datetime) -> RolloutState:
    """A new rollout, running, in its first phase; the plan is kept as started."""
    if not plan.progressive:
        raise ValueError("rollout strategy 'direct' has no rollout: the challenger is deployed at once")
    phases: dict[str, Phase] = {"shadow": "shadow", "canary": "canary", "ab": "ab"}
    phase = phases[plan.strategy]
    weight = step_weight(plan, phase, 0)
    reason = f"{plan.strategy} rollout of v{challenger} against v{champion} started"
    return RolloutState(
        id=rollout_id, pipeline=pipeline, model_name=model_name, champion=champion, challenger=challenger,
        strategy=plan.strategy, phase=phase, weight=weight, step_started_at=now, started_at=now,
        updated_at=now, reason=reason, run_id=run_id, plan=plan.model_dump(mode="json"),
        timeline=[Event(at=now, action="start", phase=phase, weight=weight, reasons=[reason])])


def step_weight(plan: RolloutSpec, phase: str, step: int) -> int:
    """The challenger's share while `phase` runs at `step`."""
    if phase == "canary":
        return plan.canary_steps[step]
    if phase == "ab":
        return plan.split
    return 0  # shadow: a copy of the traffic, no share of it


def decide(plan: RolloutSpec, state: RolloutState, obs: Observations | None, now: dt.datetime) -> Decision:
    """The next action for a running rollout (a paused or finished one just waits)."""
    interval = dt.timedelta(seconds=plan.interval_s)
    if state.status != "running" or state.phase == "done":
        return Decision(action="wait", state=state, next_check_at=now + interval)
    due = state.step_started_at + interval
    if now < due:
        return Decision(action="wait", state=state, next_check_at=due)

    if obs is None:  # the runner could not read the window: no evidence, so never a pass
        checks = [GuardrailCheck(name="success_rate", status="waiting",
                                 detail="no observations could be read for this window")]
    else:
        checks = guardrails.check(plan.guardrails, obs.champion, obs.challenger,
                                  shadow=state.phase == "shadow")
    test = _ab_test(plan, state, obs) if state.phase in ("canary", "ab") else None
    failed = [c for c in checks if c.status == "failed"]
    waiting = [c for c in checks if c.status == "waiting"]
    verdict = test.verdict if test is not None else None

    def out(action: Action, reasons: list[str], **changes: object) -> Decision:
        new = state.model_copy(update={**changes, "updated_at": now})
        if action in ("rollback", "pause", "promote"):
            new.reason = "; ".join(reasons)
        event = Event(at=now, action=action, phase=new.phase, weight=new.weight, reasons=reasons,
                      checks=checks, test=test)
        new.timeline = [*state.timeline, event]
        return Decision(action=action, state=new, event=event, next_check_at=now + interval)

    # The A/B test saying the challenger is worse (or, in ab, not better) ends it at once.
    if verdict == "champion" or (state.phase == "ab" and verdict == "no_difference"):
        assert test is not None
        why = "worse than" if verdict == "champion" else "not better than"
        return out("rollback", [f"A/B test: the challenger is {why} the champion: {_describe(test)}"],
                   status="rolled_back", phase="done", weight=0)

    if failed:
        failures = state.failures + 1
        names = ", ".join(c.name for c in failed)
        reasons = [f"guardrails failed ({names}), failure {failures} of {plan.failure_limit}",
                   *(c.detail for c in failed)]
        if failures < plan.failure_limit:
            return out("wait", reasons, failures=failures, step_started_at=now)
        if plan.on_failure == "rollback":
            return out("rollback", reasons, failures=failures, status="rolled_back", phase="done", weight=0)
        return out("pause", [*reasons, "paused for a person: platformctl rollout resume|abort"],
                   failures=failures, status="paused", weight=0)

    inconclusive = _inconclusive(plan, state, now, waiting, test)
    if inconclusive:
        return out("pause", inconclusive, status="paused")
    if waiting or obs is None:
        if test is not None and verdict != "not_enough_data":  # a look of the test: on the record
            return out("wait", [f"waiting for traffic; A/B test: {_describe(test)}",
                                *(c.detail for c in waiting)])
        return Decision(action="wait", state=state, next_check_at=now + interval)

    # Every guardrail passed on this window.
    if state.phase == "shadow":
        passed = state.passed_checks + 1
        if passed < plan.shadow_checks:
            return out("wait", [f"shadow check {passed} of {plan.shadow_checks} passed"],
                       passed_checks=passed, step_started_at=now)
        first = step_weight(plan, "canary", 0)
        return out("advance", [f"shadow passed {passed} checks; canary at {first}%"],
                   phase="canary", step=0, weight=first, passed_checks=0, step_started_at=now)
    if state.phase == "canary":
        nxt = state.step + 1
        if nxt < len(plan.canary_steps):
            weight = plan.canary_steps[nxt]
            reasons = [f"canary step {state.weight}% passed; now {weight}%"]
            if test is not None:
                reasons.append(f"A/B test so far: {_describe(test)}")
            return out("advance", reasons, step=nxt, weight=weight, passed_checks=0, step_started_at=now)
        reasons = [f"canary passed every step ({', '.join(f'{w}%' for w in plan.canary_steps)})"]
        if test is not None and plan.ab_test is not None and plan.ab_test.decide_before_promotion:
            if verdict == "no_difference":
                return out("rollback", [*reasons, f"A/B test: the challenger is not better than the "
                                        f"champion: {_describe(test)}"],
                           status="rolled_back", phase="done", weight=0)
            if verdict != "challenger":  # held at the last step: a look on the record, a fresh window
                return out("wait", [*reasons, f"held for the A/B test to decide: {_describe(test)}"],
                           step_started_at=now)
            return out("promote", [*reasons, f"A/B test: the challenger is better: {_describe(test)}"],
                       status="promoted", phase="done", weight=100)
        if test is not None:
            reasons.append(f"A/B test does not find the challenger worse: {_describe(test)}")
        return out("promote", reasons, status="promoted", phase="done", weight=100)
    # ab: the guardrails hold; the test decides.
    assert test is not None
    if verdict == "challenger":
        return out("promote", [f"A/B test: the challenger is better: {_describe(test)}"],
                   status="promoted", phase="done", weight=100)
    if verdict == "continue":  # a look, on the record; the guardrails start a fresh window
        return out("wait", [f"A/B test undecided: {_describe(test)}"], step_started_at=now)
    return Decision(action="wait", state=state, next_check_at=now + interval)


def _inconclusive(plan: RolloutSpec, state: RolloutState, now: dt.datetime,
                  waiting: list[GuardrailCheck], test: TestResult | None) -> list[str]:
    """Reasons to pause for want of evidence: a step short of traffic past `step_timeout`, or
    an A/B test still undecided past `max_duration`. Empty: not (yet) inconclusive."""
    held = now - state.step_started_at
    if waiting and held > dt.timedelta(seconds=plan.step_timeout_s):
        where = f"{state.phase} step at {state.weight}%" if state.phase != "shadow" else "shadow phase"
        return [f"inconclusive: the {where} had too little traffic for {_duration(held)} "
                f"(step_timeout {plan.step_timeout})", *(c.detail for c in waiting),
                "paused for a person: platformctl rollout resume|abort"]
    # From the start, or from a person's last resume: resuming a test paused as undecided
    # gives it another max_duration instead of pausing it again at the next check.
    since = max([state.started_at, *(e.at for e in state.timeline if e.action == "resume")])
    ran = now - since
    undecided = test is None or test.verdict in ("continue", "not_enough_data")
    holding = (state.phase == "canary" and plan.ab_test is not None and plan.ab_test.decide_before_promotion
               and state.step == len(plan.canary_steps) - 1)
    if (state.phase == "ab" or holding) and undecided and ran > dt.timedelta(seconds=plan.max_duration_s):
        found = _describe(test) if test is not None else "no test result"
        return [f"inconclusive: the A/B test is undecided after {_duration(ran)} "
                f"(max_duration {plan.max_duration}): {found}",
                "paused for a person: platformctl rollout resume|abort"]
    return []


def _ab_test(plan: RolloutSpec, state: RolloutState, obs: Observations | None) -> TestResult | None:
    if plan.ab_test is None or obs is None:
        return None
    from mlplatform.rollout import stats  # lazily: scipy is only needed once a test runs

    return stats.ab_test(plan.ab_test, obs.cumulative_champion, obs.cumulative_challenger,
                         previous_looks=previous_looks(plan, state))


def previous_looks(plan: RolloutSpec, state: RolloutState) -> list[float]:
    """The information fractions of the earlier looks of a group-sequential test, from the
    timeline's test results: min(n_champion, n_challenger) / max_samples, increasing (a look
    that added no outcome spends no alpha)."""
    spec = plan.ab_test
    if spec is None or spec.method != "group_sequential" or spec.max_samples is None:
        return []
    looks: list[float] = []
    for event in state.timeline:
        t = event.test
        if t is None or t.verdict == "not_enough_data":
            continue
        fraction = min(1.0, min(t.n_champion, t.n_challenger) / spec.max_samples)
        if not looks or fraction > looks[-1]:
            looks.append(fraction)
    return looks


def _describe(test: TestResult) -> str:
    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.4f}"

    text = (f"{test.metric} lift {num(test.lift)} (CI {num(test.ci_low)} to {num(test.ci_high)}), "
            f"n {test.n_challenger} challenger / {test.n_champion} champion, verdict {test.verdict}")
    return f"{text} ({test.detail})" if test.detail else text


def _duration(delta: dt.timedelta) -> str:
    s = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}".replace(".0", "")
    return f"{s}s"


# -- manual transitions (a person through platformctl) ----------------------------------------

def pause(state: RolloutState, by: str, reason: str, now: dt.datetime) -> RolloutState:
    """Freeze a running rollout where it is (its weight stays) until resumed or aborted."""
    if state.status != "running":
        raise ValueError(f"rollout {state.id} is {state.status}, not running: only a running rollout "
                         "can be paused")
    return _manual(state, "pause", by, f"paused by {by}: {reason}", now, status="paused")


def resume(state: RolloutState, by: str, now: dt.datetime) -> RolloutState:
    """Back to running; the current step starts a fresh window (the traffic seen while paused
    was judged by a person) with its failures forgiven, and gets its weight back."""
    if state.status != "paused":
        raise ValueError(f"rollout {state.id} is {state.status}, not paused: only a paused rollout "
                         "can be resumed")
    plan = RolloutSpec.model_validate(state.plan)
    weight = step_weight(plan, state.phase, state.step)
    return _manual(state, "resume", by, f"resumed by {by}", now, status="running", weight=weight,
                   step_started_at=now, failures=0, passed_checks=0)


def abort(state: RolloutState, by: str, reason: str, now: dt.datetime) -> RolloutState:
    """End it now: all the traffic back to the champion, the challenger not promoted."""
    if state.status not in ACTIVE:
        raise ValueError(f"rollout {state.id} already finished ({state.status}): nothing to abort")
    return _manual(state, "abort", by, f"aborted by {by}: {reason}", now, status="aborted",
                   phase="done", weight=0)


def _manual(state: RolloutState, action: Literal["pause", "resume", "abort"], by: str, reason: str,
            now: dt.datetime, **changes: object) -> RolloutState:
    new = state.model_copy(update={**changes, "reason": reason, "updated_at": now})
    event = Event(at=now, action=action, phase=new.phase, weight=new.weight, reasons=[reason], by=by)
    new.timeline = [*state.timeline, event]
    return new
