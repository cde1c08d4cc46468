"""The SDK against a demo pipeline's production stores (a home of its own with two days run, so
its writes touch no other test's registry): the example a data scientist runs
(jobs/examples/challenger.py) as a real process, read-only and then registering; the
registered version loads through the registry's sha256 check and carries the user's name;
a read-only connection refuses writes; validation and the prediction log read what is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import mlplatform
from mlplatform.artifacts import ModelVersion
from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.errors import InputError
from mlplatform.pipeline import run_pipeline
from mlplatform.sdk import ReadOnly
from mlplatform.settings import load_settings
from mlplatform.spec_loader import load_spec
from tests.conftest import ROOT
from tests.integration.home_state import changed, home_state

pytestmark = pytest.mark.ray

USER = "ada"


@pytest.fixture(scope="module")
def prod(ray_connected: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("sdk") / "home"
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           **{k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}}
    settings = load_settings(env=env)
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env=env)
    spec.deploy = None  # nothing served: this home's runs stay off the session's Serve
    cfg = DemoDataConfig(days=2, rows_per_day=1000, entities=300)
    for day in (1, 2):
        write_day(home / "demo" / "data", cfg, day)
        assert run_pipeline(spec, settings, log=lambda _: None).status == "SUCCEEDED"
    return {"home": home, "env": env, "settings": settings}


def _example(prod: dict, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_PLATFORM_")}
    env.update(prod["env"], USER=USER, LOGNAME=USER)
    return subprocess.run([sys.executable, "-m", "jobs.examples.challenger", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_example_compares_with_the_champion_and_writes_nothing_by_default(prod: dict) -> None:
    before = home_state(prod["home"])
    r = _example(prod)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    platform = mlplatform.connect(env=prod["env"])
    demo = platform.pipeline("demo")
    assert out["champion_version"] == platform.services.models.champion("demo")
    # The champion's number, computed here from the model and the holdout (the independent truth).
    data = demo.training_set()
    champion = demo.load_model("champion")
    expected = roc_auc_score(data.y_test, champion.predict_proba(data.X_test)[:, 1])
    assert out["metric"] == "roc_auc" and np.isclose(out["champion"], expected)
    assert out["holdout_rows"] == len(data.y_test) and out["version"] is None
    assert changed(before, home_state(prod["home"])) == []


def test_registering_needs_writable_and_is_recorded_with_the_user(prod: dict) -> None:
    platform = mlplatform.connect(env=prod["env"])
    demo = platform.pipeline("demo")
    with pytest.raises(ReadOnly, match="writable=True"):
        demo.register_challenger(demo.load_model(), demo.training_set())
    before = [v.version for v in demo.models()]
    r = _example(prod, "--register", "--learning-rate", "0.1")
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    version = out["version"]
    assert version is not None and version not in before
    info = platform.services.models.version("demo", version)
    assert info.tags["mlplatform.user"] == USER and info.tags["gate.decision"] == (
        "passed" if out["passed"] else "rejected")
    assert ("challenger" in info.aliases) == out["passed"]
    # Loaded like any version: through its recorded sha256, and it predicts as it was scored.
    model = demo.load_model(version)
    data = demo.training_set()
    assert np.isclose(roc_auc_score(data.y_test, model.predict_proba(data.X_test)[:, 1]), out["variant"])
    store = platform.services.metadata
    mv = store.find(ModelVersion, f"models:/demo/{version}")
    kinds = {n.artifact.kind for n in store.lineage(mv.id, "upstream")}
    assert "training_set" in kinds
    sdk_run = next(r for r in store.runs("demo") if r.properties.get("cause") == "sdk")
    assert sdk_run.properties["user"] == USER and sdk_run.status == "SUCCEEDED"


def test_validation_and_the_prediction_log_through_the_sdk(prod: dict) -> None:
    import pandas as pd

    demo = mlplatform.connect(env=prod["env"]).pipeline("demo")
    batch = pd.read_parquet(sorted((prod["home"] / "demo" / "data").glob("*.parquet"))[-1]).head(200)
    assert demo.validate(batch).schema_breaks == []
    broken = batch.drop(columns=["income"])
    breaks = demo.validate(broken).schema_breaks
    assert breaks and any(f.column == "income" for f in breaks)
    assert len(demo.predictions()) == 0  # nothing served in this home
    with pytest.raises(InputError, match="nope"):
        mlplatform.connect(env=prod["env"]).pipeline("nope")


def test_a_spec_file_gives_the_same_pipeline(prod: dict) -> None:
    demo = mlplatform.connect(env=prod["env"]).pipeline(spec=Path(ROOT / "jobs" / "examples" / "demo.yaml"))
    assert demo.name == "demo" and demo.spec.features.views
