"""Drift and training/serving skew between a reference batch and a current batch.

Pure functions over numpy arrays (numeric features: the non-null values, possibly a
uniform sample) and category counts (categorical features: full counts), so the same
code runs in a Ray task, a test or a notebook. Definitions and defaults follow
Evidently, which users already know, so a verdict here can be checked against it:

* ``auto``: up to 1,000 reference rows, KS (numeric) and chi-square (categorical) with
  drift when p < 0.05; above, normed Wasserstein (numeric) and Jensen-Shannon distance
  (categorical) with drift when >= 0.1. Small samples need a test that knows the
  sampling noise; on large ones every test rejects, so an effect size is what matters.
* ``psi``: drift when >= ``psi_threshold`` (0.2, the usual "significant shift").
* ``linf`` (TFDV's categorical L-infinity distance): TFDV has no default threshold;
  0.1 is used here, the same bar as the other distances.

Thresholds of p-value methods (ks, chisquare) are significance levels: drift when
p < threshold. Thresholds of the distances are lower bounds: drift when >= threshold.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, computed_field
from scipy import stats
from scipy.spatial import distance

from mlplatform.spec import DriftSpec

Kind = Literal["numeric", "categorical"]

AUTO_REFERENCE_ROWS = 1000  # Evidently: at most this many reference rows -> statistical tests
NUMERIC_METHODS = ("ks", "wasserstein", "psi", "jensenshannon")
CATEGORICAL_METHODS = ("chisquare", "jensenshannon", "psi", "linf")
P_VALUE_METHODS = ("ks", "chisquare")
DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1, "linf": 0.1}
PSI_BUCKETS = 10  # deciles of the reference: the textbook PSI binning
PSI_EPS = 1e-4  # empty buckets get this proportion, as Evidently does, so ln() stays finite
STD_EPS = 0.001  # Evidently's floor for the reference std in the normed Wasserstein distance


class FeatureDriftResult(BaseModel):
    """One feature's verdict, with everything needed to explain it in a report."""

    # NaN (no verdict) is written as "NaN" so a report read back from JSON still validates.
    model_config = ConfigDict(ser_json_inf_nan="strings")
    feature: str
    kind: Kind
    method: str
    statistic: float  # the test statistic or the distance; NaN when a side is empty
    p_value: float | None = None  # only for the tests (ks, chisquare)
    threshold: float
    drifted: bool
    reference_size: int  # non-null values (numeric) or total count (categorical) compared
    current_size: int
    note: str = ""  # why no verdict could be reached, or anything else worth knowing


class DriftReport(BaseModel):
    """All feature verdicts plus the dataset-level one (Evidently's "share of drifted features")."""

    features: list[FeatureDriftResult]
    n_features: int
    n_drifted: int
    drifted_share: float
    dataset_drift: bool
    dataset_drift_share: float  # the threshold drifted_share is compared with

    @computed_field  # type: ignore[prop-decorator]
    @property
    def drifted_features(self) -> list[str]:
        """Names of the drifted features, in report order, for alerts and retraining triggers."""
        return [f.feature for f in self.features if f.drifted]


# --- statistics ------------------------------------------------------------------


