"""Progressive delivery on the session's real Ray cluster and Ray Serve: a pipeline whose spec
says `strategy: canary` trains a first champion (served directly), then a healthy challenger
(canaried under live traffic, its controller killed midway, promoted with no failed request),
then a challenger with a bug no offline check sees (rolled back by its success-rate guardrail).

The traffic is real HTTP, one row per request, with the true labels fed back; the truths are
the HTTP status codes the clients saw, the champion record, and what Serve reports it runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.pipeline import run_pipeline
from mlplatform.rollout.runner import NAMESPACE, actor_name, stop_runner
from mlplatform.rollout.state import RolloutState
from mlplatform.rollout.store import RolloutInProgress, RolloutStore
from mlplatform.services import Services
from mlplatform.serving.client import ServeControl
from mlplatform.serving.replay import Replay, holdout_rows
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_loader import load_spec
from tests.conftest import platformctl

ROOT = Path(__file__).resolve().parents[2]
NAME = "canary"
INTERVAL_S = 3
# A user's shell: RAY_AUTH_MODE as they set it, not one this test process applied.
UNSET = ("_PLATFORM_APPLIED_RAY_AUTH_MODE",)
ROLLOUT = {"strategy": "canary", "steps": [10, 50], "interval": f"{INTERVAL_S}s", "failure_limit": 2,
           "step_timeout": "2m",
           "guardrails": {"success_rate": {"min_requests": 10},
                          # Two cores shared with the clients: latency is judged loosely here.
                          "latency": {"min_requests": 10, "max_ratio": 4, "slack_ms": 100}}}


@pytest.fixture(scope="module")
def canary(ray_connected: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("canary") / "home"
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           "PLATFORM_ESTIMATOR_MODULES": "sklearn,jobs.examples.demo_faults",
           **{k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "PLATFORM_SERVE_PORT")}}
    settings = load_settings(env=env)
    raw = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env=env).model_dump(
        mode="json", by_alias=True, exclude_none=True)
    raw.update(name=NAME)
    raw["model"].update(search=None, params={"max_iter": 60})
    raw["deploy"]["rollout"] = ROLLOUT
    spec = PipelineSpec.model_validate(raw)
    cfg = DemoDataConfig(days=3, rows_per_day=1500, entities=400)
    data = home / "demo" / "data"
    write_day(data, cfg, 1)
    first = run_pipeline(spec, settings, log=lambda m: None)
    assert first.status == "SUCCEEDED", first.message
    services = Services(settings)
    assert services.models.champion(NAME) == "1"  # a first model has no champion to canary against
    yield {"env": env, "settings": settings, "spec": spec, "raw": raw, "cfg": cfg, "data": data,
           "services": services, "store": RolloutStore(services.metadata)}
    stop_runner(NAME)
    ServeControl(settings).down(NAME)


def _step(report: Any, name: str) -> Any:
    return next(s for s in report.steps if s.step == name)


def _wait(store: RolloutStore, rollout_id: str, until: Any, timeout_s: float = 180) -> RolloutState:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = store.get(rollout_id)
        assert state is not None
        if until(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"rollout {rollout_id} did not get there in {timeout_s}s: {store.get(rollout_id)}")


def _traffic(canary: dict[str, Any], version: str) -> Replay:
    rows, labels = holdout_rows(canary["services"], NAME, version)
    return Replay(f"{canary['settings'].serve_url}/{NAME}", rows, labels, clients=2).start()


def test_a_healthy_canary_is_promoted_with_no_failed_request_despite_a_killed_controller(
        canary: dict[str, Any]) -> None:
    import ray

    write_day(canary["data"], canary["cfg"], 2)
    report = run_pipeline(canary["spec"], canary["settings"], log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    promote, rollout = _step(report, "promote"), _step(report, "rollout")
    assert promote.status == "COMPLETE" and rollout.status == "COMPLETE", (promote.message, rollout.message)
    store: RolloutStore = canary["store"]
    state = store.active(NAME)
    assert state is not None, rollout.message
    assert (state.champion, state.challenger, state.weight) == ("1", "2", 10)
    assert canary["services"].models.champion(NAME) == "1"  # the gate alone does not promote it

    # One rollout per pipeline at a time: a second is refused, naming the first.
    with pytest.raises(RolloutInProgress, match=state.id):
        store.create(state.model_copy(update={"id": "another", "challenger": "9"}))

    replay = _traffic(canary, "2")
    try:
        at_50 = _wait(store, state.id, lambda s: s.weight == 50 or not s.active)
        assert at_50.active, at_50.reason
        # Kill the controller mid-rollout: Ray restarts the actor, which resumes from the store.
        ray.kill(ray.get_actor(actor_name(NAME), namespace=NAMESPACE), no_restart=False)
        done = _wait(store, state.id, lambda s: s.settled)
    finally:
        stats = replay.stop()
    assert done.status == "promoted", done.reason
    assert stats.failed == 0, stats.failures[:3]
    assert stats.sent > 100 and stats.versions["1"] > 0 and stats.versions["2"] > 0, stats
    weights = [e.weight for e in done.timeline if e.action in ("start", "advance", "promote")]
    assert weights == [10, 50, 100], [(e.action, e.weight, e.reasons) for e in done.timeline]
    assert all(c.status == "passed" for e in done.timeline if e.action == "advance" for c in e.checks)
    # The champion record moved by compare-and-set, and Serve runs the new champion alone.
    record = canary["services"].metadata.champion(NAME)
    assert record is not None and record.version == "2" and record.change.action == "promote"
    assert done.id in record.change.reason
    live = ServeControl(canary["settings"]).app(NAME)
    assert live is not None and live.config is not None
    assert live.config.champion == "2" and live.config.weights["2"] == 100
    tags = canary["services"].models.version(NAME, "2").tags
    assert tags["rollout.decision"] == "promoted" and tags["rollout.id"] == done.id


def test_a_challenger_that_fails_live_is_rolled_back_by_its_guardrail(canary: dict[str, Any]) -> None:
    raw = {**canary["raw"], "model": {**canary["raw"]["model"],
                                      "estimator": "jobs.examples.demo_faults.SingleRowBugClassifier"}}
    spec = PipelineSpec.model_validate(raw)
    write_day(canary["data"], canary["cfg"], 3)
    report = run_pipeline(spec, canary["settings"], log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    store: RolloutStore = canary["store"]
    state = store.active(NAME)
    assert state is not None, _step(report, "rollout").message
    assert (state.champion, state.challenger) == ("2", "3")  # it passed the offline gate and infra validation

    ab = platformctl("ab", "status", NAME, "--json", env=canary["env"], unset=UNSET)
    assert ab.returncode == 0, ab.stderr
    replay = _traffic(canary, "3")
    try:
        done = _wait(store, state.id, lambda s: s.settled)
    finally:
        stats = replay.stop()
    assert done.status == "rolled_back", done.reason
    assert "success_rate" in done.reason or "success rate" in done.reason
    failed_checks = [e for e in done.timeline if any(c.status == "failed" for c in e.checks)]
    assert len(failed_checks) == 2  # the plan's failure_limit
    # Only the challenger's requests failed, and the champion serves everything again.
    assert stats.failed > 0 and stats.versions.get("3", 0) == 0
    services = canary["services"]
    assert services.models.champion(NAME) == "2"
    live = ServeControl(canary["settings"]).app(NAME)
    assert live is not None and live.config is not None
    assert {k: v for k, v in live.config.weights.items() if v} == {"2": 100}
    assert "3" not in live.config.weights
    assert services.models.alias(NAME, "challenger") != "3"
    alerts = [a for a in services.metadata.alerts(NAME) if a.kind == "rollout_rolled_back"]
    assert alerts and alerts[0].severity == "critical" and "v3" in alerts[0].message
    assert services.models.version(NAME, "3").tags["rollout.decision"] == "rolled_back"
    shown = platformctl("rollout", "status", NAME, "--json", env=canary["env"], unset=UNSET)
    assert shown.returncode == 0 and '"rolled_back"' in shown.stdout


def test_the_loop_report_of_these_rollouts_opens_in_chromium(canary: dict[str, Any], tmp_path: Path) -> None:
    """The demo's HTML report, built from this module's real rollouts and the prediction log
    their traffic wrote, opened in headless Chromium: one figure per rollout, every one decoded."""
    from mlplatform.cli.demo_loop import outcome_line
    from mlplatform.rollout import report
    from tests.e2e.test_report_browser import open_in_chromium

    rollouts = list(reversed(canary["store"].list(NAME)))
    assert [r.status for r in rollouts] == ["promoted", "rolled_back"]
    days = [report.DayRow(day=i + 2, date=f"2026-01-0{i + 2}", kind=kind, run_status="SUCCEEDED",
                          model_version=r.challenger, gate="passed", rollout_id=r.id, outcome=outcome_line(r),
                          champion_after="2")
            for i, (kind, r) in enumerate(zip(["normal", "bad model"], rollouts, strict=True))]
    built = report.build(canary["settings"].storage_uri, "churn", NAME, days, rollouts, None)
    assert all(built.series[r.id] for r in rollouts)  # each rollout's traffic, from the log
    dom = open_in_chromium(report.write(built, tmp_path / "loop.html"), tmp_path)
    assert "canary promoted v2" in dom and "canary rolled back v3" in dom
