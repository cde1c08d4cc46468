"""The champion/challenger gate: TFMA-style value and change thresholds, plus slices.

Both models are scored here, on the same holdout rows, by the same code. The first model
of a pipeline has no baseline: change thresholds and slice regressions are skipped and
value thresholds still apply. Every number and the reason travel in the GateDecision,
which the evaluate step writes to the metadata store and to MLflow.

A metric the gate cannot read never passes, whatever the configuration: a NaN, an
infinity or a metric missing from the scores is "undefined". The primary metric
(`model.metric`) must be defined for any pass, even with `require_better_than_champion:
false` and no threshold naming it (otherwise a model that cannot be scored would be
promoted by default); any threshold's metric must be defined; and so must the primary
metric of every slice large enough to gate (see `_slices`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.artifacts import GateCheck as Check
from mlplatform.artifacts import GateDecision, SliceResult
from mlplatform.evaluation.metrics import greater_is_better, predictions, score
from mlplatform.spec import EvaluationSpec, ModelSpec, ThresholdSpec


def _finite(v: float | None) -> bool:
    """A value the gate can compare: present, not NaN, not infinite."""
    return v is not None and math.isfinite(v)


def _undefined(metric: str, value: float | None) -> Check:
    """The failing check for a metric that cannot be judged, so that no rule can pass it."""
    why = ("missing from the challenger's scores" if value is None
           else "undefined on this holdout (one class, no rows, or no probabilities)")
    return Check(metric=metric, rule="defined", challenger=value, passed=False, detail=f"{metric} is {why}")


def _direction(t: ThresholdSpec) -> bool:
    return t.greater_is_better if t.greater_is_better is not None else greater_is_better(t.metric)


def _threshold_checks(t: ThresholdSpec, ch: dict[str, float], base: dict[str, float] | None) -> list[Check]:
    out: list[Check] = []
    value = ch.get(t.metric)
    if not _finite(value):  # e.g. AUC on a holdout with one class: nothing to judge, so no pass
        return [_undefined(t.metric, value)]
    if t.min_value is not None:
        ok = _finite(value) and value >= t.min_value  # type: ignore[operator]
        out.append(Check(metric=t.metric, rule=f">= {t.min_value}", challenger=value, passed=ok,
                         detail=f"{t.metric} {value:.4f} {'>=' if ok else '<'} min_value {t.min_value}"))
    if t.max_value is not None:
        ok = _finite(value) and value <= t.max_value  # type: ignore[operator]
        out.append(Check(metric=t.metric, rule=f"<= {t.max_value}", challenger=value, passed=ok,
                         detail=f"{t.metric} {value:.4f} {'<=' if ok else '>'} max_value {t.max_value}"))
    for kind, bound in (("absolute", t.min_absolute_change), ("relative", t.min_relative_change)):
        if bound is None:
            continue
        rule = f"{kind} change >= {bound}"
        old = base.get(t.metric) if base else None
        if base is not None and not _finite(old):
            out.append(Check(metric=t.metric, rule=rule, challenger=value, passed=False,
                             detail=f"{t.metric}: the champion cannot be scored on this holdout"))
            continue
        if not _finite(old):
            out.append(Check(metric=t.metric, rule=rule, challenger=value, passed=True, skipped=True,
                             detail=f"{t.metric}: no champion to compare with, {kind} change skipped"))
            continue
        gain = (value - old) if _direction(t) else (old - value)  # type: ignore[operator]
        if kind == "absolute":
            change = gain
        else:
            change = gain / abs(old) if old else (math.inf if gain > 0 else -math.inf)  # type: ignore[arg-type]
        ok = _finite(value) and change >= bound
        out.append(Check(metric=t.metric, rule=rule, challenger=value, champion=old, passed=ok,
                         detail=f"{t.metric} {value:.4f} vs champion {old:.4f}: {kind} change "
                                f"{change:+.4f} {'>=' if ok else '<'} {bound}"))
    return out


def _slice_metric(task: str, metric: str, y: np.ndarray, pred: tuple[np.ndarray, np.ndarray | None],
                  mask: np.ndarray) -> float:
    return score(task, y[mask], pred[0][mask],  # type: ignore[arg-type]
                 None if pred[1] is None else pred[1][mask]).get(metric, float("nan"))


def _slices(spec: EvaluationSpec, metric: str, task: str, test: pd.DataFrame, y: np.ndarray,
            ch: tuple[np.ndarray, np.ndarray | None],
            base: tuple[np.ndarray, np.ndarray | None] | None) -> list[SliceResult]:
    """The primary metric per slice value; slices of at least `min_slice_rows` rows are gated.

    A gated slice fails when the challenger is worse than the champion by more than
    `max_slice_regression`, and also whenever the challenger's metric is undefined there
    (NaN), whatever the champion scores and even when there is no champion. A demanding
    user's promise is "no slice large enough to judge gets worse", and an unmeasurable
    slice cannot be shown to keep it: if the champion scores the slice, the challenger
    lost something; if neither can (say, one class in the slice, where AUC does not
    exist), the spec gates a slice that can never be judged, and a loud rejection naming
    the slice (fix: a metric defined there, a larger `min_slice_rows`, or another slice
    column) beats a gate that silently stops guarding it. The first model is held to the
    same rule, so such a spec fails on its first run rather than after a champion exists.
    A champion that cannot be scored on a slice the challenger can is no regression: that
    slice is reported, not gated. Smaller slices are always reported, never gated.
    """
    better_up = greater_is_better(metric)
    out: list[SliceResult] = []
    for column in spec.slices:
        if column not in test.columns:
            continue
        keys = test[column].astype(object).where(test[column].notna(), "<missing>").astype(str).to_numpy()
        for value in sorted(set(keys)):
            mask = keys == value
            rows = int(mask.sum())
            large = rows >= spec.min_slice_rows

            c = _slice_metric(task, metric, y, ch, mask)
            b = _slice_metric(task, metric, y, base, mask) if base is not None else None
            regression = ((b - c) if better_up else (c - b)) if _finite(b) and _finite(c) else None
            if not _finite(c):
                gated, passed = large, not large
            else:
                gated = base is not None and large and regression is not None
                passed = not gated or regression <= spec.max_slice_regression  # type: ignore[operator]
            out.append(SliceResult(column=column, value=value, rows=rows, challenger=c, champion=b,
                                   regression=regression, gated=gated, passed=passed))
    return out


def _slice_failure(s: SliceResult, metric: str, spec: EvaluationSpec, has_champion: bool) -> str:
    """Why a slice failed, in words that say what to fix."""
    head = f"slice {s.column}={s.value} ({s.rows} rows)"
    if not _finite(s.challenger):
        if _finite(s.champion):
            return f"{head}: {metric} undefined for the challenger vs champion {s.champion:.4f}"
        whom = "both models" if has_champion else "the challenger (no champion)"
        return (f"{head}: {metric} undefined for {whom}, a slice this large must be measurable "
                f"(use a metric defined there, raise min_slice_rows above {s.rows}, or drop the slice)")
    return (f"{head}: {metric} {s.challenger:.4f} vs champion {s.champion:.4f}, worse by "
            f"{s.regression:.4f} > {spec.max_slice_regression}")


def evaluate(model_spec: ModelSpec, spec: EvaluationSpec, challenger: Any, champion: Any | None,
             X: pd.DataFrame, y: np.ndarray, test: pd.DataFrame | None = None,
             champion_version: str | None = None) -> GateDecision:
    """Score both models on (X, y) and decide. `test` carries the slice columns."""
    task, metric = model_spec.task, model_spec.metric
    if len(y) == 0:
        return GateDecision(passed=False, reason="rejected: the holdout has no rows to score on",
                            metric=metric, rows=0, challenger={}, champion_version=champion_version,
                            checks=[])
    ch_pred = predictions(task, challenger, X)
    ch = score(task, y, *ch_pred)
    base_pred = predictions(task, champion, X) if champion is not None else None
    base = score(task, y, *base_pred) if base_pred is not None else None
    thresholds = list(spec.thresholds)
    if spec.require_better_than_champion:
        thresholds.append(ThresholdSpec(metric=metric, min_absolute_change=1e-12,
                                        greater_is_better=greater_is_better(metric)))
    # The primary metric is checked first, whether or not a threshold names it: an unscorable
    # model must not pass for want of a rule. An undefined metric is said once per metric.
    checks: list[Check] = [] if _finite(ch.get(metric)) else [_undefined(metric, ch.get(metric))]
    for c in (c for t in thresholds for c in _threshold_checks(t, ch, base)):
        if c.rule != "defined" or not any(d.rule == "defined" and d.metric == c.metric for d in checks):
            checks.append(c)
    slices = _slices(spec, metric, task, test if test is not None else X, y, ch_pred, base_pred)
    failed = [c.detail for c in checks if not c.passed]
    failed += [_slice_failure(s, metric, spec, base is not None) for s in slices if not s.passed]
    if failed:
        reason = "rejected: " + "; ".join(failed)
    elif base is None:
        reason = (f"accepted: first model ({metric} {ch[metric]:.4f}); no champion, change thresholds "
                  "skipped")
    elif not _finite(base.get(metric)):
        reason = (f"accepted: {metric} {ch[metric]:.4f}; champion v{champion_version} cannot be scored "
                  "on this holdout")
    else:
        reason = (f"accepted: {metric} {ch[metric]:.4f} vs champion v{champion_version} "
                  f"{base[metric]:.4f} ({ch[metric] - base[metric]:+.4f})")
    return GateDecision(passed=not failed, reason=reason, metric=metric, rows=len(y), challenger=ch,
                        champion=base, champion_version=champion_version, checks=checks, slices=slices)
