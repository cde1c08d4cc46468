"""The rollout plan: the spec's `deploy.rollout` section, which says how a model that passed
the offline gate reaches production.

Strategies (named as Flagger and Argo Rollouts users know them):

- `direct`: the gate's winner becomes champion at once and takes all the traffic (the
  `deploy` behaviour of the serving release).
- `canary`: the challenger takes `steps` of the traffic in turn (5 -> 25 -> 50), each held
  for `interval`; at every check the guardrails compare it with the champion on the same
  window of the same traffic. After the last step it becomes champion, unless the A/B test
  (when `ab_test` is set) says it is worse. A final 100 in `steps` is that promotion.
- `ab`: a fixed `split` until the A/B test decides: the challenger is promoted only when
  the test says it is better; worse, or no better than the minimum detectable effect, and
  it is rolled back.
- `shadow`: the challenger first gets a copy of the traffic (never answering) for
  `shadow_checks` intervals, guarded on errors, latency and the shift of its predictions
  against the champion's on the very same requests; then the canary steps.

A check without enough requests (each guardrail's `min_requests`, on both sides) waits; a
step that waits past `step_timeout` pauses the rollout as inconclusive with an alert: it
never promotes on no evidence and never stalls silently. `failure_limit` failed checks
(Flagger's `threshold`) trigger `on_failure`: `rollback` (the default) or `pause` for a
person (`platformctl rollout resume|abort`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mlplatform.spec_types import Duration, Strict, duration_seconds

Strategy = Literal["direct", "canary", "ab", "shadow"]
OnFailure = Literal["rollback", "pause"]
# What the A/B test compares, per request joined to its feedback:
#   accuracy      (classification) 1 when the served label equals the observed one; binary
#   label_rate    the observed label's rate (a business outcome such as a conversion the served
#                 model drives); binary labels 0/1
#   label_mean    the observed label's mean (continuous outcome such as revenue)
#   abs_error     (regression) |prediction - label|; lower is better
#   brier         (binary classification) (score - label)^2, the Brier score; lower is better. More
#                 sensitive than accuracy: it sees a probability move before the label flips
ABMetric = Literal["accuracy", "label_rate", "label_mean", "abs_error", "brier"]
BINARY_METRICS = ("accuracy", "label_rate")
LOWER_IS_BETTER = ("abs_error", "brier")


class SuccessRateGuard(Strict):
    """The challenger's share of requests answered without a server error."""

    min: float = Field(0.99, gt=0, le=1, description="Floor on the challenger's success rate.")
    max_drop: float = Field(0.01, ge=0, le=1, description="How far below the champion's success rate "
                            "(same window) the challenger may be.")
    min_requests: int = Field(20, ge=1, description="Challenger requests in the window before judging.")


class LatencyGuard(Strict):
    """The challenger's p99 latency in the replica, against the champion's in the same window."""

    max_ratio: float = Field(1.5, gt=1, description="Challenger p99 / champion p99 at most this.")
    max_ms: float | None = Field(None, gt=0, description="And at most this many milliseconds (optional).")
    slack_ms: float = Field(5.0, ge=0, description="Absolute slack added to the ratio's bound: on "
                            "millisecond latencies a ratio alone fails on noise.")
    min_requests: int = Field(20, ge=1, description="Requests on each side before judging.")


class PredictionShiftGuard(Strict):
    """The challenger's score distribution against the champion's on the same traffic (PSI over
    the champion's deciles): a model that answers very differently from the one it replaces is
    suspect before any label arrives."""

    max_psi: float = Field(0.25, gt=0, description="Population stability index at most this "
                           "(0.1 small, 0.25 large shift).")
    min_requests: int = Field(50, ge=10, description="Scores on each side before judging.")


class QualityGuard(Strict):
    """Live quality from feedback: the challenger's A/B metric may not fall further below the
    champion's than `max_drop` (the same metric and direction as `ab_test.metric`)."""

    metric: ABMetric = "accuracy"
    max_drop: float = Field(0.05, ge=0, description="Largest tolerated drop, in the metric's units.")
    min_outcomes: int = Field(50, ge=1, description="Outcomes (feedback) on each side before judging.")


class Guardrails(Strict):
    success_rate: SuccessRateGuard | None = Field(default_factory=SuccessRateGuard)
    latency: LatencyGuard | None = Field(default_factory=LatencyGuard)
    prediction_shift: PredictionShiftGuard | None = None
    quality: QualityGuard | None = None


