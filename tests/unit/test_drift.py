import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlplatform.data.drift import (
    DriftReport,
    categorical_drift,
    chi_square,
    detect_drift,
    jensen_shannon_categorical,
    jensen_shannon_numeric,
    ks,
    linf,
    numeric_drift,
    psi_categorical,
    psi_numeric,
    wasserstein_normed,
)
from mlplatform.data.synthetic import CATEGORICAL, NUMERIC, DemoDataConfig, generate_day
from mlplatform.spec import DriftSpec, FeatureDrift

TOL = 1e-6


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- each statistic against values worked out by hand from its definition ------------------
#
# The expected numbers are literals derived in the comments on inputs small enough to count,
# never the scipy calls the code makes (a test that repeats the code proves nothing). Where a
# p-value needs a distribution, its closed form is written out. Evidently cannot be installed
# beside this project (it pins pandas < 3), so these literals are the reference its definitions
# are checked against. TOL is far below any difference a wrong definition would make.


@pytest.mark.parametrize(("ref", "cur", "d", "p"), [
    # ECDFs: ref climbs 1/4 per value on 1..4 while cur is still 0, so D = max|F_ref - F_cur| = 1.
    # Exact p (n = m = 4): under H0 every one of C(8,4) = 70 interleavings is equally likely and
    # only "all ref first" and "all cur first" reach D = 1, so p = 2/70 = 1/35.
    ([1, 2, 3, 4], [5, 6, 7, 8], 1.0, 2 / 70),
    # Same with n = m = 3: p = 2 / C(6,3) = 2/20 = 0.1 (no drift at 0.05 although D = 1).
    ([1, 2, 3], [4, 5, 6], 1.0, 0.1),
    # Merged order r r r c r c r c c c: F_ref - F_cur after each = .2 .4 .6 .4 .6 .4 .6 .4 .2 0,
    # so D = 0.6 = 3/5. Exact p for n = m (Gnedenko-Korolyuk, by reflection of lattice paths):
    # P(D >= k/n) = 2 sum_j>=1 (-1)^(j+1) C(2n, n - jk) / C(2n, n) = 2 C(10,2) / C(10,5) = 90/252.
    # (Counting the 252 splits of the ten values by brute force gives the same 90.)
    ([1, 2, 3, 5, 7], [4, 6, 8, 9, 10], 0.6, 90 / 252),
    # Perfect alternation: D = 1/4 is the least any split of 8 values can give, so p = 1.
    ([1, 3, 5, 7], [2, 4, 6, 8], 0.25, 1.0),
])
def test_ks_by_hand(ref: list[int], cur: list[int], d: float, p: float) -> None:
    got_d, got_p = ks(np.array(ref, float), np.array(cur, float))
    assert (got_d, got_p) == pytest.approx((d, p), abs=1e-9)
    # The verdict: drift when p < 0.05 (README "Data validation": KS for <= 1,000 reference rows).
    r = numeric_drift("x", np.array(ref, float), np.array(cur, float), reference_rows=len(ref))
    assert (r.method, r.threshold, r.drifted) == ("ks", 0.05, p < 0.05)


