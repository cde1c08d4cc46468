"""The rollout controller, driven check by check on hand-built observations: what it decides
(action, status, weight) over a whole rollout, never a copy of its arithmetic. Pure: no Ray,
no store, no clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from mlplatform.rollout import controller
from mlplatform.rollout.plan import RolloutSpec
from mlplatform.rollout.state import Decision, Observations, RolloutState, VariantStats

T0 = dt.datetime(2024, 5, 1, 12, 0)
MINUTE = dt.timedelta(minutes=1)


def vs(version: str, *, requests: int = 500, errors: int = 0, p99: float = 40.0, outcomes: int = 0,
       rate: float = 0.0) -> VariantStats:
    """A version's window; `rate`: the share of 1s among `outcomes` binary outcomes."""
    ones = round(rate * outcomes)
    return VariantStats(version=version, requests=requests, errors=errors, p50_ms=p99 / 2, p99_ms=p99,
                        outcomes=outcomes, outcome_sum=ones, outcome_sumsq=ones)


def observe(challenger: VariantStats, champion: VariantStats | None = None, *,
            cumulative: tuple[VariantStats, VariantStats] | None = None) -> Observations:
    champion = champion or vs("1")
    cum_champion, cum_challenger = cumulative or (champion, challenger)
    return Observations(start=T0, end=T0, champion=champion, challenger=challenger,
                        cumulative_champion=cum_champion, cumulative_challenger=cum_challenger)


HEALTHY = observe(vs("2"))
BAD = observe(vs("2", requests=400, errors=100))  # success rate 0.80
QUIET = observe(vs("2", requests=3), vs("1", requests=60))  # 3 challenger requests in the window


def make_plan(**fields: object) -> RolloutSpec:
    from mlplatform.spec_types import duration_seconds

    interval = str(fields.get("interval", "1m"))
    # A step_timeout is at least one interval (the plan refuses less).
    timeout = "10m" if duration_seconds(interval) <= 600 else f"{2 * duration_seconds(interval)}s"
    return RolloutSpec.model_validate({"strategy": "canary", "interval": "1m", "step_timeout": timeout,
                                       **fields})


def begin(plan: RolloutSpec) -> RolloutState:
    return controller.start(plan, rollout_id="r1", pipeline="churn", model_name="churn-model",
                            champion="1", challenger="2", run_id="run-1", now=T0)


Feed = Observations | None | Callable[[int], Observations | None]


def drive(plan: RolloutSpec, feed: Feed, *, state: RolloutState | None = None,
          checks: int = 200) -> list[Decision]:
    """Call decide at every next_check_at the controller asks for, until the rollout stops
    running; `feed` gives the observations of check i."""
    state = state or begin(plan)
    now = state.step_started_at + dt.timedelta(seconds=plan.interval_s)
    decisions = []
    for i in range(checks):
        obs = feed(i) if callable(feed) else feed
        decision = controller.decide(plan, state, obs, now)
        decisions.append(decision)
        assert decision.next_check_at > now or decision.state.status != "running"
        state, now = decision.state, decision.next_check_at
        if state.status != "running":
            break
    return decisions


def trace(decisions: list[Decision]) -> list[tuple[str, str, int]]:
    """(action, status, weight) of every decision that was not a quiet wait."""
    return [(d.action, d.state.status, d.state.weight) for d in decisions if d.event is not None]


# -- start -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, phase, weight", [
    ({"strategy": "canary", "steps": [5, 25, 50]}, "canary", 5),
    ({"strategy": "canary", "steps": [10, 100]}, "canary", 10),
    ({"strategy": "shadow"}, "shadow", 0),
    ({"strategy": "ab", "split": 30, "ab_test": {}}, "ab", 30),
])
def test_start(fields: dict[str, object], phase: str, weight: int) -> None:
    plan = make_plan(**fields)
    state = begin(plan)
    assert (state.status, state.phase, state.weight, state.step) == ("running", phase, weight, 0)
    assert [e.action for e in state.timeline] == ["start"]
    assert state.step_started_at == state.started_at == T0
    assert RolloutSpec.model_validate(state.plan) == plan


def test_direct_has_no_rollout() -> None:
    with pytest.raises(ValueError, match="direct"):
        begin(make_plan(strategy="direct"))


# -- canary ------------------------------------------------------------------------------------

def test_healthy_canary_walks_every_step_and_promotes() -> None:
    decisions = drive(make_plan(steps=[5, 25, 50]), HEALTHY)
    assert trace(decisions) == [("advance", "running", 25), ("advance", "running", 50),
                                ("promote", "promoted", 100)]
    final = decisions[-1].state
    assert final.phase == "done" and final.revision == 0  # the store, not the controller, bumps it
    assert [e.action for e in final.timeline] == ["start", "advance", "advance", "promote"]
    assert all(e.checks and all(c.status == "passed" for c in e.checks) for e in final.timeline[1:])


