"""The pipeline's job driver dies mid-run (SIGKILL during `train`): submitting the same run
again resumes after the last completed step, registers exactly one model version, and no
half-written artifact is visible (every artifact the run recorded reads back whole)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from mlplatform.services import Services
from mlplatform.settings import load_settings
from tests import backends
from tests.conftest import ROOT, platformctl
from tests.integration.faults.figures import report

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    backends.mode() != "cluster", reason="a fault test: runs with `pytest --backends cluster` (.ci/run's "
    "second run, on the multi-node cluster)")]
PIPELINE = "driver-loss"
STEPS = ["ingest", "validate", "featurize", "training_set", "train", "evaluate", "register"]


def _drivers(run_id: str) -> list[psutil.Process]:
    """The job's entrypoint: Ray runs it through a shell, so the shell and its python."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "jobs.pipeline" in cmd and run_id in cmd and "ray::" not in cmd:
            found.append(proc)
    return found


def test_a_killed_driver_resumes_after_its_last_completed_step(ray_cluster: dict[str, str], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data, folder = tmp_path / "data", tmp_path / "spec"
    write_demo_data(data, DemoDataConfig(days=1, rows_per_day=400, seed=5))
    folder.mkdir()
    spec = folder / "pipeline.yaml"
    spec.write_text((ROOT / "jobs/examples/demo.yaml").read_text()
                    .replace("name: demo\n", f"name: {PIPELINE}\n")
                    .replace("${PLATFORM_HOME}/demo/data", str(data)))
    steps = [a for s in STEPS for a in ("--step", s)]
    first = platformctl("submit", str(spec), *steps, "--json", cwd=folder)
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    store = Services(load_settings()).metadata
    killed_at, deadline = None, time.monotonic() + 240
    while time.monotonic() < deadline:
        detail = store.run(run_id)
        running = [e.step for e in (detail.steps if detail else []) if e.status == "RUNNING"]
        if "train" in running:
            time.sleep(1.0)  # inside the search: trials started, nothing registered yet
            procs = _drivers(run_id)
            assert any("python" in " ".join(p.cmdline()[:1]) for p in procs), "the job's driver was not found"
            for proc in procs:
                proc.kill()
            psutil.wait_procs(procs, timeout=10)
            killed_at = time.monotonic()
            break
        time.sleep(0.3)
    assert killed_at is not None, "the run never reached the train step"
    completed_before = sorted(store.completed_steps(run_id))
    t0 = time.monotonic()
    again = platformctl("submit", str(spec), *steps, "--run-id", run_id, "--wait", "--json", cwd=folder)
    assert again.returncode == 0, again.stdout + again.stderr
    resumed_s = time.monotonic() - t0
    detail = store.run(run_id)
    assert detail is not None and detail.status == "SUCCEEDED"
    # Steps completed before the kill ran once; train ran twice (the killed attempt stays RUNNING).
    per_step: dict[str, list[str]] = {}
    for e in detail.steps:
        per_step.setdefault(e.step, []).append(e.status)
    for step in completed_before:
        assert per_step[step] == ["COMPLETE"], (step, per_step[step])
    assert set(completed_before) >= {"ingest", "validate", "featurize", "training_set"}
    assert per_step["train"].count("COMPLETE") == 1
    # Exactly one model version for the run.
    services = Services(load_settings())
    versions = services.models.client.search_model_versions(f"name = '{PIPELINE}'")
    assert len(versions) == 1, [(v.version, v.run_id) for v in versions]
    # Every artifact the run recorded reads back whole (committed through its manifest).
    from mlplatform import manifest

    readable = 0
    for event in detail.artifacts:
        art = event.artifact
        if event.type == "OUTPUT" and art.kind in ("dataset_snapshot", "validated_snapshot", "training_set"):
            # A training set's URI names its data file; the manifest is in its folder.
            folder = art.uri.rsplit("/", 1)[0] if art.uri.endswith(".parquet") else art.uri
            _, committed = manifest.committed(folder)  # raises when the write has no manifest
            assert committed.files
            readable += 1
    assert readable >= 3
    report(capsys, "job driver killed mid-run", steps_completed_before_kill=len(completed_before),
           model_versions=len(versions), artifacts_checked=readable, resume_s=round(resumed_s, 1))
