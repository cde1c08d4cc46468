"""The A/B test (mlplatform.rollout.stats): the sequential test keeps its false-positive rate
under continuous peeking where a plain z-test does not, it finds a true minimum effect, and its
numbers agree with independent references (numerical integration of the mSPRT mixture, the
published O'Brien-Fleming spending boundaries of GroupSeq and rpact, a multivariate-normal
integration, scipy's chi-square and t-tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from mlplatform.rollout.plan import ABTestSpec
from mlplatform.rollout.state import VariantStats
from mlplatform.rollout.stats import (
    ab_test,
    information_fraction,
    msprt,
    obf_boundaries,
    sequential_verdicts,
    two_proportion_z,
)

ALPHA = 0.05
UNDECIDED = ("continue", "not_enough_data")


def _arm(version: str, values: np.ndarray | list[float]) -> VariantStats:
    v = np.asarray(values, float)
    return VariantStats(version=version, outcomes=len(v), outcome_sum=float(v.sum()),
                        outcome_sumsq=float((v**2).sum()))


def _counts(version: str, n: int, total: float, sumsq: float | None = None) -> VariantStats:
    return VariantStats(version=version, outcomes=n, outcome_sum=total,
                        outcome_sumsq=total if sumsq is None else sumsq)


def _binary_experiments(p_a: float, p_b: float, experiments: int, batches: int, batch: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative successes per arm after each batch: (n per look, sums champion, sums challenger)."""
    rng = np.random.default_rng(seed)
    s_a = rng.binomial(batch, p_a, size=(experiments, batches)).cumsum(axis=1).astype(float)
    s_b = rng.binomial(batch, p_b, size=(experiments, batches)).cumsum(axis=1).astype(float)
    n = np.broadcast_to(batch * np.arange(1, batches + 1, dtype=float), s_a.shape)
    return n, s_a, s_b


def _first_decision(verdicts: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each experiment's first decision (what the controller acts on) and its sample size."""
    decided = ~np.isin(verdicts, UNDECIDED)
    first = decided.argmax(axis=1)
    rows = np.arange(len(verdicts))
    verdict = np.where(decided.any(axis=1), verdicts[rows, first], "continue")
    return verdict, np.where(decided.any(axis=1), n[rows, first], np.nan)


# --- 1. Simulation: peeking ------------------------------------------------------------------

def test_sequential_test_keeps_alpha_under_peeking_where_a_naive_z_test_does_not() -> None:
    experiments, batches, batch = 1000, 40, 50  # looks after every 50 per arm, up to 2,000
    spec = ABTestSpec(metric="accuracy", min_samples=50, min_effect=0.05, alpha=ALPHA)
    n, s_a, s_b = _binary_experiments(0.3, 0.3, experiments, batches, batch, seed=7)

    # The very function ab_test runs for `sequential`, on every look of every experiment.
    _, _, _, p, verdicts = sequential_verdicts(spec, n, s_a, s_a, n, s_b, s_b)
    ever_rejected = float((p <= ALPHA).any(axis=1).mean())  # ignores equivalence stops: an upper bound
    first, _ = _first_decision(verdicts, n)
    false_decisions = float(np.isin(first, ("challenger", "champion")).mean())
    naive = float((np.abs(two_proportion_z(n, s_a, n, s_b)) >= stats.norm.ppf(1 - ALPHA / 2))
                  .any(axis=1).mean())
    naive_5 = float((np.abs(two_proportion_z(n, s_a, n, s_b))[:, 7::8] >= stats.norm.ppf(1 - ALPHA / 2))
                    .any(axis=1).mean())
    slack = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / experiments)
    report = (f"no true difference, {experiments} experiments x {batches} looks: mSPRT ever p<=alpha "
              f"{ever_rejected:.3f}, controller's false decisions {false_decisions:.3f}; naive z-test "
              f"peeked at 40 looks {naive:.3f}, at 5 looks {naive_5:.3f} (alpha {ALPHA})")
    print("\n" + report)
    assert ever_rejected <= slack, report
    assert false_decisions <= ever_rejected, report
    assert naive > 2 * ALPHA, report  # peeking matters (published: ~14% at 5 looks, ~19% at 10)
    assert naive_5 > 0.10, report


