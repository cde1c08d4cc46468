"""`platformctl dry-run` against the demo's recorded runs and served champion (the session's
"production"): the whole pipeline on a sample in a scratch home, through the rollout's infra
validation in a Serve replica of the scratch cluster, while production's stores stay
byte-identical (SQLite by content) and its served application is not redeployed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlplatform.pipeline import registered_steps
from mlplatform.runtime.local import _temp_dir, cluster_processes
from mlplatform.serving.client import ServeControl
from tests.conftest import platformctl
from tests.integration.conftest import NOISE_DAY
from tests.integration.home_state import changed, home_state, settled_state

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def prod(demo_runs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("dryrun")
    raw = demo_runs["spec"].model_dump(mode="json", by_alias=True, exclude_none=True)
    spec_file = folder / "demo.yaml"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    unserved = folder / "unserved.yaml"  # no deploy section: a dry-run that needs no cluster
    unserved.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k != "deploy"}, sort_keys=False))
    return {"spec": spec_file, "unserved": unserved, "env": demo_runs["env"], "home": demo_runs["home"],
            "control": ServeControl(demo_runs["settings"]), "data": demo_runs["home"] / "demo" / "data"}


def _served(prod: dict) -> dict:
    app = prod["control"].details()["applications"]["demo"]
    return {"config": app["deployed_app_config"], "deployed_at": app["last_deployed_time_s"]}


def test_a_dry_run_runs_every_step_and_leaves_production_untouched(prod: dict, tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
    served = _served(prod)
    before = settled_state(prod["home"])
    # The demo's newest day has shuffled labels (its model fails the gate): the day before it.
    day = sorted(prod["data"].glob("*.parquet"))[NOISE_DAY - 2]
    r = platformctl("dry-run", str(prod["spec"]), "--batch", str(day), "--sample", "500", "--keep", "--json",
                    env=prod["env"])
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = json.loads(r.stdout)
    request.addfinalizer(lambda: shutil.rmtree(out["scratch"], ignore_errors=True))  # --keep kept it
    steps = {s["step"]: s for s in out["steps"]}
    assert list(steps) == registered_steps()
    assert {s["status"] for s in steps.values()} == {"COMPLETE"}, [(s["step"], s["status"], s["message"])
                                                                    for s in out["steps"]]
    assert "infra-validated" in steps["rollout"]["message"]  # a real replica answered its own rows
    assert out["sample"] == {"batch": str(day), "batch_rows": len(pd.read_parquet(day)), "rows": 500,
                             "path": out["sample"]["path"]}
    assert out["schema_from"] == "production's recorded schema"
    assert out["cluster_s"] > 0  # the spec serves: its scratch cluster was started
    assert changed(before, home_state(prod["home"])) == []
    assert _served(prod) == served
    # The scratch cluster is stopped and its home holds the run (kept: --keep).
    scratch_home = Path(out["scratch"]) / "home"
    assert (scratch_home / "metadata.db").is_file() and not (scratch_home / "cluster.json").exists()
    assert cluster_processes(_temp_dir(scratch_home)) == []


def test_a_batch_that_breaks_the_schema_fails_at_validate(prod: dict, tmp_path: Path) -> None:
    newest = sorted(prod["data"].glob("*.parquet"))[-1]
    broken = pd.read_parquet(newest)
    broken["income"] = "unknown"  # production recorded income as a number
    batch = tmp_path / "broken.parquet"
    broken.to_parquet(batch)
    before = settled_state(prod["home"])
    r = platformctl("dry-run", str(prod["unserved"]), "--batch", str(batch), "--json", env=prod["env"])
    assert r.returncode == 1, (r.stdout[-3000:], r.stderr[-3000:])
    out = json.loads(r.stdout)
    assert out["failed_step"] == "validate" and "income" in out["message"], out["message"]
    assert out["cluster_s"] == 0  # nothing asked for a cluster: none was started
    assert [s["status"] for s in out["steps"]][:2] == ["COMPLETE", "FAILED"]
    assert out["sample"]["batch"] == str(batch)
    assert changed(before, home_state(prod["home"])) == []


def test_a_batch_that_is_not_there_is_exit_2_naming_it(prod: dict, tmp_path: Path) -> None:
    r = platformctl("dry-run", str(prod["spec"]), "--batch", str(tmp_path / "nope.parquet"), env=prod["env"])
    assert r.returncode == 2 and "nope.parquet" in r.stderr and "Traceback" not in r.stderr