@pytest.mark.parametrize(("ref", "cur", "chi2", "p"), [
    # 2 x 3 table, both rows 60, every column 40, N = 120: each expected count is 60*40/120 = 20.
    # chi2 = sum (O - E)^2 / E = (100 + 0 + 100 + 100 + 0 + 100) / 20 = 20 with (2-1)(3-1) = 2 dof,
    # whose survival function is exp(-x/2): p = exp(-10) = 4.5399929762e-05 -> drift.
    ({"a": 30, "b": 20, "c": 10}, {"a": 10, "b": 20, "c": 30}, 20.0, 4.5399929762484854e-05),
    # Same margins, small moves: chi2 = (4 + 0 + 4 + 4 + 0 + 4) / 20 = 0.8, p = exp(-0.4) -> no drift.
    ({"a": 22, "b": 20, "c": 18}, {"a": 18, "b": 20, "c": 22}, 0.8, 0.6703200460356393),
    # A vanished category (b) and an unseen one (d) are just columns of the union table:
    # [[20, 10, 10, 0], [20, 0, 10, 10]], rows 40/40, columns 40/10/20/10, N = 80, so the expected
    # counts are 20, 5, 10, 5 per row; only b and d differ: 4 cells of (5^2)/5 = 5, chi2 = 20, 3 dof.
    # Survival with 3 dof: erfc(sqrt(x/2)) + sqrt(2x/pi) exp(-x/2) = 1.6974243555e-04 -> drift.
    ({"a": 20, "b": 10, "c": 10}, {"a": 20, "c": 10, "d": 10}, 20.0, 1.6974243555282643e-04),
    # Two categories: 1 dof, so Yates' correction (as scipy's chi2_contingency by default):
    # expected 37.5 / 62.5 per row, |O - E| = 7.5 everywhere, corrected (7.5 - 0.5)^2 = 49;
    # chi2 = 49 (2/37.5 + 2/62.5) = 4.18133...; 1-dof survival erfc(sqrt(x/2)) = 0.0408715 -> drift.
    # (Without the correction: 56.25 * 0.085333 = 4.8.)
    ({"x": 30, "y": 70}, {"x": 45, "y": 55}, 49 * (2 / 37.5 + 2 / 62.5), 0.040871534089006165),
])
def test_chi_square_homogeneity_by_hand(ref: dict[str, int], cur: dict[str, int], chi2: float,
                                        p: float) -> None:
    assert chi_square(ref, cur) == pytest.approx((chi2, p), rel=1e-9)
    # The verdict: drift when p < 0.05 (chi-square for <= 1,000 reference rows).
    r = categorical_drift("c", ref, cur, reference_rows=sum(ref.values()))
    assert (r.method, r.p_value, r.drifted) == ("chisquare", pytest.approx(p, rel=1e-9), p < 0.05)


def test_chi_square_degenerate_tables() -> None:
    # A category with zero counts on both sides is ignored rather than crashing scipy.
    assert chi_square({"a": 5, "b": 5, "z": 0}, {"a": 5, "b": 5, "z": 0}) == pytest.approx((0.0, 1.0))
    assert chi_square({"only": 10}, {"only": 3}) == (0.0, 1.0)


@pytest.mark.parametrize(("ref", "cur", "expected"), [
    # W1 is the area between the two ECDFs. A shift by 1 moves every quantile by 1: W1 = 1.
    # The norm is the reference's population std (ddof=0, numpy's and Evidently's np.std):
    # mean 1.5, variance (2.25 + .25 + .25 + 2.25) / 4 = 1.25, so 1 / sqrt(1.25) = 0.894427191
    # (ddof=1 would give 1 / sqrt(5/3) = 0.7746).
    ([0, 1, 2, 3], [1, 2, 3, 4], 1 / math.sqrt(1.25)),
    # F_ref = .25 .5 .75 1 at 0 1 2 3; F_cur = .5 on [0, 3), then 1. |F_ref - F_cur| is .25 on
    # [0,1), 0 on [1,2), .25 on [2,3): area 0.5, normed 0.5 / sqrt(1.25) = 0.447213595.
    ([0, 1, 2, 3], [0, 0, 3, 3], 0.5 / math.sqrt(1.25)),
    # Unequal sizes: F_ref = .5 on [0,2), F_cur = 0 on [0,1) then 1: area .5 + .5 = 1; the std of
    # {0, 2} is 1 with ddof=0 (sqrt(2) with ddof=1), so exactly 1.0.
    ([0, 2], [1], 1.0),
])
def test_wasserstein_normed_by_hand(ref: list[float], cur: list[float], expected: float) -> None:
    assert wasserstein_normed(np.array(ref, float), np.array(cur, float)) == pytest.approx(expected, abs=TOL)