def test_sequential_test_finds_a_true_lift_of_the_minimum_effect() -> None:
    experiments, batches, batch = 1000, 80, 50  # up to 4,000 per arm
    spec = ABTestSpec(metric="accuracy", min_samples=50, min_effect=0.05, alpha=ALPHA)
    n, s_a, s_b = _binary_experiments(0.30, 0.35, experiments, batches, batch, seed=11)
    _, _, _, _, verdicts = sequential_verdicts(spec, n, s_a, s_a, n, s_b, s_b)
    first, at = _first_decision(verdicts, n)
    power = float((first == "challenger").mean())
    wrong = float((first == "champion").mean())
    median_n = float(np.nanmedian(at[first == "challenger"]))
    report = (f"true lift 0.05 = min_effect (0.30 -> 0.35): challenger in {power:.3f} of runs, champion "
              f"in {wrong:.3f}, undecided at 4,000 per arm {float((first == 'continue').mean()):.3f}, "
              f"median sample size at decision {median_n:.0f} per arm")
    print("\n" + report)
    assert power > 0.5, report
    assert wrong <= ALPHA, report


def test_the_vectorised_simulation_path_is_what_ab_test_decides() -> None:
    spec = ABTestSpec(metric="accuracy", min_samples=100, min_effect=0.05, alpha=ALPHA)
    n, s_a, s_b = _binary_experiments(0.30, 0.36, 25, 40, 50, seed=3)
    lift, low, high, p, verdicts = sequential_verdicts(spec, n, s_a, s_a, n, s_b, s_b)
    for i in range(n.shape[0]):
        for k in range(n.shape[1]):
            r = ab_test(spec, _counts("a", int(n[i, k]), s_a[i, k]), _counts("b", int(n[i, k]), s_b[i, k]))
            assert r.verdict == verdicts[i, k]
            if r.verdict != "not_enough_data":
                assert (r.lift, r.ci_low, r.ci_high, r.p_value) == pytest.approx(
                    (lift[i, k], low[i, k], high[i, k], p[i, k]), abs=1e-12)


def test_group_sequential_keeps_alpha_at_its_looks() -> None:
    """The real ab_test, looked at 5 times with the earlier looks passed back, as the controller does."""
    experiments, looks, batch = 4000, 5, 200
    spec = ABTestSpec(metric="label_rate", method="group_sequential", min_samples=100, min_effect=0.001,
                      max_samples=looks * batch, alpha=ALPHA)
    n, s_a, s_b = _binary_experiments(0.3, 0.3, experiments, looks, batch, seed=5)
    rejected = 0
    for i in range(experiments):
        seen: list[float] = []
        for k in range(looks):
            a, b = _counts("a", int(n[i, k]), s_a[i, k]), _counts("b", int(n[i, k]), s_b[i, k])
            r = ab_test(spec, a, b, previous_looks=seen)
            seen.append(information_fraction(spec, a, b))
            if r.verdict not in UNDECIDED:
                rejected += r.verdict in ("challenger", "champion")
                break
    rate = rejected / experiments
    se = math.sqrt(ALPHA * (1 - ALPHA) / experiments)
    report = f"group sequential, 5 looks, no difference: false-positive rate {rate:.3f}"
    print("\n" + report)
    assert ALPHA - 3 * se <= rate <= ALPHA + 2.5 * se, report


# --- 2. Independent references --------------------------------------------------------------

@pytest.mark.parametrize("lift,var,tau", [(0.04, 2e-4, 0.02), (0.01, 1e-5, 0.05), (-0.3, 0.01, 0.1),
                                          (1.5, 0.2, 0.5)])
