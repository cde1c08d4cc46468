"""The rollout's guardrails: one check's verdict on the challenger against the champion.

Every guardrail compares the two versions on the same window of the same traffic (the
observations of one check), not the challenger with fixed numbers alone: a slow night or a
flaky upstream hits both, and only the difference is the challenger's doing. So each side
needs enough requests (or outcomes) before a guardrail judges; short of that it says
`waiting`, never `passed`, and the controller never promotes on a waiting check.

Every `detail` is a sentence for a person reading an alert, with the numbers behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from mlplatform.rollout.plan import (
    LOWER_IS_BETTER,
    Guardrails,
    LatencyGuard,
    PredictionShiftGuard,
    QualityGuard,
    SuccessRateGuard,
)
from mlplatform.rollout.state import GuardrailCheck, VariantStats

# A bin that one side never hits would make PSI infinite (log of zero); the usual practice is a
# small floor on the share. 1e-4 keeps one empty decile at about 0.1 * ln(1000) ~ 0.7, i.e. a
# large shift, which an empty decile is.
PSI_EPSILON = 1e-4
PSI_BINS = 10  # the champion's deciles
Name = Literal["success_rate", "latency", "prediction_shift", "quality"]


def check(spec: Guardrails, window_champion: VariantStats, window_challenger: VariantStats, *,
          shadow: bool) -> list[GuardrailCheck]:
    """Every configured guardrail on one window: passed, failed or waiting (too little traffic).

    `shadow`: the challenger answered nobody (it got a copy of the champion's requests), so an
    outcome that the served answer drives (label_rate, label_mean) says nothing about it and the
    quality guardrail is left out; a per-prediction metric (accuracy, abs_error) still holds,
    since the shadow's own answer is compared with the label."""
    checks: list[GuardrailCheck] = []
    if spec.success_rate is not None:
        checks.append(success_rate(spec.success_rate, window_champion, window_challenger))
    if spec.latency is not None:
        checks.append(latency(spec.latency, window_champion, window_challenger))
    if spec.prediction_shift is not None:
        checks.append(prediction_shift(spec.prediction_shift, window_champion, window_challenger))
    if spec.quality is not None and not (shadow and spec.quality.metric in ("label_rate", "label_mean")):
        checks.append(quality(spec.quality, window_champion, window_challenger))
    return checks


def _short(name: Name, what: str, champion: int, challenger: int, needs: int) -> GuardrailCheck | None:
    """`waiting` when either side has fewer than `needs` of `what` in the window."""
    if champion >= needs and challenger >= needs:
        return None
    return GuardrailCheck(name=name, status="waiting",
                          detail=f"{name.replace('_', ' ')}: not enough {what} yet: challenger "
                          f"{challenger}, champion {champion} (needs {needs} on each side)")


def success_rate(guard: SuccessRateGuard, champion: VariantStats, challenger: VariantStats) -> GuardrailCheck:
    """Above the floor `min` and at most `max_drop` below the champion's rate."""
    short = _short("success_rate", "requests", champion.total, challenger.total, guard.min_requests)
    if short is not None:
        return short
    mine, theirs = challenger.success_rate, champion.success_rate
    assert mine is not None and theirs is not None  # both totals >= min_requests >= 1
    floor = max(guard.min, theirs - guard.max_drop)
    text = (f"success rate {mine:.3f} (champion {theirs:.3f}, "
            f"{challenger.errors} errors in {challenger.total})")
    problems = []
    if mine < guard.min:
        problems.append(f"below min {guard.min:g}")
    if mine < theirs - guard.max_drop:
        problems.append(f"more than {guard.max_drop:g} below the champion")
    return GuardrailCheck(name="success_rate", status="failed" if problems else "passed",
                          challenger=mine, champion=theirs, threshold=floor,
                          detail=f"{text}, {' and '.join(problems)}" if problems
                          else f"{text}, at least {floor:.3f}")


def latency(guard: LatencyGuard, champion: VariantStats, challenger: VariantStats) -> GuardrailCheck:
    """p99 at most `max_ratio` times the champion's plus `slack_ms`, and at most `max_ms` when set."""
    short = _short("latency", "answered requests", champion.requests, challenger.requests,
                   guard.min_requests)
    if short is None and (champion.p99_ms is None or challenger.p99_ms is None):
        short = GuardrailCheck(name="latency", status="waiting",
                               detail="latency: no p99 measured yet on "
                               f"{'the champion' if champion.p99_ms is None else 'the challenger'}")
    if short is not None:
        return short
    mine, theirs = challenger.p99_ms, champion.p99_ms
    assert mine is not None and theirs is not None
    bound = theirs * guard.max_ratio + guard.slack_ms
    if guard.max_ms is not None:
        bound = min(bound, guard.max_ms)
    text = f"p99 latency {mine:.1f} ms (champion {theirs:.1f} ms)"
    problems = []
    if mine > theirs * guard.max_ratio + guard.slack_ms:
        problems.append(f"above {guard.max_ratio:g} x champion + {guard.slack_ms:g} ms "
                        f"= {theirs * guard.max_ratio + guard.slack_ms:.1f} ms")
    if guard.max_ms is not None and mine > guard.max_ms:
        problems.append(f"above max {guard.max_ms:g} ms")
    return GuardrailCheck(name="latency", status="failed" if problems else "passed",
                          challenger=mine, champion=theirs, threshold=bound,
                          detail=f"{text}, {' and '.join(problems)}" if problems
                          else f"{text}, within {bound:.1f} ms")


def psi(expected: Sequence[float], actual: Sequence[float], *, bins: int = PSI_BINS,
        epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of `actual` against `expected`, over `expected`'s quantiles.

    Hand-written because neither scipy nor numpy has PSI: sum over bins of
    (a - e) * ln(a / e), e and a the two shares per bin. The bins are cut at the expected
    side's quantiles (deciles by default), so each holds ~1/bins of it; repeated cut points
    (discrete scores) are merged, so every distinct value keeps its own bin. Bin i holds
    edges[i-1] < x <= edges[i]."""
    e = np.asarray(expected, dtype="float64")
    a = np.asarray(actual, dtype="float64")
    if e.size == 0 or a.size == 0:
        raise ValueError("psi needs scores on both sides")
    edges = np.unique(np.quantile(e, np.arange(1, bins) / bins))
    share_e = np.bincount(np.searchsorted(edges, e, side="left"), minlength=edges.size + 1) / e.size
    share_a = np.bincount(np.searchsorted(edges, a, side="left"), minlength=edges.size + 1) / a.size
    share_e = np.where(share_e == 0, epsilon, share_e)
    share_a = np.where(share_a == 0, epsilon, share_a)
    return float(np.sum((share_a - share_e) * np.log(share_a / share_e)))


def prediction_shift(guard: PredictionShiftGuard, champion: VariantStats,
                     challenger: VariantStats) -> GuardrailCheck:
    """The challenger's scores against the champion's on the same traffic: PSI at most `max_psi`."""
    short = _short("prediction_shift", "scores", len(champion.scores), len(challenger.scores),
                   guard.min_requests)
    if short is not None:
        return short
    value = psi(champion.scores, challenger.scores)
    text = (f"prediction shift PSI {value:.3f} of the challenger's {len(challenger.scores)} scores "
            f"against the champion's {len(champion.scores)}")
    failed = value > guard.max_psi
    return GuardrailCheck(name="prediction_shift", status="failed" if failed else "passed",
                          challenger=value, threshold=guard.max_psi,
                          detail=f"{text}, above max {guard.max_psi:g}" if failed
                          else f"{text}, within {guard.max_psi:g}")


def quality(guard: QualityGuard, champion: VariantStats, challenger: VariantStats) -> GuardrailCheck:
    """Live quality from feedback: not worse than the champion's by more than `max_drop`."""
    short = _short("quality", "outcomes (feedback)", champion.outcomes, challenger.outcomes,
                   guard.min_outcomes)
    if short is not None:
        return short
    mine, theirs = challenger.outcome_mean, champion.outcome_mean
    assert mine is not None and theirs is not None
    lower = guard.metric in LOWER_IS_BETTER
    bound = theirs + guard.max_drop if lower else theirs - guard.max_drop
    failed = mine > bound if lower else mine < bound
    text = f"{guard.metric} {mine:.3f} (champion {theirs:.3f}, {challenger.outcomes} outcomes)"
    worse = "above" if lower else "below"
    return GuardrailCheck(name="quality", status="failed" if failed else "passed",
                          challenger=mine, champion=theirs, threshold=bound,
                          detail=f"{text}, worse than the champion by more than {guard.max_drop:g} "
                          f"({worse} {bound:.3f})" if failed
                          else f"{text}, within {guard.max_drop:g} of the champion")