def test_wasserstein_verdict_at_the_documented_threshold_and_a_constant_reference() -> None:
    # Above 1,000 reference rows `auto` is the normed Wasserstein distance, drift at >= 0.1.
    # 0..9 has population std sqrt(8.25) = 2.8722813; a shift by s has W1 = s, so a shift of 0.2
    # is 0.0696 (no drift) and 0.3 is 0.1044 (drift; with the sample std, 3.0277, it would be
    # 0.0991 and no drift: the std's ddof decides this verdict).
    ref = np.arange(10.0)
    for shift, expected, drifted in ((0.2, 0.2 / math.sqrt(8.25), False), (0.3, 0.3 / math.sqrt(8.25), True)):
        r = numeric_drift("x", ref, ref + shift, reference_rows=5000)
        assert (r.method, r.threshold) == ("wasserstein", 0.1)
        assert r.statistic == pytest.approx(expected, abs=TOL) and r.drifted is drifted
    # A constant reference has std 0: floored at 0.001 (Evidently), so a move of 0.5 is 500 stds.
    const = np.full(100, 5.0)
    assert wasserstein_normed(const, const) == 0.0
    assert wasserstein_normed(const, np.full(50, 5.5)) == pytest.approx(0.5 / 0.001)


@pytest.mark.parametrize(("ref", "cur", "expected"), [
    # JS distance = sqrt((KL(p||m) + KL(q||m)) / 2), m = (p + q) / 2, natural log (scipy's and
    # Evidently's default base), so it lies in [0, sqrt(ln 2)].
    # p = (.5, .5), q = (1, 0), m = (.75, .25): KL(p||m) = .5 ln(2/3) + .5 ln 2 = .5 ln(4/3),
    # KL(q||m) = ln(4/3); divergence .75 ln(4/3), distance sqrt(.75 ln(4/3)) = 0.464501404
    # (base 2 would give 0.5579).
    ({"a": 5, "b": 5}, {"a": 10}, math.sqrt(0.75 * math.log(4 / 3))),
    # Disjoint supports: m = (.5, .5), each KL = ln 2, distance sqrt(ln 2) = 0.832554611, the maximum.
    ({"a": 3}, {"b": 7}, math.sqrt(math.log(2))),
    # p = (.5, .5), q = (.55, .45), m = (.525, .475):
    # KL(p||m) = .5 ln(.5/.525) + .5 ln(.5/.475), KL(q||m) = .55 ln(.55/.525) + .45 ln(.45/.475),
    # distance 0.0354070907 -> no drift at 0.1.
    ({"a": 50, "b": 50}, {"a": 55, "b": 45}, 0.035407090650223204),
])
def test_jensen_shannon_categorical_by_hand(ref: dict[str, int], cur: dict[str, int],
                                            expected: float) -> None:
    assert jensen_shannon_categorical(ref, cur) == pytest.approx(expected, abs=TOL)
    # Above 1,000 reference rows `auto` is the Jensen-Shannon distance, drift at >= 0.1.
    r = categorical_drift("c", ref, cur, reference_rows=5000)
    assert (r.method, r.threshold, r.drifted) == ("jensenshannon", 0.1, expected >= 0.1)


