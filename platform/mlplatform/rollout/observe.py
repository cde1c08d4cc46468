"""A rollout check's evidence, read from the prediction log and the feedback joined to it.

The log is what every replica on every node wrote (through the storage URI), so the
checks see all the traffic, not one replica's counters. Only live traffic counts: the
champion's and the challenger's (or shadow's) answers; pinned and infra-validation
requests are not traffic the versions were chosen for.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from mlplatform.rollout.plan import BINARY_METRICS, ABMetric, RolloutSpec
from mlplatform.rollout.state import Observations, RolloutState, VariantStats
from mlplatform.serving.predictions import joined_feedback

MAX_SCORES = 5000  # scores kept per side for the prediction-shift guardrail (a random sample)
_rng = np.random.default_rng(0)


def outcome(frame: pd.DataFrame, metric: ABMetric) -> pd.Series:
    """The A/B metric per answered request with feedback, as float (NaN: no outcome). The sign is
    the metric's own (abs_error: lower is better; the statistics flip it)."""
    label = frame["label"]
    has = label.notna()
    if metric == "accuracy":
        out = (frame["output"].astype(str) == label.astype(str)).astype("float64")
    elif metric == "brier":
        out = (pd.to_numeric(frame["score"], errors="coerce")
               - pd.to_numeric(frame["label_value"], errors="coerce")) ** 2
    elif metric == "abs_error":
        out = (pd.to_numeric(frame["score"], errors="coerce")
               - pd.to_numeric(frame["label_value"], errors="coerce")).abs()
    else:  # label_rate, label_mean: the observed outcome itself
        out = pd.to_numeric(frame["label_value"], errors="coerce")
    return out.where(has)


def variant_stats(rows: pd.DataFrame, version: str, metric: ABMetric | None) -> VariantStats:
    if rows.empty:
        return VariantStats(version=version)
    failed = rows["error"].notna()
    ok = rows.loc[~failed]
    latency = pd.to_numeric(rows["latency_ms"], errors="coerce").dropna().to_numpy()
    scores = pd.to_numeric(ok["score"], errors="coerce").dropna().to_numpy()
    if len(scores) > MAX_SCORES:
        scores = _rng.choice(scores, MAX_SCORES, replace=False)
    stats = VariantStats(version=version, requests=len(ok), errors=int(failed.sum()),
                         p50_ms=float(np.percentile(latency, 50)) if len(latency) else None,
                         p99_ms=float(np.percentile(latency, 99)) if len(latency) else None,
                         scores=[float(x) for x in scores])
    if metric is not None and "label" in ok.columns:
        values = outcome(ok, metric).dropna().to_numpy(dtype="float64")
        if metric in BINARY_METRICS:
            values = values[(values == 0) | (values == 1)]  # a non-0/1 label is no binary outcome
        stats.outcomes = len(values)
        stats.outcome_sum = float(values.sum())
        stats.outcome_sumsq = float((values * values).sum())
    return stats


def split(log: pd.DataFrame, state: RolloutState) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The champion's and the challenger's live traffic in `log`."""
    if log.empty:
        return log, log
    variant, version = log["variant"], log["version"].astype(str)
    champion = log.loc[(version == state.champion) & (variant == "champion")]
    challenger = log.loc[(version == state.challenger) & variant.isin(["challenger", "shadow"])]
    return champion, challenger


def observe(plan: RolloutSpec, state: RolloutState, *, storage_uri: str, service: str,
            now: dt.datetime) -> Observations:
    metric = plan.ab_test.metric if plan.ab_test else (
        plan.guardrails.quality.metric if plan.guardrails.quality else None)
    log = joined_feedback(storage_uri, state.pipeline, service, since=state.started_at, until=now,
                          features=False)
    champion, challenger = split(log, state)
    since = pd.Timestamp(state.step_started_at)
    win_champion = champion.loc[_naive_utc(champion["event_ts"]) >= since] if len(champion) else champion
    win_challenger = (challenger.loc[_naive_utc(challenger["event_ts"]) >= since] if len(challenger)
                      else challenger)
    return Observations(
        start=state.step_started_at, end=now,
        champion=variant_stats(win_champion, state.champion, metric),
        challenger=variant_stats(win_challenger, state.challenger, metric),
        cumulative_champion=variant_stats(champion, state.champion, metric),
        cumulative_challenger=variant_stats(challenger, state.challenger, metric))



def _naive_utc(ts: pd.Series) -> pd.Series:
    """Log timestamps as naive UTC, like the rollout's own times."""
    ts = pd.to_datetime(ts)
    return ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts
