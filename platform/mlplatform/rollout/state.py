"""What the rollout controller reads and writes: the rollout's state (a row of the metadata
store, changed only by compare-and-set), the observations of one check, and the decision.

The controller (mlplatform.rollout.controller.decide) is a pure function of
(plan, state, observations, now): everything it needs is in these models, so it is tested
without Ray, a server or a clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

Status = Literal["running", "paused", "promoted", "rolled_back", "aborted"]
ACTIVE: tuple[str, ...] = ("running", "paused")
Phase = Literal["shadow", "canary", "ab", "done"]
Action = Literal["wait", "advance", "promote", "rollback", "pause"]
Verdict = Literal["challenger", "champion", "no_difference", "continue", "not_enough_data"]


class VariantStats(BaseModel):
    """One version's traffic in a window of the prediction log (and its joined feedback)."""

    version: str
    requests: int = 0  # answered (no server error)
    errors: int = 0  # server errors (5xx) while this version answered
    p50_ms: float | None = None
    p99_ms: float | None = None
    scores: list[float] = Field(default_factory=list, description="Its numeric outputs (for the "
                                "prediction-shift guardrail); a sample when there are many.")
    # Outcomes: the A/B metric per request that has feedback (binary: 0/1).
    outcomes: int = 0
    outcome_sum: float = 0.0
    outcome_sumsq: float = 0.0

    @property
    def total(self) -> int:
        return self.requests + self.errors

    @property
    def success_rate(self) -> float | None:
        return None if self.total == 0 else self.requests / self.total

    @property
    def outcome_mean(self) -> float | None:
        return None if self.outcomes == 0 else self.outcome_sum / self.outcomes


class Observations(BaseModel):
    """One check's evidence. `window`: since the current step started (guardrails compare the
    two versions on the same window of the same traffic). `cumulative`: since the rollout
    started (what the A/B test reads: every outcome of the experiment)."""

    start: dt.datetime
    end: dt.datetime
    champion: VariantStats
    challenger: VariantStats
    cumulative_champion: VariantStats
    cumulative_challenger: VariantStats


class GuardrailCheck(BaseModel):
    name: Literal["success_rate", "latency", "prediction_shift", "quality"]
    status: Literal["passed", "failed", "waiting"]
    challenger: float | None = None
    champion: float | None = None
    threshold: float | None = None
    detail: str


class TestResult(BaseModel):
    """The A/B test at one look: lift = challenger - champion in the metric's units (for a
    lower-is-better metric the sign is flipped so that a positive lift is always better)."""

    metric: str
    method: str
    n_champion: int
    n_challenger: int
    mean_champion: float | None = None
    mean_challenger: float | None = None
    lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    verdict: Verdict
    detail: str = ""


class Event(BaseModel):
    """One entry of the rollout's timeline: what was decided and every number behind it."""

    at: dt.datetime
    action: Action | Literal["start", "resume", "abort", "apply"]
    phase: Phase
    weight: int = Field(description="The challenger's traffic share after this event (%).")
    reasons: list[str] = Field(default_factory=list)
    checks: list[GuardrailCheck] = Field(default_factory=list)
    test: TestResult | None = None
    by: str = "controller"


class RolloutState(BaseModel):
    """A rollout as stored; `revision` is what compare-and-set compares."""

    id: str
    pipeline: str
    model_name: str
    champion: str = Field(description="The version serving when the rollout started (the baseline).")
    challenger: str
    strategy: str
    service: str = Field("all_features", description="The feature service whose prediction log the "
                         "checks read (the rollout keeps it: a `serve down` must not blind its history).")
    status: Status = "running"
    phase: Phase
    step: int = Field(0, description="Index into the plan's canary steps (canary phase).")
    weight: int = Field(0, description="The challenger's traffic share now (%); 0 in shadow.")
    step_started_at: dt.datetime
    started_at: dt.datetime
    updated_at: dt.datetime
    failures: int = Field(0, description="Failed checks so far (on_failure at the plan's limit).")
    passed_checks: int = Field(0, description="Passing checks in the current step/phase.")
    reason: str = ""
    run_id: str | None = None
    revision: int = 0
    settled: bool = Field(False, description="A finished rollout whose decision is applied: the "
                          "champion record and the served weights match it.")
    timeline: list[Event] = Field(default_factory=list)
    plan: dict[str, Any] = Field(default_factory=dict, description="The RolloutSpec it runs under "
                                 "(as started: a later spec change does not alter a running rollout).")

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class Decision(BaseModel):
    """The controller's answer: the action, and the state to store (compare-and-set) before the
    runner applies the action to the serving config."""

    action: Action
    state: RolloutState
    event: Event | None = Field(None, description="Added to the timeline (none for a quiet wait).")
    next_check_at: dt.datetime
