"""Alerts: one model for every source, listed with filters, acknowledged once; the CLI
(`platformctl alerts list|ack`) in-process against a real SQLite home; the webhook setting."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplatform.cli.alerts_cmd import parse_since
from mlplatform.cli.app import app
from mlplatform.errors import InputError
from mlplatform.metadata.schema import AlertRow
from mlplatform.monitoring.alerts import ack_alert, alert_failed_run, list_alerts, raise_alert
from mlplatform.services import Services
from mlplatform.settings import load_settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Services:
    """A fresh home, also the one the CLI resolves (PLATFORM_HOME), without a webhook."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PLATFORM_ALERT_WEBHOOK", raising=False)
    # The in-process CLI sets Ray's auth variables for this home's token (apply_ray_auth_env): put
    # them back afterwards, or a later test would connect to the session cluster with this token.
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "_PLATFORM_APPLIED_RAY_AUTH_MODE"):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    return Services(load_settings(env={"PLATFORM_HOME": str(tmp_path / "home")}))


def _age(services: Services, alert_id: int, hours: float) -> None:
    """Make an alert look `hours` old (rows store naive UTC)."""
    with services.metadata.session() as s:
        row = s.get(AlertRow, alert_id)
        assert row is not None
        row.created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=hours)


def _mixed(services: Services) -> dict[str, int]:
    made = {
        "info_a": raise_alert(services, pipeline="a", source="guardrail", kind="rollout_promoted",
                              severity="info", message="v2 promoted", link="rollout:r1"),
        "warn_a": raise_alert(services, pipeline="a", source="drift", kind="drift", severity="warning",
                              message="drift on x", run_id="run-1", step="validate",
                              link="/reports/validation.html", details={"drifted_share": 0.5}),
        "crit_b": raise_alert(services, pipeline="b", source="validation", kind="schema_break",
                              severity="critical", message="column y missing", run_id="run-2"),
        "old_crit_a": raise_alert(services, pipeline="a", source="anomaly", kind="slow_step",
                                  severity="critical", message="train took 10x"),
    }
    _age(services, made["old_crit_a"].id, hours=3)
    return {k: a.id for k, a in made.items()}


def test_raise_alert_stores_every_field(home: Services) -> None:
    alert = raise_alert(home, pipeline="p", source="live_drift", kind="live_drift", severity="warning",
                        message="3 of 5 features drifted", run_id="r", step="monitor",
                        link="/reports/live.html", details={"features": ["a", "b", "c"]})
    [stored] = list_alerts(home, pipeline="p")
    assert stored.id == alert.id
    assert (stored.source, stored.kind, stored.severity, stored.message) == (
        "live_drift", "live_drift", "warning", "3 of 5 features drifted")
    assert (stored.run_id, stored.step, stored.link, stored.details) == (
        "r", "monitor", "/reports/live.html", {"features": ["a", "b", "c"]})
    assert stored.acked_at is None and stored.notified is None  # no webhook configured: nothing sent


def test_failed_run_is_a_critical_alert_linked_to_the_run(home: Services) -> None:
    alert_failed_run(home, "p", "p-20260101-1", "step train failed: boom")
    [a] = list_alerts(home, source="run")
    assert (a.severity, a.kind, a.run_id, a.link, a.message) == (
        "critical", "run_failed", "p-20260101-1", "run:p-20260101-1", "step train failed: boom")


def test_bad_severity_or_source_names_the_field(home: Services) -> None:
    with pytest.raises(InputError, match="severity 'loud'"):
        raise_alert(home, pipeline="p", source="run", kind="k", severity="loud", message="m")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="source 'pager'"):
        raise_alert(home, pipeline="p", source="pager", kind="k", severity="info", message="m")  # type: ignore[arg-type]
    assert list_alerts(home) == []


def test_filters(home: Services) -> None:
    ids = _mixed(home)
    everything = [a.id for a in list_alerts(home)]
    assert everything == sorted(ids.values(), reverse=True)  # newest first
    assert {a.id for a in list_alerts(home, severity="warning")} == {
        ids["warn_a"], ids["crit_b"], ids["old_crit_a"]}  # a floor, not an exact match
    assert {a.id for a in list_alerts(home, severity="critical")} == {ids["crit_b"], ids["old_crit_a"]}
    assert {a.id for a in list_alerts(home, pipeline="a")} == {
        ids["info_a"], ids["warn_a"], ids["old_crit_a"]}
    assert [a.id for a in list_alerts(home, source="drift")] == [ids["warn_a"]]
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    assert ids["old_crit_a"] not in {a.id for a in list_alerts(home, since=two_hours_ago)}
    assert len(list_alerts(home, since=two_hours_ago)) == 3
    assert len(list_alerts(home, limit=2)) == 2


def test_ack_once_and_unacked_filter(home: Services) -> None:
    ids = _mixed(home)
    first = ack_alert(home, ids["crit_b"], by="alice")
    assert first.acked_by == "alice" and first.acked_at is not None
    again = ack_alert(home, ids["crit_b"], by="bob")
    assert (again.acked_by, again.acked_at) == ("alice", first.acked_at)  # the first ack stands
    assert ids["crit_b"] not in {a.id for a in list_alerts(home, unacked=True)}
    assert len(list_alerts(home, unacked=True)) == 3
    with pytest.raises(InputError, match="alert 9999"):
        ack_alert(home, 9999, by="alice")