def test_msprt_closed_form_is_the_normal_mixture_of_likelihood_ratios(lift: float, var: float,
                                                                      tau: float) -> None:
    def mixture(observed: float) -> float:
        def integrand(theta: float) -> float:  # N(observed; theta, V) / N(observed; 0, V) x prior
            log_lr = (observed**2 - (observed - theta) ** 2) / (2 * var)
            return math.exp(log_lr) * stats.norm.pdf(theta, 0, tau)
        return integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-10, limit=200)[0]

    p, half = msprt(lift, var, tau, ALPHA)
    lam = mixture(lift)
    assert float(p) == pytest.approx(min(1.0, 1 / lam), rel=1e-7)
    # The confidence sequence's ends are where the mixture ratio against theta reaches 1/alpha.
    assert mixture(float(half)) == pytest.approx(1 / ALPHA, rel=1e-7)
    assert float(msprt(0.0, var, tau, ALPHA)[0]) == 1.0 and mixture(0.0) < 1


def test_obf_boundaries_match_published_values() -> None:
    # GroupSeq's tests (rpahl/GroupSeq, tests/testthat/test-GroupSeq.R): Lan-DeMets O'Brien-Fleming,
    # 4 equally spaced looks, two-sided alpha 0.05. (Our grid converges to 2.01409 for the last;
    # GroupSeq's coarser integration gives 2.014057.)
    assert obf_boundaries(0.05, [0.25, 0.5, 0.75, 1]) == pytest.approx(
        [4.332634, 2.963129, 2.35902, 2.014057], abs=1e-4)
    # rpact's tests (test-f_design_group_sequential.R, design x7): asOF, kMax 3, one-sided alpha 0.03.
    assert obf_boundaries(0.03, [1 / 3, 2 / 3, 1], sides=1) == pytest.approx(
        [3.5815302, 2.417863, 1.9175839], abs=1e-5)
    # The textbook 5-look table (gsDesign sfLDOF / rpact asOF, two-sided 0.05).
    assert obf_boundaries(0.05, [0.2, 0.4, 0.6, 0.8, 1]) == pytest.approx(
        [4.877, 3.357, 2.680, 2.290, 2.031], abs=1e-3)


def test_obf_boundaries_spend_alpha_by_an_independent_multivariate_normal_integration() -> None:
    looks = [0.15, 0.4, 0.55, 0.8, 1.0]  # unequal, as actual looks are
    bounds = np.array(obf_boundaries(ALPHA, looks))
    t = np.array(looks)
    corr = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))  # Brownian-motion z-statistics
    for k in range(1, len(looks) + 1):
        mvn = stats.multivariate_normal(mean=np.zeros(k), cov=corr[:k, :k])
        stay = mvn.cdf(bounds[:k], lower_limit=-bounds[:k], rng=np.random.default_rng(k))
        spent = 4 * stats.norm.sf(stats.norm.isf(ALPHA / 4) / math.sqrt(looks[k - 1]))
        assert 1 - stay == pytest.approx(spent, abs=2e-5)


def test_two_proportion_z_is_pearsons_chi_square() -> None:
    n_a, s_a, n_b, s_b = 1200, 355, 1100, 371
    z = float(two_proportion_z(n_a, s_a, n_b, s_b))
    chi2, p, _, _ = stats.chi2_contingency([[s_a, n_a - s_a], [s_b, n_b - s_b]], correction=False)
    assert z**2 == pytest.approx(chi2, rel=1e-10) and z > 0
    spec = ABTestSpec(metric="accuracy", method="fixed", max_samples=1000, alpha=ALPHA)
    r = ab_test(spec, _counts("a", n_a, s_a), _counts("b", n_b, s_b))
    assert r.p_value == pytest.approx(p, rel=1e-10)
    p_a, p_b = s_a / n_a, s_b / n_b
    half = stats.norm.ppf(0.975) * math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)  # Wald
    assert (r.ci_low, r.ci_high) == pytest.approx((p_b - p_a - half, p_b - p_a + half), rel=1e-10)
    assert r.verdict == ("challenger" if p <= ALPHA else "no_difference")


