"""The A/B test on outcomes: does the challenger beat the champion on the A/B metric?

The rollout controller runs this at every check, so the test is looked at again and again as
outcomes arrive. A plain z-test read that way finds a "significant" difference far more often
than its alpha says (about 19% at 10 looks for alpha 0.05), which would promote models that are
no better. So the default method is valid under continuous monitoring:

- `sequential`: a mixture sequential probability ratio test (mSPRT; Johari, Koomen, Pekelis &
  Walsh, "Always Valid Inference", 2017 - what Optimizely runs) on the difference of means,
  with an always-valid p-value and a confidence sequence on the lift.
- `group_sequential`: Lan-DeMets O'Brien-Fleming-type alpha spending over the information
  fraction n / max_samples, boundaries computed for the looks actually taken.
- `fixed`: a two-proportion z-test (binary) or Welch's t-test (continuous) that decides only
  once, at max_samples.

Lift is always "challenger better" when positive: challenger - champion, and for a metric in
LOWER_IS_BETTER (abs_error) champion - challenger. Every interval, p-value and boundary below is
on that signed lift. Everything here is a pure function of the outcome counts (no state kept
between calls), so the controller stays a pure function too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special, stats

from mlplatform.rollout.plan import BINARY_METRICS, LOWER_IS_BETTER, ABTestSpec
from mlplatform.rollout.state import TestResult, VariantStats

__all__ = ["ab_test", "arm_variance", "information_fraction", "lift_variance", "msprt", "obf_boundaries",
           "sequential_verdicts", "two_proportion_z"]

# Earlier looks closer than this (in information fraction) to the next look are merged into it:
# they hold almost the same data, and merging bounds the cost of a long, often-checked test
# (at most 1/LOOK_TOLERANCE looks).
LOOK_TOLERANCE = 1e-3
_VAR_FLOOR = 1e-12  # two constant arms: no variance, but no division by zero either


def arm_variance(metric: str, n: np.ndarray | float, total: np.ndarray | float,
                 sumsq: np.ndarray | float) -> np.ndarray:
    """One arm's per-outcome variance, vectorised. Binary metrics: the Bernoulli p(1-p), floored
    at that of one success (or failure) in n: an arm with 100% accuracy would otherwise have zero
    variance and make any difference look infinitely certain (the floor binds only when an arm
    is all 0 or all 1). Continuous: the unbiased sample variance from the sum and sum of squares."""
    n = np.asarray(n, float)
    mean = np.asarray(total, float) / n
    if metric in BINARY_METRICS:
        return np.maximum(mean * (1 - mean), (1 - 1 / n) / n)
    return np.maximum(np.asarray(sumsq, float) - n * mean**2, 0.0) / np.maximum(n - 1, 1)


def lift_variance(metric: str, n_a: np.ndarray | float, sum_a: np.ndarray | float,
                  sumsq_a: np.ndarray | float, n_b: np.ndarray | float, sum_b: np.ndarray | float,
                  sumsq_b: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The signed lift (positive = challenger better) and its plug-in variance, Welch-style
    V = s_a^2/n_a + s_b^2/n_b, vectorised. `a` is the champion, `b` the challenger."""
    n_a, n_b = np.asarray(n_a, float), np.asarray(n_b, float)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    lift = sign * (np.asarray(sum_b, float) / n_b - np.asarray(sum_a, float) / n_a)
    var = arm_variance(metric, n_a, sum_a, sumsq_a) / n_a + arm_variance(metric, n_b, sum_b, sumsq_b) / n_b
    return lift, np.maximum(var, _VAR_FLOOR)


