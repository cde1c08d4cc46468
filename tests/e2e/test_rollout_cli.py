"""`platformctl rollout status|list|pause|resume|abort` and `platformctl ab status` on a
rollout stored in the metadata store, without a Ray cluster: what a person sees and what
their hand changes (recorded, with who did it), and bad requests refused with exit 2 and a
message, never a traceback.

The rollout is created through RolloutStore on the metadata store of the PLATFORM_HOME the
commands run with. Where a command asks Serve for the deployed spec, a test says what Serve
answers (ServeControl.deployed_spec patched): nothing deployed, or a spec with its feature
service."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from mlplatform.metadata.store import MetadataStore
from mlplatform.rollout import controller
from mlplatform.rollout.plan import RolloutSpec
from mlplatform.rollout.state import RolloutState
from mlplatform.rollout.store import RolloutStore
from mlplatform.serving.client import ServeControl
from mlplatform.settings import Settings, load_settings
from tests.conftest import cli

PIPE = "churn"
PLAN = {"strategy": "canary", "steps": [10, 50], "interval": "1m", "step_timeout": "30m",
        "ab_test": {"metric": "brier", "min_samples": 200}}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Home:
    """A PLATFORM_HOME with its metadata store; `run` runs platformctl against it."""

    def __init__(self, path: Path):
        self.path = path
        self.env = {"PLATFORM_HOME": str(path)}
        self.settings: Settings = load_settings(self.env)
        self.metadata = MetadataStore(self.settings.metadata_url)
        self.store = RolloutStore(self.metadata)

    def start(self, rollout_id: str = "r1", pipeline: str = PIPE, *, challenger: str = "2",
              ago: dt.timedelta = dt.timedelta(minutes=5), **plan: object) -> RolloutState:
        spec = RolloutSpec.model_validate({**PLAN, **plan})
        state = controller.start(
            spec, rollout_id=rollout_id, pipeline=pipeline, model_name=f"{pipeline}-model", champion="1",
            challenger=challenger, run_id=f"run-{rollout_id}", now=_now() - ago)
        # As the rollout step stores it: with the feature service whose log its checks read.
        return self.store.create(state.model_copy(update={"service": "churn"}))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(*args, env=self.env)

    def json(self, *args: str) -> object:
        result = self.run(*args, "--json")
        assert result.returncode == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


@pytest.fixture
def nothing_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve answers, with no application for the pipeline (e.g. after `serve down`)."""
    monkeypatch.setattr(ServeControl, "deployed_spec", lambda self, pipeline: None)


def _flat(text: str) -> str:
    return " ".join(text.split())