def ks(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (D, p-value)."""
    res = stats.ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


def chi_square(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> tuple[float, float]:
    """Chi-square homogeneity test on the 2 x k table over the union of categories: (chi2, p).

    A homogeneity test (not goodness of fit against the reference) treats both sides as
    samples, and a category unseen in the reference is just another column. Categories
    with no count on either side are dropped (they carry no information and would make
    an expected frequency zero). scipy's defaults apply, so 2 categories get Yates'
    continuity correction. One category in all: nothing can differ, so (0, 1).
    """
    cats = [c for c in _union(ref_counts, cur_counts) if ref_counts.get(c, 0) + cur_counts.get(c, 0) > 0]
    if len(cats) < 2:
        return 0.0, 1.0
    table = np.array([[ref_counts.get(c, 0) for c in cats], [cur_counts.get(c, 0) for c in cats]])
    res = stats.chi2_contingency(table)
    return float(res.statistic), float(res.pvalue)


def wasserstein_normed(ref: np.ndarray, cur: np.ndarray) -> float:
    """Wasserstein-1 distance divided by the reference std (Evidently's "wasserstein").

    In units of reference standard deviations, so one threshold fits every feature's
    scale. A constant reference has std 0: the std is floored at 0.001 as in Evidently,
    so any move of a constant feature counts as a large drift.
    """
    return float(stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), STD_EPS))


def jensen_shannon_categorical(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> float:
    """Jensen-Shannon distance (natural log, so in [0, sqrt(ln 2)]) of the category proportions."""
    p, q = _proportions(ref_counts, cur_counts)
    return _js(p, q)


def jensen_shannon_numeric(ref: np.ndarray, cur: np.ndarray) -> float:
    """Jensen-Shannon distance of histograms on shared bin edges.

    The edges are Sturges' bins over the concatenation of both sides (as Evidently bins),
    so both histograms see the same grid and values outside the reference range count.
    """
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
    p = np.histogram(ref, bins=edges)[0].astype(float)
    q = np.histogram(cur, bins=edges)[0].astype(float)
    return _js(p / p.sum(), q / q.sum())


def psi_numeric(ref: np.ndarray, cur: np.ndarray, buckets: int = PSI_BUCKETS) -> float:
    """Population Stability Index over buckets at the reference's quantiles (deciles).

    Equal quantiles (ties, discrete features) are merged; a reference bucket can still be
    empty (e.g. five 0s and five 1s give (-inf, 0) and [0.5, 1) empty), which the clipping
    below turns into a small probability rather than a division by zero. The outer buckets are
    open (-inf, +inf), so current values outside the reference range are counted. Buckets are
    [a, b): a value on an edge goes right.
    """
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, buckets + 1)[1:-1]))
    p = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1) / len(ref)
    q = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1) / len(cur)
    return _psi(p, q)


def psi_categorical(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> float:
    """Population Stability Index over the union of categories."""
    p, q = _proportions(ref_counts, cur_counts)
    return _psi(p, q)


def linf(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> float:
    """TFDV's L-infinity distance: the largest change of any category's proportion."""
    p, q = _proportions(ref_counts, cur_counts)
    return float(np.max(np.abs(p - q))) if len(p) else 0.0


def _union(a: dict[str, int], b: dict[str, int]) -> list[str]:
    return list(dict.fromkeys([*a, *b]))


def _proportions(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    cats = _union(ref_counts, cur_counts)
    p = np.array([ref_counts.get(c, 0) for c in cats], dtype=float)
    q = np.array([cur_counts.get(c, 0) for c in cats], dtype=float)
    return p / p.sum(), q / q.sum()


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    # Clipped, not renormalised (as Evidently): every term (q - p) ln(q / p) stays >= 0.
    p, q = np.clip(p, PSI_EPS, None), np.clip(q, PSI_EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    value = float(distance.jensenshannon(p, q))
    return 0.0 if np.isnan(value) else value  # rounding can make the divergence a hair below 0


# --- per-feature verdicts ----------------------------------------------------------


def resolve_method(name: str, kind: Kind, method: str, reference_rows: int) -> str:
    """'auto' -> Evidently's choice for the reference size; reject methods that don't fit the kind."""
    if method == "auto":
        small = reference_rows <= AUTO_REFERENCE_ROWS
        if kind == "numeric":
            return "ks" if small else "wasserstein"
        return "chisquare" if small else "jensenshannon"
    allowed = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
    if method not in allowed:
        raise ValueError(
            f"feature {name!r}: drift method {method!r} does not apply to a {kind} feature; "
            f"use one of {['auto', *allowed]}"
        )
    return method


def _verdict(name: str, kind: Kind, method: str, threshold: float | None, psi_threshold: float,
             stat: float, p: float | None, sizes: tuple[int, int], note: str = "",
             empty: bool = False) -> FeatureDriftResult:
    if threshold is None:
        threshold = psi_threshold if method == "psi" else DEFAULT_THRESHOLDS[method]
    if empty:
        drifted = False
    elif method in P_VALUE_METHODS:
        drifted = p is not None and p < threshold
    else:
        drifted = stat >= threshold
    return FeatureDriftResult(feature=name, kind=kind, method=method, statistic=stat, p_value=p,
                              threshold=threshold, drifted=bool(drifted), reference_size=sizes[0],
                              current_size=sizes[1], note=note)


def numeric_drift(name: str, ref: np.ndarray, cur: np.ndarray, *, method: str = "auto",
                  threshold: float | None = None, reference_rows: int,
                  psi_threshold: float = 0.2) -> FeatureDriftResult:
    """Drift verdict for one numeric feature. NaN and +-inf are dropped (and said in the note)."""
    method = resolve_method(name, "numeric", method, reference_rows)
    ref, cur = np.asarray(ref, dtype=float).ravel(), np.asarray(cur, dtype=float).ravel()
    dropped = int((~np.isfinite(ref)).sum() + (~np.isfinite(cur)).sum())
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    sizes = (len(ref), len(cur))
    note = f"{dropped} non-finite values ignored" if dropped else ""
    if not len(ref) or not len(cur):
        side = "reference" if not len(ref) else "current"
        empty = f"no non-null values in the {side} batch: no drift verdict"
        return _verdict(name, "numeric", method, threshold, psi_threshold, float("nan"), None, sizes,
                        "; ".join(filter(None, [empty, note])), empty=True)
    p: float | None = None
    if method == "ks":
        stat, p = ks(ref, cur)
    elif method == "wasserstein":
        stat = wasserstein_normed(ref, cur)
    elif method == "psi":
        stat = psi_numeric(ref, cur)
    else:
        stat = jensen_shannon_numeric(ref, cur)
    return _verdict(name, "numeric", method, threshold, psi_threshold, stat, p, sizes, note)


def categorical_drift(name: str, ref_counts: dict[str, int], cur_counts: dict[str, int], *,
                      method: str = "auto", threshold: float | None = None, reference_rows: int,
                      psi_threshold: float = 0.2) -> FeatureDriftResult:
    """Drift verdict for one categorical feature from category -> count on each side."""
    method = resolve_method(name, "categorical", method, reference_rows)
    for side, counts in (("reference", ref_counts), ("current", cur_counts)):
        if any(v < 0 for v in counts.values()):
            raise ValueError(f"feature {name!r}: negative category count in the {side} batch")
    sizes = (int(sum(ref_counts.values())), int(sum(cur_counts.values())))
    if not sizes[0] or not sizes[1]:
        side = "reference" if not sizes[0] else "current"
        return _verdict(name, "categorical", method, threshold, psi_threshold, float("nan"), None, sizes,
                        f"no non-null values in the {side} batch: no drift verdict", empty=True)
    p: float | None = None
    if method == "chisquare":
        stat, p = chi_square(ref_counts, cur_counts)
    elif method == "jensenshannon":
        stat = jensen_shannon_categorical(ref_counts, cur_counts)
    elif method == "psi":
        stat = psi_categorical(ref_counts, cur_counts)
    else:
        stat = linf(ref_counts, cur_counts)
    return _verdict(name, "categorical", method, threshold, psi_threshold, stat, p, sizes)


def _settings(spec: DriftSpec, name: str) -> tuple[str, float | None]:
    """(method, threshold) for a feature: the feature's own settings, else the global ones.

    A feature entry's method "auto" (its default) inherits the global method. The generic
    global `threshold` does not apply to PSI, which has its own global `psi_threshold`.
    """
    own = spec.features.get(name)
    method = own.method if own is not None and own.method != "auto" else spec.method
    if own is not None and own.threshold is not None:
        return method, own.threshold
    return method, None if method == "psi" else spec.threshold


def detect_drift(ref_numeric: dict[str, np.ndarray], cur_numeric: dict[str, np.ndarray],
                 ref_categorical: dict[str, dict[str, int]], cur_categorical: dict[str, dict[str, int]],
                 *, reference_rows: int, spec: DriftSpec) -> DriftReport:
    """Every feature present on both sides, then the dataset verdict.

    A feature on one side only is skipped: the schema checks report it. `reference_rows`
    is the true size of the reference data set (the arrays may be samples); it picks the
    "auto" methods. A disabled spec gives an empty report that never signals drift.
    """
    results: list[FeatureDriftResult] = []
    if spec.enabled:
        for name in (n for n in ref_numeric if n in cur_numeric):
            method, threshold = _settings(spec, name)
            results.append(numeric_drift(name, ref_numeric[name], cur_numeric[name], method=method,
                                         threshold=threshold, reference_rows=reference_rows,
                                         psi_threshold=spec.psi_threshold))
        for name in (n for n in ref_categorical if n in cur_categorical):
            method, threshold = _settings(spec, name)
            results.append(categorical_drift(name, ref_categorical[name], cur_categorical[name],
                                             method=method, threshold=threshold,
                                             reference_rows=reference_rows,
                                             psi_threshold=spec.psi_threshold))
    n_drifted = sum(r.drifted for r in results)
    share = n_drifted / len(results) if results else 0.0
    return DriftReport(features=results, n_features=len(results), n_drifted=n_drifted,
                       drifted_share=share, dataset_drift=bool(results) and share >= spec.dataset_drift_share,
                       dataset_drift_share=spec.dataset_drift_share)