@pytest.mark.parametrize("metric", ["label_mean", "abs_error"])
def test_welch_t_matches_scipy_on_the_raw_outcomes(metric: str) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, 1.0, 800), rng.gamma(2.0, 1.1, 500)
    spec = ABTestSpec(metric=metric, method="fixed", max_samples=400, alpha=ALPHA, min_effect=0.1)
    r = ab_test(spec, _arm("a", a), _arm("b", b))
    ref = stats.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(1 - ALPHA)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    if metric == "abs_error":  # lower is better: the lift is champion - challenger
        assert (r.ci_low, r.ci_high) == pytest.approx((-ci.high, -ci.low), rel=1e-8)
        assert r.lift == pytest.approx(a.mean() - b.mean()) and r.verdict == "champion"
    else:
        assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-8)
        assert r.verdict == "challenger"


# --- 3. Verdicts ----------------------------------------------------------------------------

METHODS = [dict(method="sequential"), dict(method="group_sequential", max_samples=20000),
           dict(method="fixed", max_samples=2000)]


@pytest.mark.parametrize("design", METHODS, ids=lambda d: d["method"])
def test_not_enough_data_below_min_samples(design: dict) -> None:
    spec = ABTestSpec(metric="accuracy", min_samples=300, **design)
    r = ab_test(spec, _counts("a", 5000, 1000), _counts("b", 299, 290))
    assert r.verdict == "not_enough_data" and r.p_value is None
    assert r.lift == pytest.approx(290 / 299 - 0.2) and "300" in r.detail


@pytest.mark.parametrize("design", METHODS, ids=lambda d: d["method"])
def test_a_large_effect_decides_either_way(design: dict) -> None:
    spec = ABTestSpec(metric="accuracy", min_effect=0.02, **design)
    a, b = _counts("a", 2000, 1400), _counts("b", 2000, 1600)  # 0.70 vs 0.80
    better, worse = ab_test(spec, a, b), ab_test(spec, b, a)
    assert better.verdict == "challenger" and better.lift == pytest.approx(0.1)
    assert worse.verdict == "champion" and worse.lift == pytest.approx(-0.1)
    assert better.ci_low > 0 and worse.ci_high < 0


def test_lower_is_better_flips_the_sign() -> None:
    rng = np.random.default_rng(2)
    spec = ABTestSpec(metric="abs_error", min_effect=0.05)
    champion, challenger = _arm("a", rng.exponential(1.0, 3000)), _arm("b", rng.exponential(0.7, 3000))
    r = ab_test(spec, champion, challenger)
    assert r.verdict == "challenger" and r.lift > 0.2 and r.ci_low > 0
    assert r.mean_challenger < r.mean_champion and "lower is better" in r.detail
    assert ab_test(spec, challenger, champion).verdict == "champion"
    same = ABTestSpec(metric="label_mean", min_effect=0.05)  # the same numbers, higher is better
    assert ab_test(same, champion, challenger).verdict == "champion"


def test_equivalence_gives_no_difference() -> None:
    spec = ABTestSpec(metric="accuracy", min_effect=0.02)
    r = ab_test(spec, _counts("a", 20000, 16000), _counts("b", 20000, 16000))
    assert r.verdict == "no_difference" and -0.02 < r.ci_low < 0 < r.ci_high < 0.02
    assert r.p_value == 1.0
    # Fewer outcomes: the interval is still wider than the minimum effect, so keep going.
    assert ab_test(spec, _counts("a", 1000, 800), _counts("b", 1000, 800)).verdict == "continue"
    # Continuous: identical distributions, many outcomes.
    rng = np.random.default_rng(4)
    cont = ABTestSpec(metric="label_mean", min_effect=0.1)
    r = ab_test(cont, _arm("a", rng.normal(5, 1, 20000)), _arm("b", rng.normal(5, 1, 20000)))
    assert r.verdict == "no_difference"


