"""The rollout guardrails on hand-built windows: each guardrail passes, fails or waits (too little
traffic on either side), compares the challenger with the champion on the same window, and
says why in a sentence with the numbers. PSI is checked against a value computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlplatform.rollout import guardrails
from mlplatform.rollout.plan import (
    Guardrails,
    LatencyGuard,
    PredictionShiftGuard,
    QualityGuard,
    SuccessRateGuard,
)
from mlplatform.rollout.state import VariantStats


def stats(version: str = "2", *, requests: int = 1000, errors: int = 0, p99: float | None = 40.0,
          scores: list[float] | None = None, outcomes: int = 0, outcome_mean: float = 0.0) -> VariantStats:
    return VariantStats(version=version, requests=requests, errors=errors, p99_ms=p99, scores=scores or [],
                        outcomes=outcomes, outcome_sum=outcome_mean * outcomes)


CHAMPION = stats("1")


# -- success rate ------------------------------------------------------------------------------

@pytest.mark.parametrize("champion, challenger, expected", [
    (stats("1"), stats(), "passed"),
    (stats("1"), stats(requests=800, errors=200), "failed"),              # 0.80 < min 0.99
    (stats("1", requests=995, errors=5), stats(requests=990, errors=10), "passed"),  # 0.99 vs 0.995
    # above the floor, but more than max_drop below a perfect champion
    (stats("1"), stats(requests=975, errors=25), "failed"),
    (stats("1"), stats(requests=10, errors=0), "waiting"),                 # challenger short
    (stats("1", requests=5), stats(), "waiting"),                          # champion short too
])
def test_success_rate(champion: VariantStats, challenger: VariantStats, expected: str) -> None:
    guard = SuccessRateGuard(min=0.97, max_drop=0.01, min_requests=20)
    assert guardrails.success_rate(guard, champion, challenger).status == expected


def test_success_rate_detail_is_a_sentence_with_the_numbers() -> None:
    check = guardrails.success_rate(SuccessRateGuard(), CHAMPION, stats(requests=81, errors=19))
    assert check.status == "failed"
    assert "0.810" in check.detail and "champion 1.000" in check.detail and "below min 0.99" in check.detail
    assert check.challenger == pytest.approx(0.81) and check.champion == 1.0
    waiting = guardrails.success_rate(SuccessRateGuard(), CHAMPION, stats(requests=3, errors=0))
    assert "challenger 3" in waiting.detail and "needs 20" in waiting.detail


# -- latency -----------------------------------------------------------------------------------

@pytest.mark.parametrize("guard, champion_p99, challenger_p99, expected", [
    (LatencyGuard(), 40.0, 60.0, "passed"),                 # 60 <= 40 * 1.5 + 5 = 65
    (LatencyGuard(), 40.0, 70.0, "failed"),                 # 70 > 65
    (LatencyGuard(), 2.0, 7.0, "passed"),                   # ratio 3.5, but within the 5 ms slack
    (LatencyGuard(slack_ms=0), 2.0, 7.0, "failed"),
    (LatencyGuard(max_ms=50), 40.0, 55.0, "failed"),        # within the ratio, above max_ms
    (LatencyGuard(max_ms=50), 40.0, 45.0, "passed"),
    (LatencyGuard(), 40.0, None, "waiting"),                # no p99 measured
])
def test_latency(guard: LatencyGuard, champion_p99: float, challenger_p99: float | None,
                 expected: str) -> None:
    check = guardrails.latency(guard, stats("1", p99=champion_p99), stats(p99=challenger_p99))
    assert check.status == expected


def test_latency_waits_for_answered_requests_on_both_sides() -> None:
    check = guardrails.latency(LatencyGuard(min_requests=20), stats("1", requests=19), stats())
    assert check.status == "waiting" and "champion 19" in check.detail


def test_latency_detail() -> None:
    check = guardrails.latency(LatencyGuard(max_ms=50), stats("1", p99=40), stats(p99=80))
    assert check.status == "failed"
    assert "80.0 ms" in check.detail and "champion 40.0 ms" in check.detail and "max 50 ms" in check.detail


# -- prediction shift (PSI) -------------------------------------------------------------------

def test_psi_against_a_hand_computed_value() -> None:
    # Champion 1..10: its deciles cut between every value, so each bin holds one value (10%).
    # Challenger (20 scores): 1 three times, 10 once, every other value twice -> shares
    # 0.15, 0.10 x 8, 0.05. PSI = (0.15-0.1) ln(1.5) + (0.05-0.1) ln(0.5) = 0.05 ln 3.
    champion = [float(v) for v in range(1, 11)]
    challenger = [1.0] * 3 + [float(v) for v in range(2, 10) for _ in range(2)] + [10.0]
    assert len(challenger) == 20
    assert guardrails.psi(champion, challenger) == pytest.approx(0.05 * math.log(3), rel=1e-9)
    assert guardrails.psi(champion, champion) == pytest.approx(0.0, abs=1e-12)


def test_psi_identical_distributions_near_zero_shifted_large() -> None:
    rng = np.random.default_rng(7)
    champion = rng.normal(0, 1, 5000)
    same = rng.normal(0, 1, 5000)
    shifted = rng.normal(1, 1, 5000)
    assert guardrails.psi(champion, same) < 0.02
    assert guardrails.psi(champion, shifted) > 0.5


def test_psi_on_discrete_scores_keeps_each_value_in_its_own_bin() -> None:
    champion = [0.0] * 70 + [1.0] * 30
    assert guardrails.psi(champion, [0.0] * 70 + [1.0] * 30) == pytest.approx(0.0, abs=1e-12)
    # 50/50 against 70/30: (0.5-0.7) ln(5/7) + (0.5-0.3) ln(5/3)
    expected = -0.2 * math.log(5 / 7) + 0.2 * math.log(5 / 3)
    assert guardrails.psi(champion, [0.0] * 50 + [1.0] * 50) == pytest.approx(expected, rel=1e-9)


def test_prediction_shift_guard() -> None:
    rng = np.random.default_rng(1)
    champion = stats("1", scores=list(rng.normal(0, 1, 500)))
    guard = PredictionShiftGuard(max_psi=0.25, min_requests=50)
    same = guardrails.prediction_shift(guard, champion, stats(scores=list(rng.normal(0, 1, 500))))
    moved = guardrails.prediction_shift(guard, champion, stats(scores=list(rng.normal(1.5, 1, 500))))
    short = guardrails.prediction_shift(guard, champion, stats(scores=list(rng.normal(0, 1, 49))))
    assert (same.status, moved.status, short.status) == ("passed", "failed", "waiting")
    assert "PSI" in moved.detail and "above max 0.25" in moved.detail


# -- quality -----------------------------------------------------------------------------------

@pytest.mark.parametrize("metric, champion_mean, challenger_mean, expected", [
    ("accuracy", 0.90, 0.87, "passed"),     # drop 0.03 <= 0.05
    ("accuracy", 0.90, 0.80, "failed"),     # drop 0.10
    ("accuracy", 0.90, 0.99, "passed"),
    ("abs_error", 10.0, 10.03, "passed"),   # lower is better: +0.03 error is within 0.05
    ("abs_error", 10.0, 10.2, "failed"),    # +0.2 error is worse
    ("abs_error", 10.0, 9.0, "passed"),     # a lower error is better, not a drop
])
def test_quality_direction(metric: str, champion_mean: float, challenger_mean: float, expected: str) -> None:
    guard = QualityGuard(metric=metric, max_drop=0.05, min_outcomes=50)  # type: ignore[arg-type]
    check = guardrails.quality(guard, stats("1", outcomes=100, outcome_mean=champion_mean),
                               stats(outcomes=100, outcome_mean=challenger_mean))
    assert check.status == expected


def test_quality_waits_for_outcomes_on_both_sides() -> None:
    guard = QualityGuard(min_outcomes=50)
    check = guardrails.quality(guard, stats("1", outcomes=10, outcome_mean=0.9),
                               stats(outcomes=500, outcome_mean=0.1))
    assert check.status == "waiting" and "champion 10" in check.detail


def test_shadow_leaves_out_outcomes_the_served_answer_drives() -> None:
    healthy = stats(outcomes=100, outcome_mean=0.5)
    champ = stats("1", outcomes=100, outcome_mean=0.5)
    for metric, in_shadow in (("label_rate", False), ("label_mean", False), ("accuracy", True)):
        spec = Guardrails(quality=QualityGuard(metric=metric))  # type: ignore[arg-type]
        names = [c.name for c in guardrails.check(spec, champ, healthy, shadow=True)]
        assert ("quality" in names) == in_shadow, metric
        assert "quality" in [c.name for c in guardrails.check(spec, champ, healthy, shadow=False)]


def test_check_runs_every_configured_guardrail() -> None:
    spec = Guardrails(prediction_shift=PredictionShiftGuard(), quality=QualityGuard())
    checks = guardrails.check(spec, stats("1"), stats(), shadow=False)
    assert [c.name for c in checks] == ["success_rate", "latency", "prediction_shift", "quality"]
    # no scores and no outcomes: those two wait, they do not pass
    assert [c.status for c in checks] == ["passed", "passed", "waiting", "waiting"]
    assert guardrails.check(Guardrails(success_rate=None, latency=None), stats("1"), stats(),
                            shadow=False) == []
