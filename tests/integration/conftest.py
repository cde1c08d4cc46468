"""The demo pipeline, run once per session on the real local Ray and shared by the feature
store and training tests: three days of events, the third with shuffled labels (heavy
label noise), each day one full in-process pipeline run, whose deploy step serves the champion
on the session cluster's Ray Serve (tests/integration/test_serving.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.pipeline import run_pipeline
from mlplatform.rollout.plan import RolloutSpec
from mlplatform.settings import load_settings
from mlplatform.spec_loader import load_spec
from tests.backends import store_env

ROOT = Path(__file__).resolve().parents[2]
NOISE_DAY = 3


@pytest.fixture(scope="session")
def demo_runs(ray_connected, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    import os

    home = tmp_path_factory.mktemp("demo") / "home"
    # The session's cluster and Serve port: the runs' deploy step serves each new champion.
    # --backends cluster: its own PostgreSQL databases, S3 prefix and Redis db (tests/backends.py).
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           **{k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "PLATFORM_SERVE_PORT")},
           **store_env(home, "demo")}
    settings = load_settings(env=env)
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env=env)
    # These runs test the steps, serving and the champion of each day: each gate winner goes live
    # at once. Canaries have their own tests (test_rollout.py).
    assert spec.deploy is not None
    spec.deploy.rollout = RolloutSpec(strategy="direct")
    cfg = DemoDataConfig(days=3, rows_per_day=1000, entities=300, noise_day=NOISE_DAY)
    reports, logs = [], []
    for day in range(1, cfg.days + 1):
        write_day(home / "demo" / "data", cfg, day)
        reports.append(run_pipeline(spec, settings, log=logs.append))
    return {"home": home, "env": env, "settings": settings, "spec": spec, "reports": reports, "logs": logs}