def msprt(lift: np.ndarray | float, variance: np.ndarray | float, tau: float,
          alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Always-valid p-value and confidence-sequence half-width of the mSPRT, vectorised.

    Written by hand because scipy has no sequential tests. The lift estimate is ~ N(theta, V);
    mixing the likelihood ratio against theta = 0 over theta ~ N(0, tau^2) gives the closed form
        Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 lift^2 / (2 V (V + tau^2)))
    (Johari et al. 2017, eq. for the normal mixture; with equal arms V = 2 sigma^2 / n it is
    their statistic). Lambda is a nonnegative martingale under no difference, so by Ville's
    inequality P(ever Lambda >= 1/alpha) <= alpha: p = min(1, 1/Lambda) may be read at every
    look. With V estimated from the data (plug-in) this holds asymptotically, as in Johari et al.;
    the tests check it by simulation from 50 outcomes per arm. Inverting Lambda(theta) < 1/alpha
    gives the confidence sequence
        lift +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log(1 + tau^2 / V))).
    The p-value is the current look's, not a running minimum (this module keeps no state): the
    decision is the first look with p <= alpha, after which the controller stops, so the two
    agree on every decision; a monotone p is the minimum over the stored timeline."""
    lift, variance = np.asarray(lift, float), np.asarray(variance, float)
    ratio = tau**2 / variance
    log_lambda = -0.5 * np.log1p(ratio) + lift**2 * ratio / (2 * variance * (1 + ratio))
    p_value = np.exp(-np.maximum(log_lambda, 0.0))
    half_width = np.sqrt(variance * (1 + ratio) / ratio * (2 * math.log(1 / alpha) + np.log1p(ratio)))
    return p_value, half_width


def sequential_verdicts(spec: ABTestSpec, n_a: np.ndarray | float, sum_a: np.ndarray | float,
                        sumsq_a: np.ndarray | float, n_b: np.ndarray | float,
                        sum_b: np.ndarray | float, sumsq_b: np.ndarray | float
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The `sequential` method on arrays of looks: (lift, ci_low, ci_high, p_value, verdict).
    ab_test calls this with scalars; the simulation tests call it on whole experiments at once.

    tau = min_effect: the mSPRT's boundary on |z| = |lift| / sqrt(V) is lowest (about 3.0 at
    alpha 0.05) where tau^2 / V is about 8-9, which is where an effect of exactly min_effect
    reaches |z| of 3 (min_effect^2 / V = 9). So the
    test is tuned to detect the minimum detectable effect as early as it can; bigger effects
    are still detected early, smaller ones (which are no reason to switch) are not chased."""
    lift, var = lift_variance(spec.metric, n_a, sum_a, sumsq_a, n_b, sum_b, sumsq_b)
    p_value, half = msprt(lift, var, spec.min_effect, spec.alpha)
    low, high = lift - half, lift + half
    n_min = np.minimum(np.asarray(n_a), np.asarray(n_b))
    reject = p_value <= spec.alpha
    at_max = n_min >= spec.max_samples if spec.max_samples is not None else np.zeros_like(reject)
    equivalent = (low > -spec.min_effect) & (high < spec.min_effect)
    verdict = np.select(
        [n_min < spec.min_samples, reject & (lift > 0), reject & (lift < 0), equivalent | at_max],
        ["not_enough_data", "challenger", "champion", "no_difference"], "continue")
    return lift, low, high, p_value, verdict


def information_fraction(spec: ABTestSpec, champion: VariantStats,
                         challenger: VariantStats) -> float | None:
    """n / max_samples with n the smaller arm's outcomes, at most 1 (None without max_samples).
    The controller stores it at every group-sequential look and passes the earlier ones back
    as `previous_looks`."""
    if spec.max_samples is None:
        return None
    return min(1.0, min(champion.outcomes, challenger.outcomes) / spec.max_samples)


