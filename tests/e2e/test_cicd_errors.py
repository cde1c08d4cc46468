"""Bad input to the CI/CD commands (issue 16): a spec that does not parse, an estimator off the
allow-list, stores that cannot be reached, an unknown CI system. Each is one clear message
naming the field or the setting, exit 2 (the spec) or 1 (the environment), no traceback, and a
JUnit report that says the same for CI systems. No cluster is needed for any of them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.conftest import ROOT, cli

BAD_SPEC = Path(__file__).parent / "bad_spec.yaml"  # model.search.num_samples: 0


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PLATFORM_HOME": str(tmp_path / "home"), **extra}


def test_ci_on_a_spec_that_does_not_validate_exits_2_with_the_field_in_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    r = cli("ci", str(BAD_SPEC), "--junit", str(report), env=_env(tmp_path))
    assert r.returncode == 2 and "model.search.num_samples" in r.stderr and "Traceback" not in r.stderr
    root = ET.parse(report).getroot()
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert [c.get("classname") for c in failed] == ["ci.spec"]
    assert "model.search.num_samples" in failed[0].find("failure").text
    skipped = [c.get("classname") for c in root.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["ci.tests", "ci.plan", "ci.dry-run"] and root.get("failures") == "1"


def test_an_estimator_off_the_allow_list_fails_ci_and_dry_run_with_exit_2(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "jobs" / "examples" / "demo.yaml").read_text())
    raw["model"]["estimator"] = "subprocess.Popen"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    for args in (("ci", str(spec), "--junit", str(tmp_path / "r.xml")), ("dry-run", str(spec))):
        r = cli(*args, env=_env(tmp_path))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "model.estimator" in r.stderr and "subprocess.Popen" in r.stderr


def test_plan_and_apply_against_an_unreachable_metadata_store_exit_1_naming_it(tmp_path: Path) -> None:
    url = "postgresql://ci:hunter2@127.0.0.1:9/platform"
    for command in ("plan", "apply"):
        r = cli(command, str(ROOT / "jobs" / "examples" / "demo.yaml"),
                env=_env(tmp_path, PLATFORM_METADATA_URL=url))
        assert r.returncode == 1, (command, r.stdout, r.stderr)
        assert "metadata" in r.stderr and "hunter2" not in r.stderr and "Traceback" not in r.stderr


def test_init_with_an_unknown_ci_system_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    r = cli("init", "p", "--out", str(out), "--ci", "jenkins", env=_env(tmp_path))
    assert r.returncode == 2 and "--ci jenkins" in r.stderr and not out.exists()
