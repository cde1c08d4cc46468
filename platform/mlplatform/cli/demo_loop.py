"""The demo's closed loop after each day's run: live traffic and outcomes for a rollout until
it promotes or rolls back by itself, the bad-model day's spec, the check that a stopped day
left the champion serving, and the timeline the demo prints and reports.

The traffic is the holdout of the challenger's training set (rows neither model trained on),
one row per HTTP request, with the generator's true labels fed back: the A/B test and the
guardrails judge what they would judge in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlplatform.errors import PlatformError
from mlplatform.rollout.state import RolloutState
from mlplatform.rollout.store import RolloutStore
from mlplatform.services import Services
from mlplatform.settings import Settings

FAULT_ESTIMATOR = "jobs.examples.demo_faults.SingleRowBugClassifier"
FAULT_MODULE = "jobs.examples.demo_faults"


def bad_model_spec(spec: Path, folder: Path) -> Path:
    """demo.yaml with the estimator that fails one-row requests (a folder of its own: the
    job's working directory is the spec's folder, and the data folder must not be uploaded)."""
    text = spec.read_text()
    old = "estimator: sklearn.ensemble.HistGradientBoostingClassifier"
    if old not in text:
        raise PlatformError(f"{spec}: expected `{old}` to swap in the demo's faulty model")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / spec.name
    out.write_text(text.replace(old, f"estimator: {FAULT_ESTIMATOR}"))
    return out


def follow(settings: Settings, pipeline: str, rollout_id: str, *,
           show: Callable[[str], None], timeout_s: float = 600) -> tuple[RolloutState, dict[str, Any]]:
    """Send traffic and outcomes until the rollout is decided and applied; a rollout still
    undecided after `timeout_s` (or paused for a person) is aborted, saying so."""
    from mlplatform.rollout import apply
    from mlplatform.serving.replay import Replay, holdout_rows

    services = Services(settings)
    store = RolloutStore(services.metadata)
    state = store.get(rollout_id)
    if state is None:
        raise PlatformError(f"rollout {rollout_id} is not recorded")
    rows, labels = holdout_rows(services, state.model_name, state.challenger)
    # One caller sending single rows (what the faulty model fails on), one sending batches of 50
    # (outcomes enough for the A/B test to decide within the demo's minutes).
    replay = Replay(f"{settings.serve_url}/{pipeline}", rows, labels, rows_per_request=[1, 50]).start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            state = store.get(rollout_id) or state
            s = replay.stats
            show(f"{state.strategy} v{state.challenger} vs v{state.champion}: {state.status}, "
                 f"{state.phase} at {state.weight}% · {s.sent} requests ({dict(s.versions)}), "
                 f"{s.feedback} outcomes fed back")
            if state.settled:
                break
            if state.status == "paused" or time.monotonic() > deadline:
                why = state.reason if state.status == "paused" else f"undecided after {timeout_s:.0f}s"
                state = apply.abort(services, state, by="demo", reason=f"the demo aborts it: {why}")
                break
            time.sleep(0.5)
    finally:
        stats = replay.stop()
    return state, {"requests": stats.sent, "failed": stats.failed, "feedback": stats.feedback,
                   "by_version": dict(stats.versions)}


def still_serving(settings: Settings, pipeline: str) -> str:
    """One request to the served pipeline: which version answered (the champion, after a day
    that stopped at validation)."""
    from mlplatform.serving.client import ServeClient
    from mlplatform.serving.infra import json_value, sample_rows

    services = Services(settings)
    champion = services.models.champion(pipeline)
    if champion is None:
        raise PlatformError(f"{pipeline} has no champion")
    row = sample_rows(services, pipeline, champion, 1).iloc[0].to_dict()
    answer = ServeClient(settings, pipeline).predict({"rows": [{k: json_value(v) for k, v in row.items()}]})
    return str(answer["predictions"][0]["version"])


def outcome_line(state: RolloutState) -> str:
    """One line for the timeline: what the rollout decided, and the A/B test's last word."""
    verb = {"promoted": "promoted", "rolled_back": "rolled back", "aborted": "aborted",
            "paused": "paused"}.get(state.status, state.status)
    line = f"{state.strategy} {verb} v{state.challenger}"
    tests = [e.test for e in state.timeline if e.test is not None]
    if tests:
        t = tests[-1]
        ci = (f" [{t.ci_low:+.4f}, {t.ci_high:+.4f}]" if t.ci_low is not None and t.ci_high is not None
              else "")
        lift = f"{t.lift:+.4f}" if t.lift is not None else "n/a"
        line += f"; A/B {t.metric}: {t.verdict}, lift {lift}{ci} (n {t.n_champion}/{t.n_challenger})"
    if state.status != "promoted" and state.reason:
        line += f"; {state.reason}"
    return line


class LiveMonitoring(BaseModel):
    """What the monitor saw of one rollout's traffic: live drift and live quality of the version
    that served it as champion (the baseline), as the trigger watcher would record them."""

    version: str
    rows: int = 0
    drift: str  # one line
    drifted_features: list[str] = []
    dataset_drift: bool = False
    drift_report: str | None = None
    drift_alert: int | None = None
    quality: str | None = None


def monitor_rollout(settings: Settings, spec_file: Path, state: RolloutState) -> LiveMonitoring:
    """Live drift and quality over the rollout's window, for the version that was champion when
    it started: the traffic of a drift day is the new data, served by a model that never saw it."""
    import datetime as dt

    from mlplatform.monitoring.live_drift import run_live_drift
    from mlplatform.monitoring.quality import run_quality
    from mlplatform.spec_code import load_for

    time.sleep(2.5)  # the replicas write their prediction logs every second
    services = Services(settings)
    spec = load_for(spec_file, settings)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    window_s = (now - state.started_at).total_seconds() + 5
    drift = run_live_drift(services, spec, window_s=window_s, now=now, version=state.champion)
    out = LiveMonitoring(version=state.champion, rows=drift.rows, drift=drift.message,
                         drifted_features=drift.drifted_features, dataset_drift=drift.dataset_drift,
                         drift_report=drift.report_uri, drift_alert=drift.alert_id)
    quality = run_quality(services, spec, window_s=window_s, now=now, version=state.champion)
    if quality.realised is not None or quality.estimated is not None:
        real = "-" if quality.realised is None else f"{quality.realised:.3f}"
        est = "-" if quality.estimated is None else f"{quality.estimated:.3f}"
        out.quality = f"{quality.metric} realised {real}, estimated (CBPE) {est}"
    return out
