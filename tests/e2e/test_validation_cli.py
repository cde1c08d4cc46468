"""Validation end to end: the pipeline on the cluster stops a broken batch, quarantines
it and alerts; a fixed batch passes; `runs retry` resumes after a schema fix; and the
manual commands (`validate`, `schema infer`) work on their own."""

import json
from pathlib import Path

import pytest
import yaml

from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.spec import SchemaSpec
from tests.conftest import cli, platformctl

pytestmark = pytest.mark.ray

SPEC = """\
name: {name}
source:
  path: {data}
  entity_column: customer_id
  timestamp_column: event_ts
  label_column: churned
{extra}"""


def _spec(tmp_path: Path, name: str, extra: str = "") -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(SPEC.format(name=name, data=tmp_path / "data", extra=extra))
    return f


def _submit(spec: Path) -> tuple[int, dict]:
    r = platformctl("submit", str(spec), "--working-dir", str(spec.parent), "--wait", "--json")
    return r.returncode, json.loads(r.stdout)


def test_broken_batch_stops_at_validate_and_a_fixed_one_passes(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = DemoDataConfig(rows_per_day=800, seed=3, break_day=2)
    spec = _spec(tmp_path, "quality")
    write_day(tmp_path / "data", cfg, 1)
    code, first = _submit(spec)
    assert code == 0, first
    run1 = json.loads(cli("runs", "show", first["run_id"], "--json").stdout)
    assert [(s["step"], s["status"]) for s in run1["steps"]] == [
        ("ingest", "COMPLETE"), ("validate", "COMPLETE"), ("featurize", "COMPLETE"),
        ("training_set", "COMPLETE"), ("train", "COMPLETE"), ("evaluate", "COMPLETE"),
        ("register", "COMPLETE"), ("promote", "COMPLETE"), ("rollout", "COMPLETE")]
    assert "no feature views" in run1["steps"][2]["summary"]["message"]
    assert "no deploy section: nothing is served" in run1["steps"][-1]["summary"]["message"]
    kinds = {a["artifact"]["kind"] for a in run1["artifacts"] if a["type"] == "OUTPUT"}
    assert {"schema", "statistics", "validated_snapshot", "validation_report"} <= kinds

    write_day(tmp_path / "data", cfg, 2)
    code, second = _submit(spec)
    assert code == 1 and second["job"]["status"] == "FAILED"
    run2 = json.loads(cli("runs", "show", second["run_id"], "--json").stdout)
    validate = run2["steps"][1]
    assert validate["step"] == "validate" and validate["status"] == "FAILED"
    for name in ("creditScore", "credit_score", "age", "sessions_7d", "country"):
        assert name in validate["error"], name
    summary = validate["summary"]
    # The inferred country domain is soft: the unseen "XX" is named as a shift, not quarantined;
    # the batch is still rejected for its schema breaks and stays in its snapshot.
    assert "shift on country" in validate["error"] and "country" in summary["shifted_columns"]
    assert summary["rows_in"] == 800 == summary["rows_valid"] and summary["rows_quarantined"] == 0
    assert not any(a["artifact"]["kind"] == "quarantine" for a in run2["artifacts"])
    assert not any(a["artifact"]["kind"] == "validated_snapshot" for a in run2["artifacts"])
    logs = cli("jobs", "logs", second["job_id"]).stdout
    assert "schema break" in logs and "creditScore" in logs
    alerts = json.loads(cli("alerts", "list", "quality", "--json").stdout)
    assert any(a["kind"] == "schema_break" and a["run_id"] == second["run_id"] for a in alerts)

    write_day(tmp_path / "data", cfg, 3)  # the next day's batch is fine again
    code, third = _submit(spec)
    assert code == 0, third
    run3 = json.loads(cli("runs", "show", third["run_id"], "--json").stdout)
    assert run3["steps"][1]["summary"]["drift_reference"].startswith("previous batch")


def test_retry_resumes_at_validate_after_a_schema_fix(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    strict_age = ("schema:\n  strict: false\n  columns:\n"
                  "    - {name: customer_id, type: string}\n    - {name: age, type: int}\n")
    spec = _spec(tmp_path, "retry", strict_age)
    write_day(tmp_path / "data", DemoDataConfig(rows_per_day=300, seed=4), 1)
    code, failed = _submit(spec)
    assert code == 1
    spec.write_text(spec.read_text().replace("type: int", "type: float"))
    r = platformctl("runs", "retry", failed["run_id"], "--wait", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    run = json.loads(cli("runs", "show", failed["run_id"], "--json").stdout)
    assert run["status"] == "SUCCEEDED"
    assert [(s["step"], s["status"]) for s in run["steps"]] == [
        ("ingest", "COMPLETE"), ("validate", "FAILED"), ("validate", "COMPLETE"),
        ("featurize", "COMPLETE"), ("training_set", "COMPLETE"), ("train", "COMPLETE"),
        ("evaluate", "COMPLETE"), ("register", "COMPLETE"), ("promote", "COMPLETE"), ("rollout", "COMPLETE")]
    again = platformctl("runs", "retry", failed["run_id"])
    assert again.returncode == 2 and "nothing to retry" in again.stderr


def test_manual_validate_and_schema_infer(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = DemoDataConfig(rows_per_day=500, seed=5, break_day=2)
    good = write_day(tmp_path / "good", cfg, 1).path
    bad = write_day(tmp_path / "bad", cfg, 2).path
    spec = _spec(tmp_path, "manual")

    inferred = platformctl("schema", "infer", good, "--out", str(tmp_path / "schema.yaml"),
                           "--entity", "customer_id", "--label", "churned")
    assert inferred.returncode == 0, inferred.stderr
    text = (tmp_path / "schema.yaml").read_text()
    assert "# Schema inferred" in text and "soft: [min, max]   # soft: reported as a shift" in text
    assert "Soft (reported as a shift, not enforced)" in " ".join(inferred.stdout.split())  # as wrapped
    assert SchemaSpec.model_validate(yaml.safe_load(text)).columns

    r = platformctl("validate", str(spec), "--batch", bad, "--reference", good,
                    "--out", str(tmp_path / "report"), "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert report["passed"] is False and report["schema_source"].startswith("inferred from --reference")
    assert any("creditScore" in reason for reason in report["reasons"])
    assert report["rows_in"] == report["rows_valid"] + report["rows_quarantined"] == 500
    html = (tmp_path / "report" / "validation.html").read_text()
    assert "creditScore" in html and html.count("<svg ") >= 10  # a chart per column
    table = cli("validate", str(spec), "--batch", bad, "--reference", good,
                "--out", str(tmp_path / "report2"))
    assert "FAIL" in table.stdout and "rejected" in table.stdout

    ok = cli("validate", str(spec), "--batch", good, "--reference", good,
             "--out", str(tmp_path / "report3"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "the batch passes" in ok.stdout

    missing = platformctl("validate", str(spec), "--batch", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--batch" in missing.stderr and "nope" in missing.stderr
    junk = tmp_path / "junk" / "x.parquet"
    junk.parent.mkdir()
    junk.write_text("not parquet")
    broken = platformctl("validate", str(spec), "--batch", str(junk.parent), "--reference", good)
    assert broken.returncode == 2 and str(junk) in broken.stderr
    assert "Traceback" not in broken.stderr


def test_validate_never_checks_a_batch_against_itself(tmp_path: Path) -> None:
    """No schema anywhere and no --reference: nothing to compare with, so no verdict (the
    broken batch, with a renamed column, a changed type and 20% unseen values, used to pass
    against a schema inferred from itself)."""
    cfg = DemoDataConfig(rows_per_day=200, seed=6, break_day=2)
    bad = write_day(tmp_path / "bad", cfg, 2).path
    spec = _spec(tmp_path, "selfcheck")
    r = platformctl("validate", str(spec), "--batch", bad, "--out", str(tmp_path / "report"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "nothing to validate it against" in r.stderr and bad in r.stderr
    assert "schema infer" in r.stderr and "--reference" in r.stderr
    assert "passes" not in r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "report").exists()


def test_validate_prefers_a_given_schema_to_one_inferred_from_the_reference(ray_cluster,  # noqa: ANN001
                                                                           tmp_path: Path) -> None:
    cfg = DemoDataConfig(rows_per_day=300, seed=7)
    good = write_day(tmp_path / "good", cfg, 1).path
    other = write_day(tmp_path / "other", cfg, 2).path
    (tmp_path / "schema.yaml").write_text(
        "strict: false\ncolumns:\n  - {name: customer_id, type: string}\n  - {name: age, type: string}\n")
    spec = _spec(tmp_path, "given")
    r = platformctl("validate", str(spec), "--batch", other, "--reference", good,
                    "--schema", str(tmp_path / "schema.yaml"), "--out", str(tmp_path / "report"), "--json")
    report = json.loads(r.stdout)
    assert report["schema_source"] == f"--schema {tmp_path / 'schema.yaml'}"
    assert r.returncode == 1 and any("age" in reason for reason in report["reasons"])
