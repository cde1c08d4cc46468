"""Anomalies in the metadata: each run's numbers against the pipeline's own history.

Every series a run records (step durations, rows in / valid, the quarantine rate, the holdout
metric, live quality: see anomaly_history.py) is compared with the same series over the earlier
runs of the same pipeline, by a robust z-score: (value - median) / (1.4826 * MAD), where 1.4826
makes the MAD a standard deviation for normal noise, and neither the median nor the MAD moves
much for the odd slow run already in the history. The aim is an alert a person acts on, not
noise; hence:

- **thresholds**: |z| >= 4, and 5.5 for step durations, whose tail is heavy (a busy cluster makes a
  run a third slower now and then: that is normal, a step at ~2x its median is not). Chosen on
  200 simulated 60-run histories (tests/data/make_anomaly_history.py): one false alarm in 12,000
  runs at these values (23 at 5 for durations), while a 3x slower step is caught in 95% of them;
- **a minimum history** (10 earlier points) before a series is judged at all, and a short
  history's scale widened (sqrt(1 + 4/n)): the MAD of ten points is itself uncertain;
- **a floor on the spread**: a history that never varied (0 rows quarantined, every day) has a
  MAD of 0, and then any change, however small, would be infinitely many MADs away. The scale
  is at least a share of the median (durations, rows: 10% / 5% in log space; metrics 0.5%) or an
  absolute amount (a quarantine rate: half a percentage point), and a duration must also be at
  least `min_delta` seconds off, as sub-second steps jitter by whole multiples;
- **log space for durations and row counts**: their noise is multiplicative (a step is 20% slower,
  not 2 s slower) and a weekend's half batch is a shift of log(1/2) whatever the volume;
- **a seasonal baseline by weekday**: when the target's weekday has >= 4 points in the history
  (or, earlier, its day type, weekday or weekend, has >= 2) and that group's median is off the
  overall one by more than `seasonal_shift` scales, the run is compared with its own weekday.
  The check on the shift keeps series without a weekly pattern (durations) on the overall
  baseline, whose many points give a steadier median than four Mondays do. The scale then comes
  from the residuals of every point to its own group's median (pooled), not from one small group;
- **direction**: only the harmful side is an anomaly: a slower step, fewer rows, more quarantined
  rows, a worse metric. A faster step is good news, not an alert;
- **one cause, one alert**: `rows_valid` is rows_in x (1 - quarantine rate), so when rows_in or the
  quarantine rate is anomalous the valid rows are too, for the same reason; that anomaly is dropped
  as explained. Only the spec's metric is judged, not every metric the trainer logged.

`check_run` turns each anomaly into an alert (source "anomaly"), once per run and series.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select

from mlplatform.metadata.schema import AlertRow, ContextRow
from mlplatform.monitoring.anomaly_history import RunPoint, load_history

if TYPE_CHECKING:
    from mlplatform.metadata.store import Alert
    from mlplatform.services import Services

log = logging.getLogger(__name__)

Direction = Literal["high", "low"]
MAD_TO_SIGMA = 1.4826
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class Thresholds(BaseModel):
    """How far off is an anomaly, and how much history it takes to say so."""

    z: float = Field(4.0, gt=0, description="|robust z| from which a value is an anomaly")
    duration_z: float = Field(5.5, gt=0, description="the same for step durations (heavier tails)")
    critical_factor: float = Field(2.0, ge=1, description="x the limit: a critical anomaly")
    min_history: int = Field(10, ge=3, description="earlier points a series needs to be judged")
    max_history: int = Field(120, ge=3, description="the most recent points kept as the baseline")
    seasonal: bool = Field(True, description="compare with the same weekday when history shows it")
    seasonal_min_weekday: int = Field(4, ge=2, description="same-weekday points for a weekday baseline")
    seasonal_min_daytype: int = Field(2, ge=1, description="weekday/weekend points, before that")
    seasonal_shift: float = Field(3.0, ge=0, description="scales the group's median must be off")


class SeriesRule(BaseModel):
    """How one kind of series is judged."""

    direction: Direction
    log: bool  # judged in log space (multiplicative noise)
    floor: float  # the least scale: in log units when `log`, else a share of |median|
    abs_floor: float = 0.0  # the least scale in the series' own units (linear series)
    min_delta: float = 0.0  # the least |value - expected| in the series' own units


def rule_for(series: str) -> SeriesRule:
    if series.startswith("duration:"):
        return SeriesRule(direction="high", log=True, floor=0.10, min_delta=2.0)
    if series in ("rows_in", "rows_valid"):
        return SeriesRule(direction="low", log=True, floor=0.05, min_delta=1.0)
    if series == "quarantine_rate":
        return SeriesRule(direction="high", log=False, floor=0.0, abs_floor=0.005)
    if series.startswith(("metric:", "live_quality:")):
        metric = series.rsplit(":", 1)[-1]
        from mlplatform.evaluation.metric_names import greater_is_better

        try:
            better_high = greater_is_better(metric)
        except KeyError:
            better_high = True
        return SeriesRule(direction="low" if better_high else "high", log=False, floor=0.005,
                          abs_floor=0.001)
    return SeriesRule(direction="high", log=False, floor=0.05, abs_floor=1e-9)


# An anomaly of the key is dropped when one of these (in the given direction) is flagged in the
# same run: it is the same cause seen twice.
EXPLAINED_BY: dict[str, tuple[tuple[str, Direction], ...]] = {
    "rows_valid": (("rows_in", "low"), ("quarantine_rate", "high")),
}


class HistoryInfo(BaseModel):
    n: int
    first: dt.datetime
    last: dt.datetime
    seasonal: bool
    baseline: str  # "all earlier runs" | "earlier Saturdays" | "earlier weekend runs" | ...


class Anomaly(BaseModel):
    series: str
    run_id: str
    at: dt.datetime
    value: float
    expected: float  # the baseline's median, in the series' units
    expected_range: tuple[float, float]  # values within `z` scales of the median
    z: float
    direction: Direction
    history: HistoryInfo
    severity: Literal["warning", "critical"]

    def message(self, pipeline: str) -> str:
        h = self.history
        low, high = self.expected_range
        return (f"{pipeline}: {self.series} of run {self.run_id} is {_fmt(self.value)}, "
                f"{'above' if self.direction == 'high' else 'below'} the expected range "
                f"{_fmt(low)} .. {_fmt(high)} (median {_fmt(self.expected)}, robust z {self.z:+.1f}) "
                f"from {h.n} {h.baseline} between {h.first:%Y-%m-%d} and {h.last:%Y-%m-%d}")


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:,.0f}"


class _Baseline(BaseModel):
    center: float
    scale: float
    n: int
    seasonal: bool
    label: str
    points: list[RunPoint]


def _scale(residuals: list[float], center: float, rule: SeriesRule) -> float:
    """1.4826 x MAD, at least the rule's floor, widened for a short history: the MAD of ten
    points is itself uncertain (about +-35%), and an underestimate makes ordinary values look
    extreme; the widening fades as points accumulate (x1.18 at 10 points, x1.03 at 60)."""
    mad = statistics.median(abs(r) for r in residuals) if residuals else 0.0
    floor = rule.floor if rule.log else max(rule.floor * abs(center), rule.abs_floor)
    return max(MAD_TO_SIGMA * mad, floor) * math.sqrt(1 + 4 / max(len(residuals), 1))


def _daytype(d: dt.datetime) -> str:
    return "weekend" if d.weekday() >= 5 else "weekday"


def _weekday(d: dt.datetime) -> str:
    return WEEKDAYS[d.weekday()]


def _baseline(history: list[tuple[RunPoint, float]], at: dt.datetime, rule: SeriesRule,
              th: Thresholds) -> _Baseline:
    xs = [x for _, x in history]
    center = statistics.median(xs)
    scale = _scale([x - center for x in xs], center, rule)
    overall = _Baseline(center=center, scale=scale, n=len(xs), seasonal=False,
                        label="earlier runs", points=[p for p, _ in history])
    if not th.seasonal:
        return overall
    levels = ((_weekday, th.seasonal_min_weekday, "earlier {}s"),
              (_daytype, th.seasonal_min_daytype, "earlier {} runs"))
    for key, min_points, label in levels:
        groups: dict[str, list[float]] = {}
        for p, x in history:
            groups.setdefault(key(p.at), []).append(x)
        same = groups.get(key(at), [])
        if len(same) < min_points:
            continue
        s_center = statistics.median(same)
        if abs(s_center - center) <= th.seasonal_shift * scale:
            return overall  # no weekly pattern at this level: the overall baseline is steadier
        medians = {k: statistics.median(v) for k, v in groups.items()}
        residuals = [x - medians[key(p.at)] for p, x in history if len(groups[key(p.at)]) >= 2]
        return _Baseline(center=s_center, scale=_scale(residuals, s_center, rule), n=len(same),
                         seasonal=True, label=label.format(key(at)),
                         points=[p for p, _ in history if key(p.at) == key(at)])
    return overall


def judge(series: str, point: RunPoint, history: list[RunPoint],
          th: Thresholds | None = None) -> Anomaly | None:
    """The anomaly of one series of one run against the earlier runs, or None."""
    th = th or Thresholds()
    rule = rule_for(series)
    value = point.values.get(series)
    if value is None:
        return None

    def tr(v: float) -> float | None:
        if not rule.log:
            return v
        return math.log(v) if v > 0 else None

    x = tr(value)
    hist = [(p, t) for p in history[-th.max_history:] if series in p.values
            for t in [tr(p.values[series])] if t is not None]
    if x is None and rule.log:
        x = min((t for _, t in hist), default=0.0) - 10.0  # zero rows: far below any history
    if len(hist) < th.min_history or x is None:
        return None
    base = _baseline(hist, point.at, rule, th)
    z = (x - base.center) / base.scale
    limit = th.duration_z if series.startswith("duration:") else th.z
    bad = z > limit if rule.direction == "high" else z < -limit

    def back(v: float) -> float:
        return math.exp(v) if rule.log else v

    expected = back(base.center)
    if not bad or abs(value - expected) < rule.min_delta:
        return None
    low, high = back(base.center - limit * base.scale), back(base.center + limit * base.scale)
    return Anomaly(series=series, run_id=point.run_id, at=point.at, value=value, expected=expected,
                   expected_range=(low, high), z=round(z, 2), direction=rule.direction,
                   history=HistoryInfo(n=base.n, first=base.points[0].at, last=base.points[-1].at,
                                       seasonal=base.seasonal, baseline=base.label),
                   severity="critical" if abs(z) >= limit * th.critical_factor else "warning")


def _dedupe(found: list[Anomaly]) -> list[Anomaly]:
    flagged = {(a.series, a.direction) for a in found}
    return [a for a in found if not any(c in flagged for c in EXPLAINED_BY.get(a.series, ()))]


def detect(services: Services, pipeline: str, *, run_id: str | None = None, now: dt.datetime | None = None,
           thresholds: Thresholds | None = None) -> list[Anomaly]:
    """The anomalies of one run (default: the newest finished run up to `now`) against the
    earlier runs of the same pipeline. An unknown run id is an empty answer, not an error."""
    until = None
    if now is not None:
        until = now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now
    th = thresholds or Thresholds()
    if run_id is not None:  # the run and the history before it: nothing newer is read
        with services.metadata.session() as s:
            at = s.scalar(select(ContextRow.created_at).where(ContextRow.type == "pipeline_run",
                                                              ContextRow.name == run_id))
        if at is None:
            return []
        until = at if until is None else min(until, at)
    # The newest runs only (a margin for unfinished ones): the baseline is max_history points.
    points = load_history(services, pipeline, until=until, limit=th.max_history + 20)
    if run_id is None:
        finished = [i for i, p in enumerate(points) if p.status in ("SUCCEEDED", "FAILED")]
        if not finished:
            return []
        index = finished[-1]
    else:
        index = next((i for i, p in enumerate(points) if p.run_id == run_id), -1)
        if index < 0:
            return []
    target, history = points[index], points[:index]
    found = [a for s in sorted(target.values)
             if (a := judge(s, target, history, thresholds)) is not None]
    return _dedupe(found)


def _already_alerted(services: Services, pipeline: str, run_id: str) -> set[str]:
    with services.metadata.session() as s:
        return set(s.scalars(select(AlertRow.kind).where(
            AlertRow.pipeline == pipeline, AlertRow.run_id == run_id, AlertRow.source == "anomaly")))


def alert_kind(series: str) -> str:
    return f"anomaly:{series}"[:64]  # AlertRow.kind is 64 characters


def check_run(services: Services, pipeline: str, run_id: str) -> list[Alert]:
    """Raise one alert per anomaly of the run; none twice for the same run and series.

    Never raises: called at the end of every pipeline run and by the watcher, where a fault in
    a monitoring side-line must not fail the run; it is logged instead.
    """
    from mlplatform.monitoring.alerts import raise_alert

    raised: list[Alert] = []
    try:
        anomalies = detect(services, pipeline, run_id=run_id)
        if not anomalies:
            return raised
        seen = _already_alerted(services, pipeline, run_id)
        for a in anomalies:
            kind = alert_kind(a.series)
            if kind in seen:
                continue
            step = a.series.split(":", 1)[1] if a.series.startswith("duration:") else None
            raised.append(raise_alert(services, pipeline=pipeline, source="anomaly", kind=kind,
                                      severity=a.severity, message=a.message(pipeline), run_id=run_id,
                                      step=step, link=f"run:{run_id}",
                                      details=a.model_dump(mode="json")))
            seen.add(kind)
    except Exception:
        log.exception("anomaly check of run %s of %s failed", run_id, pipeline)
    return raised


__all__ = ["Anomaly", "HistoryInfo", "Thresholds", "check_run", "detect", "judge"]