def _obf_spent(alpha: float, t: float, sides: int) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending, alpha/sides per side as gsDesign's sfLDOF and
    rpact's asOF do: sides * 2 (1 - Phi(z_{1 - alpha/(2 sides)} / sqrt(t))). It spends almost
    nothing early (an early look needs overwhelming evidence) and ends at alpha."""
    return float(sides * 2 * special.ndtr(-special.ndtri(1 - alpha / (2 * sides)) / math.sqrt(t)))


def _simpson(low: float, high: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    points = max(101, min(2001, 2 * math.ceil((high - low) / step / 2) + 1))
    x = np.linspace(low, high, points)
    w = np.ones(points)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return x, w * (x[1] - x[0]) / 3


def _excess_crossing(b: float, mass: np.ndarray, x: np.ndarray, sd: float, sides: int,
                     target: float) -> float:
    """P(continue so far, cross +-b now) - target, from the density mass on the grid x."""
    upper = special.ndtr((x - b) / sd)
    lower = special.ndtr((-b - x) / sd) if sides == 2 else 0.0
    return float(np.sum(mass * (upper + lower))) - target


@lru_cache(maxsize=512)
def _boundaries(alpha: float, fractions: tuple[float, ...], sides: int) -> tuple[float, ...]:
    """Armitage-McPherson-Rowe recursion on the score S_k = Z_k sqrt(t_k) (a Brownian motion in
    t under no difference): carry the density of S on the continuation region from look to look
    (Simpson's rule on a grid finer than the increment's sd) and solve, at each look, for the
    boundary whose crossing probability is this look's share of the spending. Deterministic and
    O(looks * grid^2), unlike a K-dimensional multivariate normal CDF (scipy's is Monte-Carlo
    and slow beyond a few dimensions, and a long A/B test has many looks)."""
    out: list[float] = []
    x = weights = density = None
    t_prev = 0.0
    for t in fractions:
        target = _obf_spent(alpha, t, sides) - (_obf_spent(alpha, t_prev, sides) if t_prev > 0 else 0.0)
        sd = math.sqrt(t - t_prev)
        if density is None:
            b = math.sqrt(t) * float(special.ndtri(1 - target / sides)) if target > 1e-14 else math.inf
        else:
            args = (weights * density, x, sd, sides, target)
            hi = 12 * math.sqrt(t)
            if target <= 1e-14 or _excess_crossing(hi, *args) >= 0:
                b = math.inf
            else:
                b = optimize.brentq(_excess_crossing, 0.0, hi, args=args, xtol=1e-10)
        out.append(b / math.sqrt(t))
        top = min(b, 8.5 * math.sqrt(t))
        bottom = -top if sides == 2 else -8.5 * math.sqrt(t)
        y, w_new = _simpson(bottom, top, min(sd / 2, (top - bottom) / 100))
        if density is None:
            density = np.exp(-0.5 * y**2 / t) / math.sqrt(2 * math.pi * t)
        else:
            kernel = np.exp(-0.5 * ((y[None, :] - x[:, None]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
            density = (weights * density) @ kernel
        x, weights, t_prev = y, w_new, t
    return tuple(out)


def obf_boundaries(alpha: float, fractions: Sequence[float], sides: int = 2) -> list[float]:
    """z-scale boundaries of the Lan-DeMets O'Brien-Fleming-type design at the given increasing
    information fractions (two-sided: reject when |Z_k| >= c_k; one-sided: Z_k >= c_k). A look
    with (almost) nothing to spend gets an infinite boundary."""
    ts = [float(t) for t in fractions]
    if any(not 0 < t <= 1 for t in ts) or any(b <= a for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError(f"information fractions must increase within (0, 1], got {list(fractions)}")
    return list(_boundaries(float(alpha), tuple(round(t, 12) for t in ts), sides))


def _looks(previous_looks: Sequence[float], current: float) -> tuple[float, ...]:
    """The earlier looks (those at least LOOK_TOLERANCE apart and before the current one) plus
    the current. Passing a look that did not happen only makes the test more conservative."""
    kept: list[float] = []
    for t in sorted(min(1.0, float(t)) for t in previous_looks if t > 0):
        if t <= current - LOOK_TOLERANCE and (not kept or t >= kept[-1] + LOOK_TOLERANCE):
            kept.append(t)
    return (*kept, current)


def two_proportion_z(n_a: np.ndarray | float, sum_a: np.ndarray | float, n_b: np.ndarray | float,
                     sum_b: np.ndarray | float) -> np.ndarray:
    """The classical two-proportion z statistic (pooled variance under no difference), challenger
    minus champion, vectorised. scipy has no two-proportion test; z^2 is Pearson's chi-square of
    the 2x2 table (scipy.stats.chi2_contingency without correction)."""
    n_a, n_b = np.asarray(n_a, float), np.asarray(n_b, float)
    pooled = (np.asarray(sum_a, float) + np.asarray(sum_b, float)) / (n_a + n_b)
    se = np.sqrt(np.maximum(pooled * (1 - pooled), _VAR_FLOOR) * (1 / n_a + 1 / n_b))
    return (np.asarray(sum_b, float) / n_b - np.asarray(sum_a, float) / n_a) / se


def _fixed(spec: ABTestSpec, a: VariantStats, b: VariantStats, lift: float,
           var: float) -> tuple[float, float, float, str]:
    """(p, ci_low, ci_high, what): two-proportion z (binary) or Welch's t (continuous)."""
    if spec.metric in BINARY_METRICS:
        z = float(two_proportion_z(a.outcomes, a.outcome_sum, b.outcomes, b.outcome_sum))
        p, crit = float(2 * special.ndtr(-abs(z))), float(special.ndtri(1 - spec.alpha / 2))
        what = f"two-proportion z={z:.3f}"
    else:
        va, vb = (float(arm_variance(spec.metric, s.outcomes, s.outcome_sum, s.outcome_sumsq)) / s.outcomes
                  for s in (a, b))
        res = stats.ttest_ind_from_stats(b.outcome_mean, math.sqrt(vb * b.outcomes), b.outcomes,
                                         a.outcome_mean, math.sqrt(va * a.outcomes), a.outcomes,
                                         equal_var=False)
        # Welch-Satterthwaite degrees of freedom, for the interval (scipy's from_stats gives none).
        df = (va + vb) ** 2 / max(va**2 / (a.outcomes - 1) + vb**2 / (b.outcomes - 1), _VAR_FLOOR**2)
        p, crit = float(res.pvalue), float(stats.t.ppf(1 - spec.alpha / 2, df))
        t_stat = float(res.statistic) * (-1 if spec.metric in LOWER_IS_BETTER else 1)  # on the lift
        what = f"Welch t={t_stat:.3f} (df {df:.0f})"
    half = crit * math.sqrt(var)
    return p, lift - half, lift + half, what