class ABTestSpec(Strict):
    """The A/B test on outcomes (feedback joined to predictions by request id).

    `method: sequential` (default) is valid under continuous monitoring (a mixture SPRT: an
    always-valid p-value and a confidence sequence on the lift), so checking after every
    interval does not inflate false positives. With `max_samples` set, `group_sequential`
    spends alpha over the planned looks (O'Brien-Fleming) and is more powerful when that
    maximum is known. `fixed` (two-proportion z / Welch's t) is valid only when looked at
    once, at `max_samples`."""

    metric: ABMetric = "accuracy"
    method: Literal["sequential", "group_sequential", "fixed"] = "sequential"
    alpha: float = Field(0.05, gt=0, lt=0.5)
    min_samples: int = Field(200, ge=10, description="Outcomes per variant before any decision.")
    min_effect: float = Field(0.02, gt=0, description="Minimum detectable effect, in the metric's "
                              "units: a lift smaller than this is no reason to switch.")
    max_samples: int | None = Field(None, ge=20, description="Outcomes per variant at which the test "
                                    "stops (required for group_sequential and fixed).")
    decide_before_promotion: bool = Field(
        False, description="canary: hold the last step until the test decides: promoted when the "
        "challenger is better, rolled back when it is worse or no better than min_effect; still "
        "undecided after max_duration, paused. Without it a canary that passed its steps is promoted "
        "unless the test says worse.")

    @model_validator(mode="after")
    def _design(self) -> ABTestSpec:
        if self.method in ("group_sequential", "fixed") and self.max_samples is None:
            raise ValueError(f"ab_test.method {self.method!r} needs ab_test.max_samples (the planned "
                             "sample size per variant)")
        if self.max_samples is not None and self.max_samples < self.min_samples:
            raise ValueError(f"ab_test.max_samples ({self.max_samples}) is below ab_test.min_samples "
                             f"({self.min_samples})")
        return self


class RolloutSpec(Strict):
    strategy: Strategy = "direct"
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50], description="Canary weights (%) in "
                             "order; a final 100 is the promotion.")
    split: int = Field(50, ge=1, le=99, description="ab: the challenger's share (%) of the traffic.")
    interval: Duration = Field("60s", description="How long each step is held before it is checked.")
    shadow_checks: int = Field(1, ge=1, description="shadow: passing checks before the canary starts.")
    step_timeout: Duration = Field("30m", description="A step still short of requests after this "
                                   "pauses the rollout as inconclusive (with an alert).")
    max_duration: Duration = Field("7d", description="ab: a test still undecided after this pauses "
                                   "as inconclusive.")
    failure_limit: int = Field(2, ge=1, description="Failed checks before on_failure (Flagger's "
                               "threshold).")
    on_failure: OnFailure = "rollback"
    guardrails: Guardrails = Field(default_factory=Guardrails)
    ab_test: ABTestSpec | None = None

    @model_validator(mode="after")
    def _plan(self) -> RolloutSpec:
        if duration_seconds(self.interval) == 0:
            raise ValueError(f"rollout.interval must be longer than zero, got {self.interval!r}")
        if self.step_timeout_s < self.interval_s:
            raise ValueError(f"rollout.step_timeout {self.step_timeout!r} is shorter than rollout.interval "
                             f"{self.interval!r}: a step would pause before its first check")
        # Checked whatever the strategy: a plan that reads wrong is wrong even while unused.
        steps = self.steps
        if not steps:
            raise ValueError("rollout.steps: a canary needs at least one step, e.g. [5, 25, 50]")
        bad = [w for w in steps if w < 1 or w > 100]
        if bad:
            raise ValueError(f"rollout.steps: weights must be between 1 and 100, got {bad}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"rollout.steps must increase, got {steps}")
        if steps == [100] and self.strategy in ("canary", "shadow"):
            raise ValueError("rollout.steps: [100] has no canary step; use strategy: direct")
        if self.strategy == "ab" and self.ab_test is None:
            raise ValueError("rollout.strategy 'ab' needs rollout.ab_test (what decides the test)")
        if self.ab_test and self.guardrails.quality and self.guardrails.quality.metric != self.ab_test.metric:
            raise ValueError(f"rollout.guardrails.quality.metric {self.guardrails.quality.metric!r} differs "
                             f"from rollout.ab_test.metric {self.ab_test.metric!r}; use one metric")
        return self

    @property
    def canary_steps(self) -> list[int]:
        """The weights that are held and checked (a final 100 is the promotion, not a step)."""
        return [w for w in self.steps if w < 100]

    @property
    def interval_s(self) -> int:
        return duration_seconds(self.interval)

    @property
    def step_timeout_s(self) -> int:
        return duration_seconds(self.step_timeout)

    @property
    def max_duration_s(self) -> int:
        return duration_seconds(self.max_duration)

    @property
    def progressive(self) -> bool:
        return self.strategy != "direct"


def check_task(spec: RolloutSpec, task: str) -> None:
    """An A/B test or quality guardrail on a metric the model does not produce is refused."""
    metrics = {m for m in ((spec.ab_test.metric if spec.ab_test else None),
                           (spec.guardrails.quality.metric if spec.guardrails.quality else None)) if m}
    for metric in metrics:
        field = "ab_test.metric" if spec.ab_test and spec.ab_test.metric == metric else \
            "guardrails.quality.metric"
        if metric == "accuracy" and task != "classification":
            raise ValueError(f"rollout.{field} 'accuracy' needs a classification model, this one is "
                             f"{task}; use abs_error or label_mean")
        if metric == "brier" and task != "classification":
            raise ValueError(f"rollout.{field} 'brier' needs a classification model, this one is "
                             f"{task}; use abs_error or label_mean")
        if metric == "abs_error" and task != "regression":
            raise ValueError(f"rollout.{field} 'abs_error' needs a regression model, this one is "
                             f"{task}; use accuracy or label_rate")
