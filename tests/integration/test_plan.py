"""`platformctl plan SPEC` against the demo's recorded runs: the spec the runs ran plans no
change (exit 0); the demo's transformation edited in its file plans the view's new version, a
backfill and a retraining (exit 3); a model edit plans a retraining alone; a broken spec exits 2.
Nothing is written: a plan only reads the metadata store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, cli, platformctl

pytestmark = pytest.mark.ray


def _write(spec_dict: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec_dict, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ran(demo_runs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The spec exactly as the demo's runs ran it (their deploy rollout is `direct`), in a file."""
    folder = tmp_path_factory.mktemp("plan")
    raw = demo_runs["spec"].model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"raw": raw, "file": _write(raw, folder / "demo.yaml"), "folder": folder,
            "env": {**demo_runs["env"]}, "last_run": demo_runs["reports"][-1].run_id}


def _plan(ran: dict, spec: Path) -> tuple[int, dict]:
    r = cli("plan", str(spec), "--json", env=ran["env"])
    return r.returncode, json.loads(r.stdout) if r.stdout.strip().startswith("{") else {"stderr": r.stderr}


def test_the_spec_the_runs_ran_plans_nothing(ran: dict) -> None:
    code, out = _plan(ran, ran["file"])
    assert code == 0, out
    assert out["changed"] is False and out["changes"] == [] and out["baseline"] == f"run {ran['last_run']}"


def test_an_edited_transformation_plans_its_view_a_backfill_and_a_retraining(ran: dict,
                                                                              tmp_path: Path) -> None:
    # The user edits jobs/examples/demo_features.py: a copy of the `jobs` package with the edit
    # comes first on the path of a real `platformctl` process.
    shadow = tmp_path / "code"
    shutil.copytree(ROOT / "jobs", shadow / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    module = shadow / "jobs" / "examples" / "demo_features.py"
    source = module.read_text()
    before = '/ (1.0 + df["days_since_last_login"]'
    assert before in source
    module.write_text(source.replace(before, before.replace("1.0", "2.0")))
    env = {**ran["env"], "PYTHONPATH": str(shadow)}
    r = platformctl("plan", str(ran["file"]), "--json", env=env)
    assert r.returncode == 3, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    changed = [(c["path"], c["kind"]) for c in out["changes"]]
    assert changed == [("features.views.customer_activity", "changed")]
    kinds = [e["kind"] for e in out["effects"]]
    assert kinds == ["backfill", "retraining"] and "customer_activity" in out["effects"][0]["detail"]
    # The same file, unedited, on the same path: no change (the edit, not the copy, is what counts).
    module.write_text(source)
    assert platformctl("plan", str(ran["file"]), "--json", env=env).returncode == 0


def test_a_model_edit_plans_a_retraining_alone(ran: dict, tmp_path: Path) -> None:
    raw = json.loads(json.dumps(ran["raw"]))
    raw["model"]["search"]["num_samples"] = raw["model"]["search"].get("num_samples", 4) + 3
    code, out = _plan(ran, _write(raw, tmp_path / "demo.yaml"))
    assert code == 3
    assert [c["path"] for c in out["changes"]] == ["model.search.num_samples"]
    assert [e["kind"] for e in out["effects"]] == ["retraining"]
    text = cli("plan", str(tmp_path / "demo.yaml"), env=ran["env"])  # the table a person reads
    assert text.returncode == 3 and "model.search.num_samples" in text.stdout and "retraining" in text.stdout


def test_a_broken_spec_exits_2_naming_the_field(ran: dict, tmp_path: Path) -> None:
    raw = json.loads(json.dumps(ran["raw"]))
    raw["model"]["metric"] = "rmse"  # a regression metric on a classifier
    r = cli("plan", str(_write(raw, tmp_path / "demo.yaml")), env=ran["env"])
    assert r.returncode == 2 and "model.metric" in r.stderr + r.stdout


def test_a_pipeline_that_never_ran_plans_its_first_run(ran: dict, demo_runs: dict, tmp_path: Path) -> None:
    from mlplatform.metadata.store import MetadataStore

    raw = json.loads(json.dumps(ran["raw"]))
    raw["name"] = "neverran"
    code, out = _plan(ran, _write(raw, tmp_path / "demo.yaml"))
    assert code == 3 and out["baseline"] is None and [e["kind"] for e in out["effects"]] == ["retraining"]
    assert MetadataStore(demo_runs["settings"].metadata_url).runs("neverran") == []  # a plan writes nothing