def ab_test(spec: ABTestSpec, champion: VariantStats, challenger: VariantStats,
            previous_looks: Sequence[float] = ()) -> TestResult:
    """The A/B test at one look, on all outcomes so far (cumulative per variant).

    Verdict: `not_enough_data` while either arm has fewer than min_samples outcomes;
    `challenger` / `champion` when the test rejects no difference (by the lift's sign);
    `no_difference` when the method's interval on the lift lies inside (-min_effect, min_effect)
    (a lift smaller than the minimum detectable effect is no reason to switch), or when the
    test reaches max_samples without rejecting; `continue` otherwise.

    p_value: `sequential` the always-valid p-value; `fixed` the classical one; `group_sequential`
    the nominal p-value of this look's z (the decision is |z| against the boundary, in detail).
    ci_low/ci_high: the confidence sequence, the plain CI, or the repeated CI (None while the
    group-sequential boundary is infinite: nothing spent yet, no rejection possible).

    `previous_looks`: for `group_sequential`, the information fractions (information_fraction)
    of the earlier looks at which this test was evaluated (verdict other than not_enough_data),
    in any order; fractions at or after the current one are ignored; ignored by the other
    methods. The information fraction is n / max_samples with n the smaller arm's outcomes."""
    base = dict(metric=spec.metric, method=spec.method, n_champion=champion.outcomes,
                n_challenger=challenger.outcomes, mean_champion=champion.outcome_mean,
                mean_challenger=challenger.outcome_mean)
    lower = spec.metric in LOWER_IS_BETTER
    direction = ("champion - challenger: lower is better, positive lift = challenger better"
                 if lower else "challenger - champion")
    n_min = min(champion.outcomes, challenger.outcomes)
    if n_min < spec.min_samples:
        lift = None
        if champion.outcome_mean is not None and challenger.outcome_mean is not None:
            lift = (champion.outcome_mean - challenger.outcome_mean) * (1 if lower else -1)
        return TestResult(**base, lift=lift, verdict="not_enough_data",
                          detail=f"{spec.min_samples} outcomes per variant needed before deciding "
                                 f"(champion {champion.outcomes}, challenger {challenger.outcomes})")
    counts = (champion.outcomes, champion.outcome_sum, champion.outcome_sumsq, challenger.outcomes,
              challenger.outcome_sum, challenger.outcome_sumsq)
    level = f"{1 - spec.alpha:.0%}"

    if spec.method == "sequential":
        lift_a, low_a, high_a, p_a, verdict_a = sequential_verdicts(spec, *counts)
        lift, low, high, p = float(lift_a), float(low_a), float(high_a), float(p_a)
        verdict = str(verdict_a)
        detail = (f"mSPRT (normal mixture, tau = min_effect {spec.min_effect:g}): always-valid "
                  f"p={p:.4g}, {level} confidence sequence [{low:.4g}, {high:.4g}] on the lift "
                  f"({direction}) {lift:.4g}")
        if spec.max_samples is not None:
            detail += f"; information fraction {information_fraction(spec, champion, challenger):.3f}"
        return TestResult(**base, lift=lift, ci_low=low, ci_high=high, p_value=p, verdict=verdict,
                          detail=detail)

    lift_arr, var_arr = lift_variance(spec.metric, *counts)
    lift, var = float(lift_arr), float(var_arr)
    final = spec.max_samples is not None and n_min >= spec.max_samples
    if spec.method == "fixed":
        p, low, high, what = _fixed(spec, champion, challenger, lift, var)
        if not final:
            verdict = "continue"
        elif p <= spec.alpha:
            verdict = "challenger" if lift > 0 else "champion"
        else:
            verdict = "no_difference"
        detail = (f"fixed test ({what}): p={p:.4g}, {level} CI [{low:.4g}, {high:.4g}] on the lift "
                  f"({direction}) {lift:.4g}; "
                  + ("decided at max_samples" if final else
                     f"decides only at max_samples={spec.max_samples} (valid for one look)"))
        return TestResult(**base, lift=lift, ci_low=low, ci_high=high, p_value=p, verdict=verdict,
                          detail=detail)

    # group_sequential
    t = information_fraction(spec, champion, challenger)
    assert t is not None  # the spec's validator requires max_samples for group_sequential
    looks = _looks(previous_looks, t)
    bound = obf_boundaries(spec.alpha, looks)[-1]
    z = lift / math.sqrt(var)
    p = float(2 * special.ndtr(-abs(z)))
    # Repeated confidence interval (Jennison & Turnbull): lift +- c_k se holds at every look.
    low, high = (lift - bound * math.sqrt(var), lift + bound * math.sqrt(var))
    if abs(z) >= bound:
        verdict = "challenger" if lift > 0 else "champion"
    elif final or (-spec.min_effect < low and high < spec.min_effect):
        verdict = "no_difference"
    else:
        verdict = "continue"
    detail = (f"group sequential (Lan-DeMets O'Brien-Fleming spending), look {len(looks)} at "
              f"information fraction {t:.3f}: |z|={abs(z):.3f} vs boundary {bound:.3f} (nominal "
              f"p={p:.4g}), {level} repeated CI [{low:.4g}, {high:.4g}] on the lift ({direction}) "
              f"{lift:.4g}")
    finite = math.isfinite(bound)
    return TestResult(**base, lift=lift, ci_low=low if finite else None,
                      ci_high=high if finite else None, p_value=p, verdict=verdict, detail=detail)