def test_a_final_100_is_the_promotion_not_a_step() -> None:
    decisions = drive(make_plan(steps=[10, 50, 100]), HEALTHY)
    assert trace(decisions) == [("advance", "running", 50), ("promote", "promoted", 100)]


def test_before_the_interval_is_up_a_quiet_wait() -> None:
    plan = make_plan()
    state = begin(plan)
    decision = controller.decide(plan, state, HEALTHY, T0 + dt.timedelta(seconds=30))
    assert decision.action == "wait" and decision.event is None and decision.state == state
    assert decision.next_check_at == T0 + MINUTE


@pytest.mark.parametrize("limit, on_failure, expected", [
    (2, "rollback", [("wait", "running", 5), ("rollback", "rolled_back", 0)]),
    (3, "rollback", [("wait", "running", 5), ("wait", "running", 5), ("rollback", "rolled_back", 0)]),
    (1, "rollback", [("rollback", "rolled_back", 0)]),
    # paused for a person, and the failed challenger's traffic taken away meanwhile
    (2, "pause", [("wait", "running", 5), ("pause", "paused", 0)]),
])
def test_bad_challenger(limit: int, on_failure: str, expected: list[tuple[str, str, int]]) -> None:
    decisions = drive(make_plan(failure_limit=limit, on_failure=on_failure), BAD)
    assert trace(decisions) == expected
    final = decisions[-1].state
    assert "success_rate" in final.reason and "0.800" in final.reason
    assert final.phase == ("done" if on_failure == "rollback" else "canary")


def test_one_failed_check_is_tolerated_below_the_limit() -> None:
    decisions = drive(make_plan(failure_limit=2), lambda i: BAD if i == 0 else HEALTHY)
    assert trace(decisions) == [("wait", "running", 5), ("advance", "running", 25),
                                ("advance", "running", 50), ("promote", "promoted", 100)]


def test_a_failed_window_is_not_judged_twice() -> None:
    # Asked again at once after a failure, the controller waits for a fresh window instead of
    # counting the same bad traffic a second time.
    plan = make_plan(failure_limit=2)
    first = controller.decide(plan, begin(plan), BAD, T0 + MINUTE)
    again = controller.decide(plan, first.state, BAD, T0 + MINUTE + dt.timedelta(seconds=1))
    assert (first.action, again.action, again.event) == ("wait", "wait", None)
    assert again.state.status == "running"


def test_latency_regression_rolls_back() -> None:
    slow = observe(vs("2", p99=200.0), vs("1", p99=40.0))
    assert trace(drive(make_plan(failure_limit=1), slow)) == [("rollback", "rolled_back", 0)]


def test_low_traffic_waits_then_pauses_inconclusive_never_promotes() -> None:
    decisions = drive(make_plan(step_timeout="10m"), QUIET)
    assert {d.action for d in decisions[:-1]} == {"wait"}
    assert all(d.event is None for d in decisions[:-1])  # nothing new: nothing to store
    last = decisions[-1]
    assert (last.action, last.state.status, last.state.weight) == ("pause", "paused", 5)
    assert last.event is not None and last.event.at - T0 > dt.timedelta(minutes=10)
    assert "inconclusive" in last.state.reason
    assert "challenger 3" in last.state.reason and "needs 20" in last.state.reason


def test_traffic_arriving_before_the_timeout_lets_it_go_on() -> None:
    decisions = drive(make_plan(steps=[5, 50]), lambda i: QUIET if i < 5 else HEALTHY)
    assert trace(decisions) == [("advance", "running", 50), ("promote", "promoted", 100)]


def test_no_observations_is_no_evidence_even_without_guardrails() -> None:
    plan = make_plan(guardrails={"success_rate": None, "latency": None})
    decisions = drive(plan, None)
    assert trace(decisions) == [("pause", "paused", 5)]
    assert "no observations" in decisions[-1].state.reason


def test_paused_or_finished_rollouts_just_wait() -> None:
    plan = make_plan(failure_limit=1, on_failure="pause")
    paused = drive(plan, BAD)[-1].state
    later = T0 + dt.timedelta(hours=1)
    for state in (paused, drive(make_plan(), HEALTHY)[-1].state):
        decision = controller.decide(plan, state, HEALTHY, later)
        assert decision.action == "wait" and decision.state == state and decision.event is None
        assert decision.next_check_at == later + MINUTE


# -- shadow ------------------------------------------------------------------------------------

