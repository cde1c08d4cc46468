"""CI/CD of pipeline code, the way a team's repository runs it: `platformctl init --ci github`
writes the workflow, and this test runs the commands of its jobs (not GitHub itself; the
`install` step is what this environment already did) in a git repository holding the
pipeline's spec, its code and its own tests, against a "production" home with two validated
days. An edited transformation passes `ci` and `apply` starts exactly one retraining run
caused by the commit, which computes the earlier day's features again at the view's new
version; an unchanged `apply` starts none; a transformation broken on real data (not on its
unit test's frame) fails `ci` at the dry-run with its own error, production untouched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.artifacts import TrainingSet
from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import run_pipeline
from mlplatform.settings import load_settings
from mlplatform.spec_loader import load_spec
from tests.conftest import ROOT, platformctl
from tests.integration.home_state import changed, home_state

pytestmark = pytest.mark.ray

NAME = "cicd"
FEATURES = Path("jobs") / "examples" / "demo_features.py"
EDIT = ('/ (1.0 + df["days_since_last_login"]', '/ (2.0 + df["days_since_last_login"]')
# Fine on a unit test's frame, which has no missing minutes; real batches do.
BREAK = ('df["avg_session_min"].astype("float64").fillna(0.0)', 'df["avg_session_min"].astype("int64")')
USER_TEST = '''import pandas as pd

from jobs.examples.demo_features import activity


def test_engagement_grows_with_sessions():
    df = pd.DataFrame({"sessions_7d": [1, 9], "avg_session_min": [5.0, 5.0],
                       "days_since_last_login": [1, 1], "spend_30d": [10.0, 10.0]})
    out = activity(df)
    assert out["engagement_score"].iloc[1] > out["engagement_score"].iloc[0]
'''


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def prod(ray_connected: dict, session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Production: two days run in-process (no deploy section: nothing is served on the session
    cluster), and the team's repository with the workflow `init --ci github` wrote."""
    home = tmp_path_factory.mktemp("cicd") / "home"
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           **{k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "PLATFORM_SERVE_PORT")}}
    settings = load_settings(env=env)
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env=env)
    spec.name, spec.deploy = NAME, None
    cfg = DemoDataConfig(days=2, rows_per_day=1000, entities=300)
    for day in (1, 2):
        write_day(home / "demo" / "data", cfg, day)
        assert run_pipeline(spec, settings, log=lambda _: None).status == "SUCCEEDED"
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "jobs", repo / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    r = platformctl("init", NAME, "--ci", "github", "--out", "pipeline.yaml", env=env, cwd=repo)
    assert r.returncode == 0, r.stderr
    # The team replaces the template with its pipeline, and adds its own tests.
    (repo / "pipeline.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True,
                                                                       exclude_none=True), sort_keys=False))
    (repo / "tests").mkdir()
    (repo / "tests" / "test_features.py").write_text(USER_TEST)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "the pipeline as production runs it")
    # What the repository's secrets hold: production's settings, and the cluster's token.
    secrets = {"PLATFORM_RAY_ADDRESS": settings.ray_address or "",
               "PLATFORM_METADATA_URL": settings.metadata_url,
               "PLATFORM_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
               "PLATFORM_STORAGE_URI": settings.storage_uri,
               "PLATFORM_ONLINE_STORE_URL": settings.online_store_url,
               "RAY_AUTH_TOKEN": Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()}
    flow = yaml.safe_load((repo / ".github" / "workflows" / f"mlplatform-{NAME}.yml").read_text())
    return {"home": home, "settings": settings, "repo": repo, "flow": flow, "secrets": secrets,
            "store": MetadataStore(settings.metadata_url)}


