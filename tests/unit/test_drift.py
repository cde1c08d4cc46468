import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial import distance

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


# --- each statistic against scipy / an independent computation ----------------------


def test_ks_matches_scipy() -> None:
    ref, cur = _rng(1).normal(0, 1, 800), _rng(2).normal(0.1, 1.2, 600)
    d, p = ks(ref, cur)
    expected = stats.ks_2samp(ref, cur)
    assert d == pytest.approx(expected.statistic, abs=TOL)
    assert p == pytest.approx(expected.pvalue, abs=TOL)


def test_chi_square_matches_chi2_contingency_on_the_union_of_categories() -> None:
    ref, cur = {"a": 50, "b": 30, "c": 20}, {"a": 40, "c": 35, "d": 5}  # "d" unseen, "b" gone
    chi2, p = chi_square(ref, cur)
    expected = stats.chi2_contingency(np.array([[50, 30, 20, 0], [40, 0, 35, 5]]))
    assert chi2 == pytest.approx(expected.statistic, abs=TOL)
    assert p == pytest.approx(expected.pvalue, abs=TOL)
    # Two categories: scipy's default Yates correction, same as chi2_contingency.
    expected2 = stats.chi2_contingency(np.array([[30, 70], [45, 55]]))
    assert chi_square({"x": 30, "y": 70}, {"x": 45, "y": 55}) == pytest.approx(
        (expected2.statistic, expected2.pvalue), abs=TOL)
    # A category with zero counts on both sides is ignored rather than crashing scipy.
    assert chi_square({"a": 5, "b": 5, "z": 0}, {"a": 5, "b": 5, "z": 0}) == pytest.approx((0.0, 1.0))
    assert chi_square({"only": 10}, {"only": 3}) == (0.0, 1.0)


def test_wasserstein_normed_matches_scipy_and_guards_a_constant_reference() -> None:
    ref, cur = _rng(3).lognormal(1, 0.5, 1000), _rng(4).lognormal(1.1, 0.5, 700)
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert wasserstein_normed(ref, cur) == pytest.approx(expected, abs=TOL)
    const = np.full(100, 5.0)
    assert wasserstein_normed(const, const) == 0.0
    assert wasserstein_normed(const, np.full(50, 5.5)) == pytest.approx(0.5 / 0.001)


def test_jensen_shannon_matches_scipy() -> None:
    ref, cur = {"a": 50, "b": 30, "c": 20}, {"a": 40, "c": 35, "d": 5}
    p = np.array([50, 30, 20, 0]) / 100
    q = np.array([40, 0, 35, 5]) / 80
    assert jensen_shannon_categorical(ref, cur) == pytest.approx(distance.jensenshannon(p, q), abs=TOL)

    x, y = _rng(5).normal(0, 1, 900), _rng(6).normal(0.3, 1, 1100)
    edges = np.histogram_bin_edges(np.r_[x, y], bins="sturges")
    hx, hy = np.histogram(x, edges)[0], np.histogram(y, edges)[0]
    expected = distance.jensenshannon(hx / hx.sum(), hy / hy.sum())
    assert jensen_shannon_numeric(x, y) == pytest.approx(expected, abs=TOL)


def _psi_by_histogram(ref: np.ndarray, cur: np.ndarray) -> float:
    edges = np.unique(np.percentile(ref, [10, 20, 30, 40, 50, 60, 70, 80, 90]))
    bins = np.concatenate([[-np.inf], edges, [np.inf]])
    total = 0.0
    for (r, c) in zip(np.histogram(ref, bins)[0] / len(ref), np.histogram(cur, bins)[0] / len(cur),
                      strict=True):
        r, c = max(r, 1e-4), max(c, 1e-4)
        total += (c - r) * math.log(c / r)
    return total


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_psi_numeric_matches_a_histogram_computation(kind: str) -> None:
    rng = _rng(7)
    if kind == "continuous":
        ref, cur = rng.normal(0, 1, 3000), rng.normal(0.4, 1.3, 2000)
    else:  # ties collapse deciles; values outside the reference range land in the open buckets
        ref, cur = rng.poisson(1.0, 3000).astype(float), rng.poisson(1.8, 2000).astype(float)
    assert psi_numeric(ref, cur) == pytest.approx(_psi_by_histogram(ref, cur), abs=TOL)


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