def test_shadow_then_canary() -> None:
    decisions = drive(make_plan(strategy="shadow", shadow_checks=2, steps=[5, 25, 50]), HEALTHY)
    assert trace(decisions) == [("wait", "running", 0), ("advance", "running", 5),
                                ("advance", "running", 25), ("advance", "running", 50),
                                ("promote", "promoted", 100)]
    assert [e.phase for e in decisions[-1].state.timeline] == ["shadow", "shadow", "canary", "canary",
                                                                "canary", "done"]


def test_shadow_that_fails_never_reaches_the_canary() -> None:
    decisions = drive(make_plan(strategy="shadow", failure_limit=2), BAD)
    assert trace(decisions) == [("wait", "running", 0), ("rollback", "rolled_back", 0)]
    assert all(e.phase != "canary" for e in decisions[-1].state.timeline)


# -- manual transitions ------------------------------------------------------------------------

def test_pause_resume_abort() -> None:
    plan = make_plan(steps=[5, 25, 50])
    state = drive(plan, HEALTHY, checks=1)[-1].state  # at 25%
    paused = controller.pause(state, "alice", "looking at a dashboard", T0 + 2 * MINUTE)
    assert (paused.status, paused.weight, paused.phase) == ("paused", 25, "canary")
    assert paused.timeline[-1].by == "alice" and paused.timeline[-1].action == "pause"
    assert "looking at a dashboard" in paused.reason
    # while paused nothing happens, whatever the traffic says
    assert controller.decide(plan, paused, BAD, T0 + 30 * MINUTE).state == paused

    resumed = controller.resume(paused, "bob", T0 + 40 * MINUTE)
    assert (resumed.status, resumed.weight, resumed.step_started_at) == ("running", 25, T0 + 40 * MINUTE)
    assert resumed.timeline[-1].action == "resume" and resumed.timeline[-1].by == "bob"
    # a fresh window: the first check comes one interval after the resume
    early = T0 + 40 * MINUTE + dt.timedelta(seconds=59)
    assert controller.decide(plan, resumed, HEALTHY, early).event is None
    assert trace(drive(plan, HEALTHY, state=resumed)) == [("advance", "running", 50),
                                                          ("promote", "promoted", 100)]

    aborted = controller.abort(resumed, "carol", "wrong model", T0 + 41 * MINUTE)
    assert (aborted.status, aborted.weight, aborted.phase) == ("aborted", 0, "done")
    assert aborted.timeline[-1].by == "carol" and aborted.revision == state.revision


def test_resume_after_a_failure_pause_gives_the_step_its_weight_and_forgives_failures() -> None:
    plan = make_plan(failure_limit=2, on_failure="pause")
    paused = drive(plan, BAD)[-1].state
    assert (paused.status, paused.weight, paused.failures) == ("paused", 0, 2)
    resumed = controller.resume(paused, "alice", T0 + dt.timedelta(hours=1))
    assert (resumed.status, resumed.weight, resumed.failures) == ("running", 5, 0)
    # it gets failure_limit fresh checks again
    assert trace(drive(plan, BAD, state=resumed)) == [("wait", "running", 5), ("pause", "paused", 0)]


def test_manual_transitions_refused_in_the_wrong_status() -> None:
    plan = make_plan()
    running = begin(plan)
    paused = controller.pause(running, "alice", "why not", T0)
    promoted = drive(plan, HEALTHY)[-1].state
    aborted = controller.abort(paused, "bob", "stop", T0)
    with pytest.raises(ValueError, match="only a paused rollout can be resumed"):
        controller.resume(running, "x", T0)
    with pytest.raises(ValueError, match="only a running rollout can be paused"):
        controller.pause(paused, "x", "again", T0)
    for done in (promoted, aborted):
        with pytest.raises(ValueError, match="already finished"):
            controller.abort(done, "x", "late", T0)
        with pytest.raises(ValueError):
            controller.resume(done, "x", T0)


# -- A/B test (mlplatform.rollout.stats) -----------------------------------------------------

AB = {"metric": "accuracy", "method": "sequential", "min_samples": 200, "min_effect": 0.02}


def ab_observe(champion_rate: float, challenger_rate: float, n: int) -> Observations:
    return observe(vs("2"), cumulative=(vs("1", outcomes=n, rate=champion_rate),
                                        vs("2", outcomes=n, rate=challenger_rate)))


@pytest.mark.parametrize("champion_rate, challenger_rate, n, expected", [
    (0.80, 0.90, 5000, [("promote", "promoted", 100)]),       # clearly better
    (0.80, 0.70, 5000, [("rollback", "rolled_back", 0)]),     # clearly worse
    (0.80, 0.80, 200_000, [("rollback", "rolled_back", 0)]),  # no better than min_effect
])
def test_ab_decides(champion_rate: float, challenger_rate: float, n: int,
                    expected: list[tuple[str, str, int]]) -> None:
    plan = make_plan(strategy="ab", split=50, ab_test=AB)
    decisions = drive(plan, ab_observe(champion_rate, challenger_rate, n))
    assert trace(decisions) == expected
    final = decisions[-1].state
    assert final.timeline[-1].test is not None and "lift" in final.reason


