import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplatform.cli.app import app
from mlplatform.errors import InputError
from mlplatform.spec import PipelineSpec, SchemaSpec
from mlplatform.spec_loader import SpecError, load_spec
from tests.conftest import ROOT

BAD = """\
name: Bad Name
source:
  path: x
  format: xls
  entity_column: id
model:
  estimator: notapath
  search:
    num_samples: 0
    space:
      lr: {type: loguniform, low: 0, high: 1}
  colour: blue
deploy:
  interval: 5x
"""


def test_demo_spec_is_valid() -> None:
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env={"PLATFORM_HOME": "/h"})
    assert spec.name == "demo"
    assert spec.source.path == "/h/demo/data"
    assert spec.model.search is not None and spec.model.search.num_samples == 4


def test_every_error_has_path_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    got = {(i.path, i.line) for i in info.value.issues}
    assert ("name", 1) in got
    assert ("source.format", 4) in got
    assert ("source.timestamp_column", 2) in got  # missing: points at its parent
    assert ("model.estimator", 7) in got
    assert ("model.search.num_samples", 9) in got
    assert ("model.search.space.lr", 11) in got
    assert ("model.colour", 12) in got
    assert ("deploy.interval", 14) in got  # an unknown key of the deploy section
    assert len(info.value.issues) == 8
    assert any(i.value == "xls" for i in info.value.issues)


def test_spec_check_cli_exits_2_without_traceback(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    result = CliRunner().invoke(app, ["spec", "check", str(f)])
    assert result.exit_code == 2
    assert "model.search.num_samples" in result.output
    assert f"{f}:9" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["spec", "check", str(f), "--json"])
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert {"path": "model.colour", "line": 12} in [
        {"path": e["path"], "line": e["line"]} for e in data["errors"]]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["spec", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in result.output
    f = tmp_path / "broken.yaml"
    f.write_text("name: x\nsource: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_spec(f)
    assert info.value.issues[0].line is not None
    assert "YAML" in info.value.issues[0].message


def test_env_expansion_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text(
        "columns:\n  - {name: age, type: float, min: 0, max: 120}\nstrict: false\n")
    f = tmp_path / "p.yaml"
    f.write_text("name: p\nsource:\n  path: ${DATA_DIR:-data}/x\n  entity_column: id\n"
                 "  timestamp_column: ts\nschema: schema.yaml\n")
    spec = load_spec(f, env={})
    assert spec.source.path == str(tmp_path / "data" / "x")
    assert isinstance(spec.schema_, SchemaSpec) and spec.schema_.columns[0].max == 120
    spec = load_spec(f, env={"DATA_DIR": "s3://bucket"})
    assert spec.source.path == "s3://bucket/x"
    f.write_text("name: p\nsource:\n  path: ${NOPE}\n  entity_column: id\n  timestamp_column: ts\n")
    with pytest.raises(SpecError, match=r"\$\{NOPE\} is not set") as info:
        load_spec(f, env={})
    assert info.value.issues[0].path == "source.path" and info.value.issues[0].line == 3


def test_schema_file_problems_name_the_schema_file(tmp_path: Path) -> None:
    (tmp_path / "schema.yaml").write_text("columns:\n  - {name: age, type: decimal}\n")
    f = tmp_path / "p.yaml"
    f.write_text("name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\n"
                 "schema: schema.yaml\n")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    assert info.value.file.endswith("schema.yaml")
    assert info.value.issues[0].path == "columns[0].type"
    f.write_text("name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\n"
                 "schema: missing.yaml\n")
    with pytest.raises(InputError, match="schema file not found"):
        load_spec(f, env={})


def test_cross_references_are_checked() -> None:
    base = {"name": "p", "source": {"path": "d", "entity_column": "id", "timestamp_column": "t"}}
    with pytest.raises(ValueError, match="does not name a feature view"):
        PipelineSpec.model_validate({**base, "features": {"services": [
            {"name": "s", "features": ["nope:*"]}]}})



MINIMAL = "name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\n"


def test_quarantine_false_is_refused_and_absent_sections_stay_out_of_the_spec(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(MINIMAL + "validation:\n  quarantine: false\n")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    issue = info.value.issues[0]
    assert (issue.path, issue.line) == ("validation.quarantine", 4)
    assert "false is not implemented" in issue.message
    f.write_text(MINIMAL + "validation:\n  quarantine: true\n")
    dumped = load_spec(f, env={}).model_dump(by_alias=True)
    assert dumped.get("deploy") is None and dumped.get("triggers") is None


def test_rollout_keys_in_deploy_are_refused_until_they_exist(tmp_path: Path) -> None:
    """Canary steps come with the rollout release: until then `deploy.strategy` is an unknown key,
    named with its line, never accepted and ignored."""
    f = tmp_path / "p.yaml"
    f.write_text(MINIMAL + "deploy:\n  strategy: canary\n  replicas: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    assert [(i.path, i.line) for i in info.value.issues] == [("deploy.strategy", 4)]
    f.write_text(MINIMAL + "deploy:\n  replicas: 2\n  autoscaling: {min_replicas: 3, max_replicas: 2}\n")
    with pytest.raises(SpecError) as info:
        load_spec(f, env={})
    assert "max_replicas 2 is below min_replicas 3" in info.value.issues[0].message
    f.write_text(MINIMAL + "deploy: {}\n")
    assert load_spec(f, env={}).deploy.replicas == 1


def test_init_writes_a_valid_commented_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["init", "churn"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "churn.yaml").read_text()
    assert text.count("#") > 10 and "name: churn" in text
    checked = runner.invoke(app, ["spec", "check", "churn.yaml"])
    assert checked.exit_code == 0, checked.output
    # Nothing the platform does not implement is written into a new spec as if it worked.
    keys = {line.split(":")[0] for line in text.splitlines() if line and line[0].isalpha()}
    assert keys == {"name", "description", "source", "validation", "features", "model", "evaluation",
                    "deploy"}
    again = runner.invoke(app, ["init", "churn"])
    assert again.exit_code == 2 and "--force" in again.output


BAD_CODE = """
name: bad-code
source: {path: /data, entity_column: id, timestamp_column: ts, label_column: y}
features:
  views:
    - name: v
      transformation: os.system
      features: [a]
model:
  estimator: sklearn.show_versions
"""


def test_spec_check_and_submit_refuse_code_off_the_allow_lists(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any cluster work: both problems named, exit 2, and the estimator never called
    (no Ray cluster is configured here, so `submit` could only get this far by checking first)."""
    import sklearn

    called: list[str] = []
    monkeypatch.setattr(sklearn, "show_versions", lambda: called.append("show_versions"))
    monkeypatch.setenv("PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("PLATFORM_RAY_ADDRESS", raising=False)
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_CODE)
    checked = CliRunner().invoke(app, ["spec", "check", str(spec)])
    assert checked.exit_code == 2
    assert "model.estimator" in checked.output and "sklearn.show_versions" in checked.output
    assert "features.views[0].transformation" in checked.output and "os.system" in checked.output
    as_json = CliRunner().invoke(app, ["spec", "check", str(spec), "--json"])
    assert as_json.exit_code == 2 and json.loads(as_json.stdout)["valid"] is False
    submitted = CliRunner().invoke(app, ["submit", str(spec)])
    assert submitted.exit_code == 2 and "model.estimator" in submitted.output
    assert "Traceback" not in checked.output + submitted.output
    assert called == []
