"""The closed loop's report: what each day of the demo did (train, gate, rollout) and, per
rollout, what the controller saw and why it decided what it did.

One self-contained HTML file (plots are base64 PNGs from matplotlib, Agg backend), like the
validation report, so it can be attached to a ticket or opened from a CI artifact with no
server. Each rollout's figure stacks its panels on one time axis so that a weight change
can be read against the errors, latency, outcomes and A/B lift that led to it; the numbers
behind every decision are in the timeline table under it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlplatform.rollout.observe import outcome, split
from mlplatform.rollout.plan import BINARY_METRICS
from mlplatform.rollout.state import Event, RolloutState
from mlplatform.serving.predictions import joined_feedback


class DayRow(BaseModel):
    """One day of the demo, as the demo driver saw it."""

    day: int
    date: str
    kind: str  # first, normal, drift, bad model, noisy labels, schema break
    run_id: str | None = None
    run_status: str
    model_version: str | None = None
    gate: str | None = None  # passed | rejected | None (no model reached the gate)
    rollout_id: str | None = None
    outcome: str  # one line: what happened
    champion_after: str | None = None
    live_drift: str | None = None  # the monitor's live drift (and quality) over the day's traffic
    live_drift_report: str | None = None
    alerts: list[str] = []  # the day's alerts, one short line each


class SeriesPoint(BaseModel):
    """One version's live traffic in one time bucket. `requests` counts answers (no server
    error), `errors` the failed requests, as VariantStats does: error rate = errors / (both)."""

    at: dt.datetime  # the bucket's start (naive UTC, like the rollout's times)
    version: str
    variant: str  # champion, or the challenger's variant (challenger | shadow), most rows in the bucket
    requests: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    outcome_mean: float | None = None
    outcomes: int = 0


class LoopReport(BaseModel):
    pipeline: str
    generated_at: dt.datetime
    days: list[DayRow]
    rollouts: list[RolloutState]
    series: dict[str, list[SeriesPoint]]  # per rollout id
    metric: str | None = None


def _naive_utc(value: Any) -> Any:
    """Log timestamps and state times compared as naive UTC (the metadata store's convention)."""
    if isinstance(value, pd.Series):
        ts = pd.to_datetime(value)
        return ts.dt.tz_convert("UTC").dt.tz_localize(None) if ts.dt.tz is not None else ts
    stamp = pd.Timestamp(value)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def _plan_metric(state: RolloutState) -> str | None:
    """The metric the rollout's own plan judged by, when the caller names none."""
    ab, quality = state.plan.get("ab_test") or {}, (state.plan.get("guardrails") or {}).get("quality") or {}
    return ab.get("metric") or quality.get("metric")


def series(log: pd.DataFrame, state: RolloutState, metric: str | None,
           bucket_s: float = 2.0) -> list[SeriesPoint]:
    """The champion's and the challenger's live traffic (observe.split: the same rows the
    controller judged) from started_at to updated_at, in buckets of bucket_s seconds counted
    from started_at; buckets without traffic are left out (a gap, not a zero)."""
    if log.empty:
        return []
    start, end = _naive_utc(state.started_at), _naive_utc(state.updated_at)
    points: list[SeriesPoint] = []
    for side, rows in zip(("champion", "challenger"), split(log, state), strict=True):
        if rows.empty:
            continue
        # the column before the filter: assigning a Series to an empty frame takes its index
        rows = rows.assign(_ts=_naive_utc(rows["event_ts"]))
        rows = rows.loc[(rows["_ts"] >= start) & (rows["_ts"] <= end)]
        if rows.empty:
            continue
        rows = rows.assign(_bucket=((rows["_ts"] - start).dt.total_seconds() // bucket_s).astype(int))
        version = state.champion if side == "champion" else state.challenger
        for bucket, group in rows.groupby("_bucket", sort=True):
            failed = group["error"].notna()
            ok = group.loc[~failed]
            latency = pd.to_numeric(group["latency_ms"], errors="coerce").dropna().to_numpy(dtype="float64")
            values = np.array([], dtype="float64")
            if metric is not None and "label" in ok.columns and len(ok):
                values = outcome(ok, metric).dropna().to_numpy(dtype="float64")  # type: ignore[arg-type]
                if metric in BINARY_METRICS:
                    values = values[(values == 0) | (values == 1)]
            points.append(SeriesPoint(
                at=(start + pd.Timedelta(seconds=int(bucket) * bucket_s)).to_pydatetime(),
                version=version, variant=str(group["variant"].mode().iloc[0]),
                requests=len(ok), errors=int(failed.sum()),
                p50_ms=float(np.percentile(latency, 50)) if len(latency) else None,
                p99_ms=float(np.percentile(latency, 99)) if len(latency) else None,
                outcome_mean=float(values.mean()) if len(values) else None, outcomes=len(values)))
    return sorted(points, key=lambda p: (p.at, p.version != state.champion))


def build(storage_uri: str, service: str, pipeline: str, days: list[DayRow],
          rollouts: list[RolloutState], metric: str | None, *, bucket_s: float = 2.0) -> LoopReport:
    """Read each rollout's window of the prediction log (with feedback) and bucket it. With
    metric None, each rollout's series uses its own plan's A/B (or quality) metric. The 2-s
    default suits the demo's compressed rollouts; a rollout of hours wants minutes."""
    out: dict[str, list[SeriesPoint]] = {}
    for state in rollouts:
        log = joined_feedback(storage_uri, pipeline, service, since=state.started_at,
                              until=state.updated_at, features=False)
        out[state.id] = series(log, state, metric or _plan_metric(state), bucket_s)
    return LoopReport(pipeline=pipeline, generated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                      days=days, rollouts=rollouts, series=out, metric=metric)


# -- figures ------------------------------------------------------------------------------

MARKERS = {"advance": ("^", "#1565c0"), "promote": ("*", "#2e7d32"), "rollback": ("X", "#c62828"),
           "pause": ("s", "#ef6c00"), "resume": ("o", "#6a1b9a"), "abort": ("X", "#424242")}
DECISIONS = ("promote", "rollback", "abort")


def panels(state: RolloutState, points: Sequence[SeriesPoint]) -> list[str]:
    """The panels a rollout's figure has: outcome and lift only when there is something to
    draw (a rollout stopped before any feedback has neither)."""
    names = ["weight", "error rate", "latency"]
    if any(p.outcomes for p in points):
        names.append("outcome")
    if any(ev.test is not None and ev.test.lift is not None for ev in state.timeline):
        names.append("lift")
    return names


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _weight(ax: Any, state: RolloutState) -> None:
    events = sorted(state.timeline, key=lambda ev: ev.at)
    if events:
        times = [_naive_utc(ev.at) for ev in events] + [_naive_utc(max(state.updated_at, events[-1].at))]
        weights = [ev.weight for ev in events] + [events[-1].weight]
        ax.step(times, weights, where="post", color="#1565c0", linewidth=1.5)
    for ev in events:
        if ev.action in MARKERS:
            marker, colour = MARKERS[ev.action]
            ax.plot([_naive_utc(ev.at)], [ev.weight], marker=marker, color=colour, markersize=9,
                    linestyle="none", label=ev.action)
            ax.annotate(f"{ev.action} {ev.weight}%", (_naive_utc(ev.at), ev.weight), fontsize=7,
                        xytext=(3, 4), textcoords="offset points")
    ax.set_ylim(-5, 120)  # room for the annotations above 100 %
    ax.set_ylabel("challenger %", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _by_version(state: RolloutState, points: Sequence[SeriesPoint]) -> list[tuple[str, list[SeriesPoint]]]:
    return [(f"{v} ({role})", [p for p in points if p.version == v])
            for v, role in ((state.champion, "champion"), (state.challenger, "challenger"))
            if any(p.version == v for p in points)]


def _figure(state: RolloutState, points: Sequence[SeriesPoint], metric: str | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    names = panels(state, points)
    fig, axes = plt.subplots(len(names), 1, figsize=(7.5, 1.6 * len(names) + 0.4), sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    lines = _by_version(state, points)
    for ax, name in zip(axes, names, strict=True):
        if name == "weight":
            _weight(ax, state)
        elif name == "error rate":
            for label, pts in lines:
                ax.plot([p.at for p in pts], [p.errors / max(p.requests + p.errors, 1) for p in pts],
                        marker=".", label=label)
            ax.set_ylabel("error rate", fontsize=8)
        elif name == "latency":
            for i, (label, pts) in enumerate(lines):
                colour = f"C{i}"
                ax.plot([p.at for p in pts], [np.nan if p.p50_ms is None else p.p50_ms for p in pts],
                        color=colour, marker=".", label=f"{label} p50")
                ax.plot([p.at for p in pts], [np.nan if p.p99_ms is None else p.p99_ms for p in pts],
                        color=colour, marker="x", markersize=4, linestyle="--", label=f"{label} p99")
            ax.set_ylabel("latency ms", fontsize=8)
        elif name == "outcome":
            for label, pts in lines:
                pts = [p for p in pts if p.outcomes]
                ax.plot([p.at for p in pts], [p.outcome_mean for p in pts], marker=".", label=label)
            ax.set_ylabel(metric or "outcome", fontsize=8)
        else:  # lift: the A/B test at each look, with its confidence interval
            tests = [(_naive_utc(ev.at), ev.test) for ev in state.timeline
                     if ev.test is not None and ev.test.lift is not None]
            at = [t for t, _ in tests]
            lift = [x.lift for _, x in tests]
            low = [np.nan if x.ci_low is None else x.ci_low for _, x in tests]
            high = [np.nan if x.ci_high is None else x.ci_high for _, x in tests]
            ax.fill_between(at, low, high, alpha=0.25, color="#6a1b9a", label="CI")
            ax.vlines(at, low, high, color="#6a1b9a", alpha=0.5)  # a lone look has no band to shade
            ax.plot(at, lift, marker="o", color="#6a1b9a", label="lift")
            ax.axhline(0, color="grey", linewidth=1)
            ax.set_ylabel("A/B lift", fontsize=8)
        if name != "weight" and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the data
        if name in ("error rate", "latency") and not lines:
            ax.text(0.5, 0.5, "no live traffic in the log", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="grey")
        ax.margins(x=0.03, y=0.15)  # a lone point at the edge stays visible
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        for ev in state.timeline:
            if ev.action in DECISIONS:
                ax.axvline(_naive_utc(ev.at), color=MARKERS[ev.action][1], linewidth=1, alpha=0.6)
    locator = mdates.AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[0].set_title(f"{state.id}: {state.champion} -> {state.challenger} ({state.strategy})", fontsize=9)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


# -- HTML ---------------------------------------------------------------------------------

e = html.escape
TONES = {"promoted": "#e8f5e9", "rolled back": "#ffebee", "rejected": "#fff3e0", "stopped": "#fffde7",
         "failed": "#ffebee"}


def _tone(day: DayRow) -> str:
    """The day's colour, from what happened to its model: promoted, rolled back, rejected at
    the gate, stopped (validation, an aborted rollout), the run failed, or nothing to roll out."""
    text = day.outcome.lower()
    if "rolled back" in text or "rollback" in text:
        return "rolled back"
    if "promot" in text:
        return "promoted"
    if day.gate == "rejected":
        return "rejected"
    if "stop" in text or "abort" in text:  # a run that validation stopped is the loop working
        return "stopped"
    if day.run_status.lower() in ("failed", "error"):
        return "failed"
    return ""


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "" if value is None else format(value, fmt)


def _event_row(ev: Event) -> str:
    checks = "<br>".join(
        f"<span class='{e(c.status)}'>{e(c.name)} {e(c.status)}</span>: challenger {_num(c.challenger)}, "
        f"champion {_num(c.champion)}, threshold {_num(c.threshold)}; {e(c.detail)}" for c in ev.checks)
    t = ev.test
    test = "" if t is None else (
        f"{e(t.metric)} {e(t.method)}: n {t.n_champion}/{t.n_challenger}, lift {_num(t.lift)} "
        f"[{_num(t.ci_low)}, {_num(t.ci_high)}], p {_num(t.p_value)}, <b>{e(t.verdict)}</b> {e(t.detail)}")
    return (f"<tr><td>{e(ev.at.isoformat(sep=' ', timespec='seconds'))}</td><td>{e(ev.action)}</td>"
            f"<td>{e(ev.phase)}</td><td>{ev.weight}%</td><td>{e(ev.by)}</td>"
            f"<td>{e('; '.join(ev.reasons))}</td><td>{checks}</td><td>{test}</td></tr>")


def _rollout_section(state: RolloutState, points: Sequence[SeriesPoint], metric: str | None) -> str:
    names = panels(state, points)
    png = _figure(state, points, metric or _plan_metric(state))
    requests = sum(p.requests + p.errors for p in points)
    alt = (f"Rollout {state.id} of {state.challenger} against {state.champion}: "
           f"{', '.join(names)} over time")
    events = "".join(_event_row(ev) for ev in state.timeline)
    return (f"<section id='rollout-{e(state.id)}'><h3>{e(state.id)}: {e(state.champion)} &rarr; "
            f"{e(state.challenger)} ({e(state.strategy)})</h3>"
            f"<figure><img src='data:image/png;base64,{png}' alt='{e(alt)}'>"
            f"<figcaption>{e(alt)}; {requests} live requests in buckets of the log. Vertical lines: "
            "promote (green), rollback (red).</figcaption></figure>"
            f"<p class='decision {e(state.status)}'>Decision: <b>{e(state.status)}</b> at weight "
            f"{state.weight}% in phase {e(state.phase)}. {e(state.reason)}</p>"
            "<table><tr><th>at</th><th>action</th><th>phase</th><th>weight</th><th>by</th><th>reasons</th>"
            f"<th>guardrails</th><th>A/B test</th></tr>{events}</table></section>")


def _versions(report: LoopReport) -> str:
    """One row per model version the loop trained: its gate, and what its rollout did."""
    by_id = {r.id: r for r in report.rollouts}
    rows = []
    for d in report.days:
        if d.model_version is None:
            continue
        r = by_id.get(d.rollout_id or "")
        rollout = "not rolled out" if r is None else f"{r.id}: {r.status} ({r.reason})"
        rows.append(f"<tr class='t-{_tone(d).replace(' ', '-')}'><td>{e(d.model_version)}</td>"
                    f"<td>day {d.day} ({e(d.kind)})</td><td>{e(d.run_id or '')}</td>"
                    f"<td>{e(d.gate or '')}</td>"
                    f"<td>{e(rollout)}</td><td>{e(d.champion_after or '')}</td></tr>")
    return ("<table><tr><th>version</th><th>trained</th><th>run</th><th>gate</th><th>rollout</th>"
            f"<th>champion after</th></tr>{''.join(rows)}</table>" if rows else "<p>no model trained</p>")


def _live(day: DayRow) -> str:
    if not day.live_drift:
        return ""
    text = e(day.live_drift)
    if day.live_drift_report:
        href = day.live_drift_report if "://" in day.live_drift_report else f"file://{day.live_drift_report}"
        text += f" <a href='{e(href)}'>report</a>"
    return text


def render_html(report: LoopReport) -> str:
    days = "".join(
        f"<tr class='t-{_tone(d).replace(' ', '-')}'><td>{d.day}</td><td>{e(d.date)}</td><td>{e(d.kind)}</td>"
        f"<td>{e(d.run_id or '')} {e(d.run_status)}</td><td>{e(d.model_version or '')}</td>"
        f"<td>{e(d.gate or '')}</td><td>{e(d.rollout_id or '')}</td><td>{e(d.outcome)}</td>"
        f"<td>{e(d.champion_after or '')}</td><td>{_live(d)}</td>"
        f"<td>{'<br>'.join(e(a) for a in d.alerts)}</td></tr>" for d in report.days)
    sections = "".join(_rollout_section(r, report.series.get(r.id, []), report.metric)
                       for r in report.rollouts) or "<p>no rollouts</p>"
    tones = "".join(f".t-{k.replace(' ', '-')}{{background:{v}}}" for k, v in TONES.items())
    legend = " ".join(f"<span class='t-{k.replace(' ', '-')}'>{e(k)}</span>" for k in TONES)
    title = f"Closed loop: {report.pipeline}"
    metric = f"; metric {report.metric}" if report.metric else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;
font-size:13px;margin:0.5em 0}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}
td{{vertical-align:top}}th{{background:#f3f3f3}}figure{{margin:0.5em 0}}
figcaption{{font-size:12px;color:#555}}
.failed{{color:#c62828;font-weight:bold}}.passed{{color:#2e7d32}}.waiting{{color:#777}}{tones}
.legend span{{padding:2px 6px;margin-right:4px}}</style></head><body>
<h1>{e(title)}</h1><p>Generated {e(report.generated_at.isoformat(sep=' ', timespec='seconds'))} UTC;
{len(report.days)} days, {len(report.rollouts)} rollouts{e(metric)}.</p>
<h2>Days</h2><p class='legend'>{legend}</p>
<table><tr><th>day</th><th>date</th><th>kind</th><th>run</th><th>model</th><th>gate</th><th>rollout</th>
<th>outcome</th><th>champion after</th><th>live drift (served traffic)</th><th>alerts</th></tr>{days}</table>
<h2>Rollouts</h2>{sections}
<h2>Model versions and gate decisions</h2>{_versions(report)}
</body></html>"""


def write(report: LoopReport, path: str | os.PathLike[str]) -> Path:
    """Write the HTML next to its final name, then rename: a reader (a browser refreshing, CI
    collecting artifacts) never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render_html(report), encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