def _job(prod: dict, job: str) -> subprocess.CompletedProcess[str]:
    """The workflow job's `run` steps in the repository, with its env from the secrets."""
    flow = prod["flow"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLATFORM_", "RAY_", "_PLATFORM_"))}
    for key, value in flow["env"].items():
        found = re.fullmatch(r"\$\{\{ secrets\.(\w+) \}\}", str(value))
        env[key] = prod["secrets"].get(found.group(1), "") if found else str(value)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PLATFORM_SERVE_PORT"] = os.environ["PLATFORM_SERVE_PORT"]
    out = subprocess.CompletedProcess([], 0, "", "")
    for step in flow["jobs"][job]["steps"]:
        if "run" not in step or step.get("id") == "install":
            continue
        out = subprocess.run(step["run"], shell=True, cwd=prod["repo"], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            break
    return out


def _edit(prod: dict, change: tuple[str, str], message: str) -> str:
    module = prod["repo"] / FEATURES
    source = module.read_text()
    assert change[0] in source
    module.write_text(source.replace(*change))
    _git(prod["repo"], "commit", "-qam", message)
    return _git(prod["repo"], "rev-parse", "HEAD")


def _runs(prod: dict) -> list:
    return prod["store"].runs(NAME)


def test_the_workflow_runs_ci_on_pull_requests_and_apply_on_main(prod: dict) -> None:
    flow = prod["flow"]
    trigger = flow.get("on") or flow.get(True)  # YAML 1.1 reads a bare `on` as true
    assert set(trigger) == {"pull_request", "push"} and trigger["push"]["branches"] == ["main"]
    assert flow["jobs"]["apply"]["needs"] == "ci" and "refs/heads/main" in flow["jobs"]["apply"]["if"]


def test_an_edited_transformation_passes_ci_and_apply_retrains_once(prod: dict) -> None:
    commit = _edit(prod, EDIT, "engagement: a softer decay")
    ci = _job(prod, "ci")
    assert ci.returncode == 0, (ci.stdout[-3000:], ci.stderr[-3000:])
    report = ET.parse(prod["repo"] / "ci-report.xml").getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in report.iter("testcase")}
    assert report.get("failures") == "0" and int(report.get("tests")) >= 12
    assert ("tests.test_features", "test_engagement_grows_with_sessions") in cases  # the team's own test
    assert ("ci.dry-run", "train") in cases
    plan = cases[("ci.plan", "plan")]
    assert "features.views.customer_activity: changed" in plan.find("system-out").text

    before = {r.run_id for r in _runs(prod)}
    applied = _job(prod, "apply")
    assert applied.returncode == 0, (applied.stdout[-3000:], applied.stderr[-3000:])
    new = [r for r in _runs(prod) if r.run_id not in before]
    assert len(new) == 1
    run = prod["store"].run(new[0].run_id)
    assert run.status == "SUCCEEDED" and run.properties["cause"] == "code_change"
    detail = run.properties["cause_detail"]
    assert commit[:12] in detail and "customer_activity" in detail
    steps = {s.step: s for s in run.steps}
    assert "ingest" not in steps and steps["featurize"].status == "COMPLETE"
    # The earlier day's features were computed again at the new version: every training row,
    # day 1's included, holds the edited formula's value (without the backfill, day 1's rows
    # would keep the old code's).
    assert steps["featurize"].summary["customer_activity"]["backfilled_batches"] == 1
    trained_on = prod["store"].run_outputs(run.run_id, TrainingSet)[0]
    df = pd.read_parquet(trained_on.uri)
    assert df["event_ts"].dt.date.nunique() == 2 and df["engagement_score"].notna().all()
    minutes = df["avg_session_min"].astype(float).fillna(0.0)
    edited = (np.log1p(df["sessions_7d"].astype(float)) * np.log1p(minutes)
              / (2.0 + df["days_since_last_login"].astype(float)))
    assert np.allclose(df["engagement_score"], edited)

    again = _job(prod, "apply")
    assert again.returncode == 0 and "no changes" in again.stdout
    assert len(_runs(prod)) == len(before) + 1


def test_a_transformation_broken_on_real_data_fails_ci_at_the_dry_run(prod: dict) -> None:
    _edit(prod, BREAK, "minutes as whole numbers")
    before = home_state(prod["home"])
    runs = len(_runs(prod))
    ci = _job(prod, "ci")
    assert ci.returncode == 1, (ci.stdout[-3000:], ci.stderr[-3000:])
    assert "ci failed at dry-run" in ci.stderr and "featurize" in ci.stderr
    report = ET.parse(prod["repo"] / "ci-report.xml").getroot()
    failed = [c for c in report.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("ci.dry-run", "featurize")]
    assert "non-finite values" in failed[0].find("failure").get("message")  # pandas' own words
    assert changed(before, home_state(prod["home"])) == [] and len(_runs(prod)) == runs