def test_max_samples_without_rejection_is_no_difference() -> None:
    a, b = _counts("a", 1000, 300), _counts("b", 1000, 310)
    for method in ("sequential", "group_sequential", "fixed"):
        spec = ABTestSpec(metric="accuracy", method=method, max_samples=1000, min_effect=0.001)
        assert ab_test(spec, a, b).verdict == "no_difference", method
        before = ab_test(spec, _counts("a", 999, 300), _counts("b", 999, 310))
        assert before.verdict == "continue", method


def test_fixed_decides_only_at_max_samples() -> None:
    spec = ABTestSpec(metric="accuracy", method="fixed", max_samples=5000)
    r = ab_test(spec, _counts("a", 2000, 1400), _counts("b", 2000, 1600))
    assert r.verdict == "continue" and r.p_value < 1e-6 and "only at max_samples" in r.detail


def test_group_sequential_information_fraction_and_previous_looks() -> None:
    spec = ABTestSpec(metric="accuracy", method="group_sequential", max_samples=2000)
    a, b = _counts("a", 1200, 360), _counts("b", 1000, 340)
    assert information_fraction(spec, a, b) == pytest.approx(0.5)
    assert information_fraction(ABTestSpec(), a, b) is None
    first = ab_test(spec, a, b)
    assert "information fraction 0.500" in first.detail and "look 1" in first.detail
    later = ab_test(spec, a, b, previous_looks=[0.1, 0.2, 0.2, 0.3, 0.5])  # dup and current ignored
    assert "look 4" in later.detail
    # Earlier looks spent alpha, so the boundary (and the repeated CI) widens.
    assert later.ci_high - later.ci_low > first.ci_high - first.ci_low
    # An early look needs overwhelming evidence (O'Brien-Fleming): this lift of 0.12 at t=0.1 has
    # nominal p ~0.01, yet the boundary there is 6.99.
    early = ab_test(spec, _counts("a", 200, 60), _counts("b", 200, 84))
    assert early.verdict == "continue" and early.p_value < 0.05 and "vs boundary 6.99" in early.detail
    # Before any alpha is spent (t=0.05: 1e-23) the test cannot reject and the interval is unbounded.
    tiny = ab_test(spec.model_copy(update={"min_samples": 100}), _counts("a", 100, 30), _counts("b", 100, 90))
    assert tiny.verdict == "continue" and tiny.ci_low is None and tiny.ci_high is None


def test_degenerate_arms_do_not_divide_by_zero() -> None:
    spec = ABTestSpec(metric="accuracy", min_samples=10, min_effect=0.02)
    r = ab_test(spec, _counts("a", 10, 10), _counts("b", 10, 10))  # both 100% accurate, 10 outcomes
    assert r.verdict == "continue" and math.isfinite(r.ci_low)


def test_many_looks_are_handled_and_bad_fractions_refused() -> None:
    spec = ABTestSpec(metric="accuracy", method="group_sequential", max_samples=2000, min_effect=0.001)
    looks = list(np.linspace(0.005, 0.995, 300)) + [0.5, 0.5004]  # a duplicate and a near one
    r = ab_test(spec, _counts("a", 2000, 600), _counts("b", 2000, 640), previous_looks=looks)
    bound = float(r.detail.split("vs boundary ")[1].split(" ")[0])
    # 0.5004 is merged (within LOOK_TOLERANCE of 0.5); the more looks, the higher the final boundary:
    # 2.031 with 5 equally spaced looks, 2.155 with 40, below 2.3 with 302.
    assert "look 302 " in r.detail and 2.16 < bound < 2.3 and r.verdict == "no_difference"
    with pytest.raises(ValueError, match="increase"):
        obf_boundaries(0.05, [0.5, 0.5, 1.0])
    with pytest.raises(ValueError, match="increase"):
        obf_boundaries(0.05, [0.0, 1.0])