def test_ab_undecided_past_max_duration_pauses() -> None:
    plan = make_plan(strategy="ab", interval="1h", max_duration="1d", ab_test=AB)
    decisions = drive(plan, ab_observe(0.80, 0.80, 300))
    assert {d.action for d in decisions[:-1]} == {"wait"}
    last = decisions[-1]
    assert (last.action, last.state.status, last.state.weight) == ("pause", "paused", 50)
    assert last.event is not None and last.event.at - T0 > dt.timedelta(days=1)
    assert "undecided" in last.state.reason


def test_ab_with_too_few_outcomes_never_promotes() -> None:
    plan = make_plan(strategy="ab", interval="1h", max_duration="1d", ab_test=AB)
    decisions = drive(plan, ab_observe(0.50, 0.99, 50))
    assert trace(decisions) == [("pause", "paused", 50)]


def test_ab_guardrails_still_hold() -> None:
    plan = make_plan(strategy="ab", failure_limit=1, ab_test=AB)
    bad = observe(vs("2", requests=400, errors=100),
                  cumulative=(vs("1", outcomes=300, rate=0.8), vs("2", outcomes=300, rate=0.8)))
    assert trace(drive(plan, bad)) == [("rollback", "rolled_back", 0)]


def test_canary_with_ab_test_rolls_back_early_when_worse() -> None:
    plan = make_plan(steps=[5, 25, 50], ab_test=AB)
    decisions = drive(plan, ab_observe(0.80, 0.60, 5000))
    assert trace(decisions) == [("rollback", "rolled_back", 0)]


def test_canary_with_ab_test_promotes_unless_worse() -> None:
    plan = make_plan(steps=[5, 25, 50], ab_test=AB)
    # equal so far and far from decided: the canary's own verdict stands
    assert trace(drive(plan, ab_observe(0.80, 0.80, 300)))[-1] == ("promote", "promoted", 100)


@pytest.mark.parametrize("champion_rate, challenger_rate, n, expected", [
    # better: held at the last step until the test says so, then promoted
    (0.80, 0.90, 5000, ("promote", "promoted", 100)),
    # no better than min_effect: rolled back, not promoted on the canary's own verdict
    (0.80, 0.80, 200_000, ("rollback", "rolled_back", 0)),
])
def test_canary_that_must_win_the_ab_test(champion_rate: float, challenger_rate: float, n: int,
                                          expected: tuple[str, str, int]) -> None:
    plan = make_plan(steps=[5, 50], ab_test={**AB, "decide_before_promotion": True})
    assert trace(drive(plan, ab_observe(champion_rate, challenger_rate, n)))[-1] == expected


def test_canary_that_must_win_holds_its_last_step_then_pauses_undecided() -> None:
    plan = make_plan(steps=[5, 50], interval="1h", max_duration="1d",
                     ab_test={**AB, "decide_before_promotion": True})
    decisions = drive(plan, ab_observe(0.80, 0.80, 300))
    steps = trace(decisions)
    assert steps[0] == ("advance", "running", 50)
    assert set(steps[1:-1]) == {("wait", "running", 50)}  # held at 50%: never promoted undecided
    assert steps[-1] == ("pause", "paused", 50) and "undecided" in decisions[-1].state.reason


def test_group_sequential_looks_come_back_from_the_timeline() -> None:
    ab = {**AB, "method": "group_sequential", "max_samples": 2000}
    plan = make_plan(strategy="ab", ab_test=ab)

    def growing(i: int) -> Observations:
        n = 400 * (i + 1)  # 20% more of the planned sample at every look
        return ab_observe(0.80, 0.80, n)

    decisions = drive(plan, growing)
    assert trace(decisions) == [("wait", "running", 50)] * 4 + [("rollback", "rolled_back", 0)]
    final = decisions[-1].state
    assert "not better than" in final.reason
    assert controller.previous_looks(plan, final) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_resuming_an_undecided_ab_test_gives_it_another_max_duration() -> None:
    plan = make_plan(strategy="ab", interval="1h", max_duration="1d", ab_test=AB)
    paused = drive(plan, ab_observe(0.80, 0.80, 300))[-1].state
    resumed = controller.resume(paused, "alice", paused.updated_at + dt.timedelta(hours=2))
    decisions = drive(plan, ab_observe(0.80, 0.80, 300), state=resumed)
    assert len(decisions) > 20 and decisions[-1].state.status == "paused"
    assert decisions[-1].event is not None
    assert decisions[-1].event.at - resumed.step_started_at > dt.timedelta(days=1)