@pytest.mark.parametrize(("ref", "cur", "expected"), [
    # Sturges' bins over both sides together: 8 values -> log2(8) + 1 = 4 equal bins over [0, 5],
    # edges 0, 1.25, 2.5, 3.75, 5 (the last bin closed). ref -> (2, 1, 1, 0)/4, cur -> (0, 1, 1, 2)/4,
    # m = (.25, .25, .25, .25): each KL is .5 ln 2, distance sqrt(.5 ln 2) = 0.588705011.
    ([0, 1, 2, 3], [2, 3, 4, 5], math.sqrt(0.5 * math.log(2))),
    # Current values entirely beyond the reference's range still count (bins over both sides):
    # edges 0, 1.75, 3.5, 5.25, 7 -> (2, 2, 0, 0)/4 vs (0, 0, 2, 2)/4, disjoint: sqrt(ln 2).
    ([0, 1, 2, 3], [4, 5, 6, 7], math.sqrt(math.log(2))),
    # 16 values -> log2(16) + 1 = 5 bins of 11/5 = 2.2 over [0, 11]: edges 0, 2.2, 4.4, 6.6, 8.8, 11.
    # ref 0..7 -> (3, 2, 2, 1, 0)/8, cur 4..11 -> (0, 1, 2, 2, 3)/8, m = (1.5, 1.5, 2, 1.5, 1.5)/8.
    # Both KLs are (3 ln 2 + 2 ln(4/3) + ln(2/3)) / 8 = ln 2 - (3/8) ln 3, which is the divergence;
    # distance sqrt(ln 2 - .375 ln 3) = 0.530252.
    (list(range(8)), list(range(4, 12)), math.sqrt(math.log(2) - 0.375 * math.log(3))),
])
def test_jensen_shannon_numeric_by_hand(ref: list[float], cur: list[float], expected: float) -> None:
    got = jensen_shannon_numeric(np.array(ref, float), np.array(cur, float))
    assert got == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize(("ref", "cur", "expected"), [
    # PSI = sum (q - p) ln(q / p) over buckets cut at the reference's deciles, proportions below
    # 1e-4 clipped to 1e-4. ref = 0..19: deciles 1.9, 3.8, ..., 17.1, two reference values per
    # bucket (p = .1 each). cur puts 3, 1, 2, 2, ... values in the buckets: q = (.15, .05, .1, ...),
    # PSI = .05 ln 1.5 + (-.05) ln .5 = .05 ln 3 = 0.0549306 -> no drift at 0.2.
    (np.arange(20.0), np.array([0, 0, 1, 3, *range(4, 20)], float), 0.05 * math.log(3)),
    # q = (.3, 0, 0, .1 x 7): .2 ln 3 + 2 (1e-4 - .1) ln(1e-4 / .1) = 1.59989196 -> drift.
    (np.arange(20.0), np.array([0] * 6 + list(range(6, 20)), float),
     0.2 * math.log(3) + 2 * (1e-4 - 0.1) * math.log(1e-4 / 0.1)),
    # Buckets are [a, b): ref = 0..9 has the median 4.5 as an edge, and 4.5 goes right, into
    # [4.5, 5.4) with the 5s, so all current values share one bucket (p = .1, q = 1):
    # 9 (1e-4 - .1) ln(1e-4 / .1) + .9 ln 10 = 8.28308936 (6.808 if 4.5 went left).
    (np.arange(10.0), np.array([4.5] * 5 + [5.0] * 5),
     9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + 0.9 * math.log(10)),
    # Ties: five 0s and five 1s have deciles 0, 0, 0, 0, .5, 1, 1, 1, 1; merged, the edges are
    # 0, .5, 1 and the buckets (-inf,0) [0,.5) [.5,1) [1,inf) hold p = (0, .5, 0, .5). Current
    # q = (0, .2, 0, .8); the empty buckets clip to 1e-4 on both sides and add nothing:
    # .3 ln 2.5 + .3 ln 1.6 = .3 ln 4 = 0.41588831 -> drift.
    (np.array([0.0] * 5 + [1.0] * 5), np.array([0.0] * 2 + [1.0] * 8), 0.3 * math.log(4)),
])
def test_psi_numeric_by_hand(ref: np.ndarray, cur: np.ndarray, expected: float) -> None:
    assert psi_numeric(ref, cur) == pytest.approx(expected, abs=1e-9)
    # The verdict: PSI drifts at >= 0.2 (psi_threshold).
    r = numeric_drift("x", ref, cur, method="psi", reference_rows=len(ref))
    assert (r.threshold, r.drifted) == (0.2, expected >= 0.2)