def test_parse_since() -> None:
    now = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2h", now=now) == dt.datetime(2026, 5, 10, 10, 0, tzinfo=dt.UTC)
    assert parse_since("7d", now=now) == dt.datetime(2026, 5, 3, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2026-05-01", now=now) == dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    assert parse_since("2026-05-01T14:00:00+02:00", now=now) == dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    for bad in ("yesterday", "2x", "h", "-2h"):
        with pytest.raises(InputError, match=f"--since '{bad}'"):
            parse_since(bad, now=now)


# --- the CLI -------------------------------------------------------------------------


def _cli_json(*args: str) -> list | dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_list_filters(home: Services) -> None:
    ids = _mixed(home)
    listed = _cli_json("alerts", "list")
    assert [a["id"] for a in listed] == sorted(ids.values(), reverse=True)
    assert {a["source"] for a in listed} == {"guardrail", "drift", "validation", "anomaly"}
    warn = next(a for a in listed if a["id"] == ids["warn_a"])
    assert (warn["link"], warn["run_id"], warn["details"]) == ("/reports/validation.html", "run-1",
                                                                {"drifted_share": 0.5})
    assert {a["id"] for a in _cli_json("alerts", "list", "a", "--severity", "warning", "--since", "2h")} == {
        ids["warn_a"]}
    assert [a["id"] for a in _cli_json("alerts", "list", "--source", "validation")] == [ids["crit_b"]]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    assert _cli_json("alerts", "list", "--since", future) == []
    assert len(_cli_json("alerts", "list", "--limit", "1")) == 1
    table = runner.invoke(app, ["alerts", "list", "b"])
    assert table.exit_code == 0, table.output
    assert "column y missing" in table.stdout and "schema_break" in table.stdout
    assert "v2 promoted" not in table.stdout


@pytest.mark.parametrize(("args", "named"), [
    (["--since", "tomorrow"], "--since 'tomorrow'"),
    (["--severity", "loud"], "--severity 'loud'"),
    (["--source", "pager"], "--source 'pager'"),
    (["--limit", "0"], "--limit 0"),
])
def test_cli_bad_options_exit_2_naming_them(home: Services, args: list[str], named: str) -> None:
    result = runner.invoke(app, ["alerts", "list", *args])
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output


def test_cli_ack(home: Services) -> None:
    ids = _mixed(home)
    first = runner.invoke(app, ["alerts", "ack", str(ids["crit_b"])])
    assert first.exit_code == 0, first.output
    assert f"alert {ids['crit_b']} acknowledged by {getpass.getuser()}" in first.stdout
    again = runner.invoke(app, ["alerts", "ack", str(ids["crit_b"])])
    assert again.exit_code == 0 and "already acknowledged" in again.stdout
    acked = _cli_json("alerts", "ack", str(ids["crit_b"]))
    assert acked["already_acked"] is True and acked["alert"]["acked_by"] == getpass.getuser()
    assert ids["crit_b"] not in {a["id"] for a in _cli_json("alerts", "list", "--unacked")}
    unknown = runner.invoke(app, ["alerts", "ack", "4242"])
    assert unknown.exit_code == 2 and "alert 4242" in unknown.output


# --- the webhook setting ------------------------------------------------------------


def test_webhook_setting_is_validated_and_travels_with_jobs(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"PLATFORM_HOME": str(tmp_path / "h")}
    assert load_settings(env=env).alert_webhook is None
    assert "PLATFORM_ALERT_WEBHOOK" not in load_settings(env=env).job_env()
    plain = load_settings(env={**env, "PLATFORM_ALERT_WEBHOOK": "https://hooks.example.com/a"})
    assert plain.alert_webhook == "https://hooks.example.com/a"
    assert plain.sources["alert_webhook"] == "env PLATFORM_ALERT_WEBHOOK"
    assert plain.job_env()["PLATFORM_ALERT_WEBHOOK"] == "https://hooks.example.com/a"
    secret = load_settings(env={**env, "PLATFORM_ALERT_WEBHOOK": "https://bot:s3cret@hooks.example.com/a"})
    assert "PLATFORM_ALERT_WEBHOOK" not in secret.job_env()  # credentials stay with the cluster
    assert "s3cret" not in repr(secret)
    for bad in ("ftp://hooks.example.com/a", "hooks.example.com/a", "http://", "https://user:pw@"):
        with pytest.raises(InputError, match="alert_webhook \\(PLATFORM_ALERT_WEBHOOK\\)") as caught:
            load_settings(env={**env, "PLATFORM_ALERT_WEBHOOK": bad})
        assert "pw" not in caught.value.message
    (tmp_path / "platform.yaml").write_text("alert_webhook: http://127.0.0.1:9/hook\n")
    assert load_settings(env=env).alert_webhook == "http://127.0.0.1:9/hook"


def test_cli_bad_webhook_exits_2(home: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_ALERT_WEBHOOK", "mailto:ops@example.com")
    result = runner.invoke(app, ["alerts", "list"])
    assert result.exit_code == 2
    assert "PLATFORM_ALERT_WEBHOOK" in result.output and "mailto:ops@example.com" in result.output
    shown = runner.invoke(app, ["config", "show", "--json"])
    assert shown.exit_code == 2