def _refused(result: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    text = _flat(result.stderr)
    for needle in needles:
        assert needle in text, (needle, text)
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in text
    return text


def _no_traceback(result: subprocess.CompletedProcess[str], why: str) -> None:
    """Done, or failed with the message `why` (exit 1: the operation, not the input): never a
    traceback or an internal error."""
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in result.stderr
    if result.returncode != 0:
        assert result.returncode == 1 and why in _flat(result.stderr), (result.returncode, result.stderr)


ME = f"{getpass.getuser()}@{socket.gethostname()}"


def test_the_default_metadata_url_is_the_one_under_home(home: Home) -> None:
    assert home.settings.metadata_url == f"sqlite:///{home.path.resolve() / 'metadata.db'}"


def test_status_shows_the_rollout(home: Home) -> None:
    stored = home.start()
    shown = home.json("rollout", "status", PIPE)
    assert RolloutState.model_validate(shown) == stored
    assert (shown["status"], shown["phase"], shown["weight"]) == ("running", "canary", 10)
    assert [e["action"] for e in shown["timeline"]] == ["start"]
    table = home.run("rollout", "status", PIPE)
    assert table.returncode == 0, table.stderr
    text = _flat(table.stdout)
    assert "r1" in text and "running" in text and "v2 at 10%" in text and "champion v1" in text


def test_status_of_a_pipeline_without_rollouts_names_it(home: Home) -> None:
    home.start()
    _refused(home.run("rollout", "status", "unknown"), "pipeline 'unknown' has had no rollout")
    _refused(home.run("rollout", "status", "unknown", "--json"), "'unknown'")
    _refused(home.run("ab", "status", "unknown", "--json"), "pipeline 'unknown' has had no rollout")


def test_pause_is_recorded_with_reason_and_who(home: Home) -> None:
    home.start()
    paused = home.json("rollout", "pause", PIPE, "--reason", "x")
    assert paused["status"] == "paused" and paused["weight"] == 10  # a pause keeps the weights
    assert paused["revision"] == 2
    last = paused["timeline"][-1]
    assert last["action"] == "pause" and last["by"] == ME and "@" in last["by"]
    assert any(r.endswith(": x") for r in last["reasons"]), last
    stored = home.store.get("r1")
    assert stored is not None and stored.status == "paused" and stored.timeline[-1].by == ME
    assert home.json("rollout", "status", PIPE)["status"] == "paused"


def test_pausing_twice_is_refused_with_a_message(home: Home) -> None:
    home.start()
    assert home.run("rollout", "pause", PIPE).returncode == 0
    _refused(home.run("rollout", "pause", PIPE, "--json"), "r1", "is paused, not running")
    stored = home.store.get("r1")
    assert stored is not None and [e.action for e in stored.timeline] == ["start", "pause"]


def test_changes_to_a_pipeline_without_an_active_rollout_are_refused(home: Home) -> None:
    for how in ("pause", "resume", "abort"):
        _refused(home.run("rollout", how, "nope"), "pipeline 'nope' has no active rollout")


def test_resume_of_a_running_rollout_restarts_its_controller_so_it_needs_the_cluster(home: Home) -> None:
    """After a cluster restart a running rollout has no controller: `resume` starts one. Without a
    cluster it says so, and writes nothing."""
    home.start()
    _no_traceback(home.run("rollout", "resume", PIPE, "--json"), "no Ray cluster to connect to")
    stored = home.store.get("r1")
    assert stored is not None and stored.status == "running" and stored.revision == 1


def test_a_resume_that_cannot_start_the_runner_can_be_retried(home: Home) -> None:
    home.start()
    assert home.run("rollout", "pause", PIPE).returncode == 0
    first = home.run("rollout", "resume", PIPE)
    assert first.returncode != 0 and "Traceback" not in first.stderr  # no cluster: it cannot run it
    stored = home.store.get("r1")
    assert stored is not None
    retry = home.run("rollout", "resume", PIPE)
    assert stored.status == "paused" or "not paused" not in _flat(retry.stderr), (stored.status, retry.stderr)


def test_abort_is_recorded_settled_and_alerted(home: Home, nothing_served: None) -> None:
    home.start()
    home.run("rollout", "pause", PIPE, "--reason", "look")
    aborted = home.json("rollout", "abort", PIPE, "--reason", "bad model")
    assert (aborted["status"], aborted["phase"], aborted["weight"]) == ("aborted", "done", 0)
    assert aborted["settled"] is True
    last = aborted["timeline"][-1]
    assert last["action"] == "abort" and last["by"] == ME and "bad model" in " ".join(last["reasons"])
    assert [e["action"] for e in aborted["timeline"]] == ["start", "pause", "abort"]
    alerts = home.metadata.alerts(PIPE)
    assert [a.kind for a in alerts] == ["rollout_aborted"] and "r1" in alerts[0].message
    # Finished: status shows it, a second abort is refused saying what became of it.
    assert home.json("rollout", "status", PIPE)["status"] == "aborted"
    _refused(home.run("rollout", "abort", PIPE), "no active rollout", "r1", "aborted")
    # And the pipeline is free for its next rollout.
    assert home.start("r2", challenger="3").revision == 1


def test_abort_without_a_cluster_is_still_recorded(home: Home) -> None:
    """No cluster configured: serving cannot be touched, and the command says so (not a
    traceback); the abort itself is in the store, so the controller cannot carry on."""
    home.start()
    result = home.run("rollout", "abort", PIPE, "--json")
    _no_traceback(result, "no Ray cluster configured")
    stored = home.store.get("r1")
    assert stored is not None and stored.status == "aborted" and stored.timeline[-1].by == ME
    assert home.store.active(PIPE) is None


def test_abort_without_a_cluster_alerts_and_says_it_is_recorded(home: Home) -> None:
    home.start()
    result = home.run("rollout", "abort", PIPE)
    assert "Traceback" not in result.stderr
    assert [a.kind for a in home.metadata.alerts(PIPE)] == ["rollout_aborted"]
    assert "aborted" in _flat(result.stdout + result.stderr)


def test_ab_status_with_no_prediction_log_shows_zeros_and_what_comes_next(
        home: Home, nothing_served: None) -> None:
    home.start()
    out = home.json("ab", "status", PIPE)
    assert (out["rollout_id"], out["status"], out["weight"], out["metric"]) == ("r1", "running", 10, "brier")
    assert [(v["variant"], v["version"]) for v in out["variants"]] == [("champion", "1"), ("challenger", "2")]
    for v in out["variants"]:
        assert (v["requests"], v["errors"], v["outcomes"]) == (0, 0, 0), v
        assert v["error_rate"] is None and v["outcome_rate"] is None
    assert out["test"]["verdict"] == "not_enough_data"
    assert (out["test"]["n_champion"], out["test"]["n_challenger"]) == (0, 0)
    assert {g["status"] for g in out["guardrails"]} == {"waiting"}
    assert out["next_action"] == "wait" and out["next_check_at"] is not None
    table = home.run("ab", "status", PIPE)
    assert table.returncode == 0, table.stderr
    assert "not_enough_data" in table.stdout and "next: wait" in _flat(table.stdout)


def test_ab_status_of_a_paused_rollout_says_a_person_must_act(home: Home, nothing_served: None) -> None:
    home.start()
    home.run("rollout", "pause", PIPE)
    out = home.json("ab", "status", PIPE)
    assert out["status"] == "paused" and "rollout resume" in out["next_action"]
    assert out["next_check_at"] is None


def _log_traffic(home: Home, service: str) -> None:
    """Prediction log and feedback as the replicas write them: 30 champion answers (score 0.2)
    and 12 challenger answers (score 0.9), every one labelled 1."""
    from serve.predlog import feedback_writer, prediction_writer

    at = _now() - dt.timedelta(minutes=1)
    rows = [{"request_id": f"c{i}", "event_ts": at, "pipeline": PIPE, "version": "1", "variant": "champion",
             "entity": f"e{i}", "output": 0.2, "latency_ms": 3.0, "x": 1.0} for i in range(30)]
    rows += [{"request_id": f"n{i}", "event_ts": at, "pipeline": PIPE, "version": "2",
              "variant": "challenger", "entity": f"e{i}", "output": 0.9, "latency_ms": 4.0, "x": 1.0}
             for i in range(12)]
    storage = home.settings.storage_uri
    prediction_writer(storage, PIPE, service)(pd.DataFrame(rows))
    feedback_writer(storage, PIPE)(pd.DataFrame(
        [{"request_id": r["request_id"], "label": 1, "event_ts": at} for r in rows]))


def test_ab_status_counts_the_logged_traffic_and_outcomes(
        home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    served = SimpleNamespace(model=SimpleNamespace(feature_service="churn"))
    monkeypatch.setattr(ServeControl, "deployed_spec", lambda self, pipeline: served)
    home.start()
    _log_traffic(home, "churn")
    out = home.json("ab", "status", PIPE)
    champion, challenger = out["variants"]
    assert (champion["requests"], champion["outcomes"]) == (30, 30)
    assert (challenger["requests"], challenger["outcomes"]) == (12, 12)
    assert champion["outcome_rate"] == pytest.approx(0.64)  # brier (0.2 - 1)^2
    assert challenger["outcome_rate"] == pytest.approx(0.01)
    assert out["test"]["verdict"] == "not_enough_data"  # 12 < min_samples 200


def test_ab_status_after_serve_down_still_shows_the_rollouts_traffic(
        home: Home, nothing_served: None) -> None:
    home.start()
    _log_traffic(home, "churn")
    out = home.json("ab", "status", PIPE)
    assert [v["requests"] for v in out["variants"]] == [30, 12]


def test_ab_status_without_a_cluster(home: Home) -> None:
    home.start()
    out = home.json("ab", "status", PIPE)
    assert [v["requests"] for v in out["variants"]] == [0, 0]


def test_ab_status_without_a_cluster_is_a_message_not_a_traceback(home: Home) -> None:
    home.start()
    _no_traceback(home.run("ab", "status", PIPE), "no Ray cluster configured")


def test_list_is_newest_first_without_timelines(home: Home) -> None:
    first = home.start("r1", ago=dt.timedelta(hours=3))
    home.store.save(controller.abort(first, by="me@host", reason="gone", now=_now()))
    home.start("r2", challenger="3", ago=dt.timedelta(hours=2))
    home.start("f1", pipeline="fraud", ago=dt.timedelta(hours=1))
    listed = home.json("rollout", "list")
    assert [(s["id"], s["pipeline"], s["status"]) for s in listed] == [
        ("f1", "fraud", "running"), ("r2", PIPE, "running"), ("r1", PIPE, "aborted")]
    assert all("timeline" not in s and "plan" not in s for s in listed)
    assert [s["id"] for s in home.json("rollout", "list", PIPE)] == ["r2", "r1"]
    assert home.json("rollout", "list", "nobody") == []
    table = home.run("rollout", "list")
    assert table.returncode == 0 and all(i in table.stdout for i in ("f1", "r2", "r1"))