def test_thresholds_are_lower_bounds_for_distances_and_significance_levels_for_tests() -> None:
    """README: distances drift at >= threshold, p-value tests at p < threshold (strictly)."""
    ref, cur = {"a": 50, "b": 50}, {"a": 30, "b": 60, "c": 10}
    d = categorical_drift("c", ref, cur, method="linf", reference_rows=100).statistic
    assert categorical_drift("c", ref, cur, method="linf", threshold=d, reference_rows=100).drifted
    assert not categorical_drift("c", ref, cur, method="linf", threshold=d + 1e-9, reference_rows=100).drifted
    p = categorical_drift("c", ref, cur, method="chisquare", reference_rows=100).p_value
    assert p is not None
    assert not categorical_drift("c", ref, cur, method="chisquare", threshold=p, reference_rows=100).drifted
    assert categorical_drift("c", ref, cur, method="chisquare", threshold=p * (1 + 1e-9),
                             reference_rows=100).drifted


def test_psi_hand_checked() -> None:
    # ref (0.5, 0.5) -> cur (0.25, 0.75): 0.25 ln 2 + 0.25 ln 1.5
    assert psi_categorical({"a": 2, "b": 2}, {"a": 1, "b": 3}) == pytest.approx(
        0.25 * math.log(2) + 0.25 * math.log(1.5), abs=1e-12)
    # An unseen category: its reference share is clipped to 1e-4 instead of giving ln(x / 0).
    assert psi_categorical({"a": 10}, {"a": 5, "b": 5}) == pytest.approx(
        0.5 * math.log(2) + (0.5 - 1e-4) * math.log(0.5 / 1e-4), abs=1e-12)
    # Numeric: ten distinct values, one per decile bucket; all current values in the top one.
    ref = np.arange(10.0)
    assert psi_numeric(ref, np.full(5, 9.0)) == pytest.approx(
        9 * (1e-4 - 0.1) * math.log(1e-4 / 0.1) + 0.9 * math.log(10), abs=1e-12)


def test_linf_is_the_largest_share_change() -> None:
    assert linf({"a": 50, "b": 50}, {"a": 30, "b": 60, "c": 10}) == pytest.approx(0.2)
    assert linf({"a": 1}, {"a": 7}) == 0.0


# --- method choice, overrides, errors -------------------------------------------------


def test_auto_follows_the_reference_size() -> None:
    x = _rng(8).normal(size=300)
    assert numeric_drift("x", x, x, method="auto", threshold=None, reference_rows=1000).method == "ks"
    big = numeric_drift("x", x, x, method="auto", threshold=None, reference_rows=1001)
    assert big.method == "wasserstein"
    counts = {"a": 3, "b": 4}
    small = categorical_drift("c", counts, counts, method="auto", threshold=None, reference_rows=1000)
    big = categorical_drift("c", counts, counts, method="auto", threshold=None, reference_rows=1001)
    assert (small.method, small.threshold, small.p_value) == ("chisquare", 0.05, 1.0)
    assert (big.method, big.threshold, big.p_value) == ("jensenshannon", 0.1, None)


def test_per_feature_and_global_overrides() -> None:
    rng = _rng(9)
    ref_num = {"a": rng.normal(size=2000), "b": rng.normal(size=2000)}
    cur_num = {"a": rng.normal(0.05, 1, 2000), "b": rng.normal(0.05, 1, 2000)}
    ref_cat, cur_cat = {"c": {"x": 60, "y": 40}}, {"c": {"x": 50, "y": 50}}
    spec = DriftSpec(method="auto", threshold=0.01, psi_threshold=0.3, features={
        "a": FeatureDrift(method="psi"),
        "b": FeatureDrift(threshold=0.2),  # method "auto" inherits the global one
        "c": FeatureDrift(method="linf", threshold=0.05),
    })
    report = detect_drift(ref_num, cur_num, ref_cat, cur_cat, reference_rows=5000, spec=spec)
    got = {f.feature: (f.method, f.threshold) for f in report.features}
    assert got == {"a": ("psi", 0.3), "b": ("wasserstein", 0.2), "c": ("linf", 0.05)}
    c = next(f for f in report.features if f.feature == "c")
    assert c.statistic == pytest.approx(0.1) and c.drifted
    # The global method and threshold reach features without their own settings.
    report = detect_drift(ref_num, cur_num, {}, {}, reference_rows=5000,
                          spec=DriftSpec(method="ks", threshold=0.001))
    assert {(f.method, f.threshold) for f in report.features} == {("ks", 0.001)}


