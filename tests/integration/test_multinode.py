"""The pipeline end to end on a multi-node cluster with the production backends
(`pytest --backends cluster`, the second run of .ci/run): the session's head and two worker
nodes (tests/multinode.py, each with its own temp dir), PostgreSQL for the metadata store and
MLflow, Redis for the online store, and moto's S3 server for the source data, the storage
URI and MLflow's artifacts. The run is submitted as a Ray Job like a user's: its driver runs
on the head, the Tune trials spread over the nodes, and the champion is served by replicas
on two nodes. Nothing goes through a node's local disk: the home holds no data afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import requests

from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from tests import backends
from tests.conftest import ROOT, platformctl

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    backends.mode() != "cluster", reason="multi-node with PostgreSQL, Redis and S3: runs with "
    "`pytest --backends cluster` (.ci/run's second run)")]
NAME = "multinode"


def _upload(local: Path, uri: str) -> None:
    from mlplatform import storage

    fs, root = storage.resolve(uri)
    fs.create_dir(root, recursive=True)
    for f in sorted(local.glob("*.parquet")):
        pafs.copy_files(str(f), f"{root}/{f.name}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)


def _nodes_of(kind: str, job_id: str) -> set[str]:
    from ray.util.state import list_actors

    return {a.node_id for a in list_actors(filters=[("class_name", "=", kind), ("job_id", "=", job_id)],
                                           limit=10_000, detail=True, raise_on_missing_output=False)}


def test_the_pipeline_runs_across_nodes_through_s3(ray_connected: dict[str, str], tmp_path: Path) -> None:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    assert len(alive) >= 3, "the session cluster should have a head and two worker nodes"
    home = tmp_path / "home"
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           **backends.store_env(home, NAME)}
    storage_uri = env["PLATFORM_STORAGE_URI"]
    assert storage_uri.startswith("s3://")
    source = f"{storage_uri}/incoming"
    local = tmp_path / "days"
    write_demo_data(local, DemoDataConfig(days=2, rows_per_day=500, seed=21))
    _upload(local, source)
    folder = tmp_path / "spec"
    folder.mkdir()
    text = (ROOT / "jobs/examples/demo.yaml").read_text()
    spec = folder / "pipeline.yaml"
    spec.write_text(text.replace("name: demo\n", f"name: {NAME}\n")
                    .replace("${PLATFORM_HOME}/demo/data", source)
                    .replace("  replicas: 1\n", "  replicas: 2\n  max_replicas_per_node: 1\n"))
    sub = platformctl("submit", str(spec), "--wait", "--json", env=env, cwd=folder, timeout=900)
    assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
    out = json.loads(sub.stdout)
    shown = platformctl("runs", "show", out["run_id"], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["status"] == "SUCCEEDED", run
    steps = {e["step"]: e["status"] for e in run["steps"]}
    every = ("ingest", "validate", "featurize", "training_set", "train", "evaluate", "register", "promote",
             "rollout")
    assert all(steps.get(s) == "COMPLETE" for s in every), steps
    # Every artifact with a location is in the bucket: nothing on a node's disk.
    uris = [e["artifact"]["uri"] for e in run["artifacts"] if e["type"] == "OUTPUT"]
    local = [u for u in uris if u.startswith(("/", "file:")) or "://" not in u and ":" not in u]
    assert uris and not local, local
    assert not (home / "storage").exists() and not list(home.glob("*.db"))
    # The trials ran on more than one node.
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(ray_connected["dashboard_url"]).get_job_info(out["job_id"])
    trial_nodes = _nodes_of("ImplicitFunc", info.job_id)
    assert len(trial_nodes) >= 2, trial_nodes
    # The champion is served by replicas on two nodes, over HTTP.
    from mlplatform.serving.client import ServeControl
    from mlplatform.settings import load_settings

    mine = {k: v for k, v in os.environ.items() if k != "_PLATFORM_APPLIED_RAY_AUTH_MODE"}  # as platformctl's
    settings = load_settings(env={**mine, **env})
    details = ServeControl(settings).details()["applications"][NAME]["deployments"]
    replica_nodes = {r["node_id"] for d in details.values() for r in d.get("replicas") or []
                     if r.get("state") == "RUNNING"}
    assert len(replica_nodes) == 2, details
    from mlplatform.services import Services
    from mlplatform.serving.infra import json_value, sample_rows

    services = Services(settings)
    champion = services.models.champion(NAME)
    rows = [{k: json_value(v) for k, v in r.items()}
            for r in sample_rows(services, NAME, champion, 20).to_dict("records")]
    answers = [requests.post(f"{settings.serve_url}/{NAME}/predict", json={"rows": [r]}, timeout=30)
               for r in rows]
    assert all(a.status_code == 200 for a in answers), [a.text[:200] for a in answers if a.status_code != 200]
    platformctl("serve", "down", NAME, env=env)