def test_a_method_that_does_not_fit_the_kind_names_the_feature() -> None:
    x = np.arange(10.0)
    with pytest.raises(ValueError, match=r"'amount'.*'chisquare'"):
        numeric_drift("amount", x, x, method="chisquare", threshold=None, reference_rows=10)
    with pytest.raises(ValueError, match=r"'city'.*'ks'"):
        categorical_drift("city", {"a": 1}, {"a": 1}, method="ks", threshold=None, reference_rows=10)
    spec = DriftSpec(features={"amount": FeatureDrift(method="linf")})
    with pytest.raises(ValueError, match=r"'amount'.*'linf'"):
        detect_drift({"amount": x}, {"amount": x}, {}, {}, reference_rows=10, spec=spec)
    with pytest.raises(ValueError, match="'wasserstein'"):
        detect_drift({}, {}, {"c": {"a": 1}}, {"c": {"a": 1}}, reference_rows=10,
                     spec=DriftSpec(method="wasserstein"))


def test_empty_side_gives_a_note_not_a_crash() -> None:
    x = np.arange(10.0)
    r = numeric_drift("x", np.array([]), x, method="auto", threshold=None, reference_rows=0)
    assert not r.drifted and "reference" in r.note and r.reference_size == 0
    r = numeric_drift("x", x, np.array([np.nan, np.nan]), method="psi", threshold=None, reference_rows=10)
    assert not r.drifted and "current" in r.note and "2 non-finite" in r.note
    r = categorical_drift("c", {"a": 3}, {}, method="auto", threshold=None, reference_rows=3)
    assert not r.drifted and "current" in r.note and r.current_size == 0
    # A NaN statistic survives a JSON round trip (reports are stored as JSON).
    report = detect_drift({"x": np.array([])}, {"x": x}, {}, {}, reference_rows=0, spec=DriftSpec())
    back = DriftReport.model_validate_json(report.model_dump_json())
    assert math.isnan(back.features[0].statistic) and back.features[0].note == report.features[0].note


# --- verdicts on shifted and unshifted data -------------------------------------------


@pytest.mark.parametrize("method", ["ks", "wasserstein", "psi", "jensenshannon"])
def test_numeric_mean_shift_is_flagged_and_same_distribution_is_not(method: str) -> None:
    rng = _rng(10)
    ref, same, shifted = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000)
    kw = {"method": method, "threshold": None, "reference_rows": 5000}
    assert numeric_drift("x", ref, shifted, **kw).drifted
    assert not numeric_drift("x", ref, same, **kw).drifted


@pytest.mark.parametrize("method", ["chisquare", "jensenshannon", "psi", "linf"])
def test_category_mix_change_is_flagged_and_same_mix_is_not(method: str) -> None:
    rng = _rng(11)
    cats = np.array(["a", "b", "c"])

    def counts(p: list[float]) -> dict[str, int]:
        return {str(k): int(v) for k, v in zip(*np.unique(rng.choice(cats, 5000, p=p), return_counts=True),
                                               strict=True)}

    ref, same, moved = counts([0.6, 0.3, 0.1]), counts([0.6, 0.3, 0.1]), counts([0.35, 0.45, 0.2])
    kw = {"method": method, "threshold": None, "reference_rows": 5000}
    assert categorical_drift("c", ref, moved, **kw).drifted
    assert not categorical_drift("c", ref, same, **kw).drifted


def test_dataset_drift_share() -> None:
    rng = _rng(12)
    ref = {f"f{i}": rng.normal(size=2000) for i in range(4)}
    cur = {f"f{i}": rng.normal(1.0 if i < 2 else 0.0, 1, 2000) for i in range(4)}
    report = detect_drift(ref, cur, {}, {}, reference_rows=2000, spec=DriftSpec())
    assert (report.n_features, report.n_drifted, report.drifted_share) == (4, 2, 0.5)
    assert report.dataset_drift and report.drifted_features == ["f0", "f1"]
    assert "drifted_features" in report.model_dump()
    report = detect_drift(ref, cur, {}, {}, reference_rows=2000, spec=DriftSpec(dataset_drift_share=0.75))
    assert not report.dataset_drift
    # Features on one side only are skipped; a disabled spec reports nothing.
    report = detect_drift(ref, {"f0": cur["f0"], "new": cur["f1"]}, {}, {}, reference_rows=2000,
                          spec=DriftSpec())
    assert [f.feature for f in report.features] == ["f0"]
    off = detect_drift(ref, cur, {}, {}, reference_rows=2000, spec=DriftSpec(enabled=False))
    assert off == DriftReport(features=[], n_features=0, n_drifted=0, drifted_share=0.0,
                              dataset_drift=False, dataset_drift_share=0.5)


# --- the project's synthetic stream ---------------------------------------------------


def _split(df: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    num = {c: df[c].dropna().to_numpy(float) for c in NUMERIC}
    cat = {c: {str(k): int(v) for k, v in df[c].dropna().value_counts().items()} for c in CATEGORICAL}
    return num, cat


@pytest.fixture(scope="module")
def synthetic_reports() -> dict[str, list[DriftReport]]:
    reports: dict[str, list[DriftReport]] = {"same": [], "drift": []}
    for seed in range(20):
        ref_num, ref_cat = _split(generate_day(DemoDataConfig(rows_per_day=2000, seed=seed), 1))
        for key, drift_day in (("same", None), ("drift", 2)):
            cfg = DemoDataConfig(rows_per_day=2000, seed=seed, drift_day=drift_day)
            cur_num, cur_cat = _split(generate_day(cfg, 2))
            reports[key].append(detect_drift(ref_num, cur_num, ref_cat, cur_cat, reference_rows=2000,
                                             spec=DriftSpec()))
    return reports


Reports = dict[str, list[DriftReport]]


def test_false_positive_rate_on_same_distribution_days(synthetic_reports: Reports) -> None:
    verdicts = [f.drifted for r in synthetic_reports["same"] for f in r.features]
    assert len(verdicts) == 20 * (len(NUMERIC) + len(CATEGORICAL))
    assert sum(verdicts) / len(verdicts) <= 0.05


def test_the_generators_drift_is_flagged(synthetic_reports: Reports) -> None:
    shifted = {"income", "days_since_last_login", "device"}
    for report in synthetic_reports["drift"]:
        flagged = set(report.drifted_features)
        assert shifted <= flagged, flagged
        assert len(flagged - shifted) <= 1, flagged


# --- properties -----------------------------------------------------------------------

_values = hnp.arrays(np.float64, st.integers(1, 200),
                     elements=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False))
_counts = st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 1000), min_size=1).filter(
    lambda d: sum(d.values()) > 0)


@settings(max_examples=150, deadline=None)
@given(ref=_values, cur=_values, ref_counts=_counts, cur_counts=_counts)
def test_psi_and_js_are_non_negative_and_zero_on_identical_data(
        ref: np.ndarray, cur: np.ndarray, ref_counts: dict[str, int], cur_counts: dict[str, int]) -> None:
    for f in (psi_numeric, jensen_shannon_numeric):
        assert f(ref, cur) >= 0
        assert abs(f(ref, ref.copy())) <= 1e-9
    for g in (psi_categorical, jensen_shannon_categorical):
        assert g(ref_counts, cur_counts) >= 0
        assert abs(g(ref_counts, dict(ref_counts))) <= 1e-9
