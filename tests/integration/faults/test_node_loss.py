"""A worker node dies in the middle of a hyperparameter search: the search still finishes,
the trials that ran on it resume from their last checkpoint on the nodes that are left
(FailureConfig), and the figures say how many trials were lost and how much time it cost
against the same search with no fault, run just before on the same cluster."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from sklearn.datasets import make_classification

from mlplatform.settings import load_settings
from mlplatform.spec import ModelSpec
from mlplatform.training.data import SplitData
from mlplatform.training.search import SearchResult, TuneStorage, run_search
from mlplatform.training.trainer import tune_root
from tests import backends
from tests.integration.faults.figures import report
from tests.multinode import kill_worker, start_worker, stop_worker, wait_node_dead

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    backends.mode() != "cluster", reason="a fault test: runs with `pytest --backends cluster` (.ci/run's "
    "second run, on the multi-node cluster)")]
ITERATIONS = 60


def _data(n: int = 20000) -> SplitData:
    X, y = make_classification(n, 8, n_informative=5, random_state=3)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    cut = int(n * 0.8)
    return SplitData(frame.iloc[:cut].reset_index(drop=True), y[:cut],
                     frame.iloc[cut:].reset_index(drop=True), y[cut:])


def _model() -> ModelSpec:
    # ASHA with a grace period past the last rung: no trial stops early, so every trial must
    # reach ITERATIONS, through its checkpoints (one every 5 iterations).
    return ModelSpec.model_validate({
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": ITERATIONS, "early_stopping": False},
        "search": {"space": {"learning_rate": {"type": "loguniform", "low": 0.02, "high": 0.3}},
                   "num_samples": 4, "scheduler": "asha", "max_iterations": ITERATIONS, "report_every": 5,
                   "grace_period": ITERATIONS // 5, "max_failures": 3, "max_concurrent_trials": 4}})


def _trials_on(temp_dir: str) -> int:
    from mlplatform.runtime.local import cluster_processes

    n = 0
    for proc in cluster_processes(temp_dir):
        try:
            n += " ".join(proc.cmdline()).startswith("ray::ImplicitFunc")
        except psutil.Error:
            continue
    return n


def _checkpointed_twice(where: TuneStorage, name: str) -> int:
    """How many trials of experiment `name` wrote their second checkpoint (under the storage
    URI: S3 in the cluster run)."""
    import pyarrow.fs as pafs

    fs = where.filesystem or pafs.LocalFileSystem()
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{where.path}/{name}", recursive=True))
    except (FileNotFoundError, OSError):
        return 0
    return len({i.path.split("/checkpoint_000001")[0] for i in infos if "/checkpoint_000001" in i.path})


def test_a_worker_node_lost_mid_search(ray_connected: dict[str, str], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    head = ray_connected
    home = tmp_path / "home"
    env = {"PLATFORM_HOME": str(home), **backends.store_env(home, "nodeloss")}
    settings = load_settings(env={**os.environ, **env})
    where = tune_root(settings, "nodeloss")  # checkpoints under the storage URI, as the train step's
    node = start_worker(head["gcs_address"], head["temp_dir"], 9, num_cpus=2)
    try:
        data = _data()
        baseline = run_search(_model(), data, storage_path=where, name="base")
        out: dict[str, SearchResult | BaseException] = {}

        def search() -> None:
            try:
                out["result"] = run_search(_model(), data, storage_path=where, name="fault")
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                out["result"] = exc

        thread = threading.Thread(target=search)
        thread.start()
        killed_at = None
        deadline = time.time() + 180
        while time.time() < deadline and thread.is_alive():
            # Kill once a trial runs on the node and every running trial has checkpointed twice
            # (so the node's trials have a checkpoint to resume from).
            if _trials_on(node.temp_dir) and _checkpointed_twice(where, "fault") >= 4:
                killed_at = time.perf_counter()
                kill_worker(node)
                break
            time.sleep(0.3)
        assert killed_at is not None, ("no trial ran on the worker node", repr(out.get("result"))[:1500])
        detected_s = wait_node_dead(node.node_id)
        thread.join(timeout=400)
        result = out["result"]
        assert isinstance(result, SearchResult), result
        # The search finished: every trial ran to the end, the lost ones from their checkpoints.
        assert all(t.status == "TERMINATED" and t.iterations == ITERATIONS for t in result.trials), \
            [(t.status, t.iterations, t.error) for t in result.trials]
        lost = [t for t in result.trials if t.restored >= 1]
        assert lost, "no trial was restored: the node held none, or they restarted from scratch"
        assert np.isclose(result.best_score, baseline.best_score, atol=0.02)
        report(capsys, "worker node lost during a search", trials=len(result.trials), trials_lost=len(lost),
               node_death_detected_s=round(detected_s, 1), search_s=round(result.wall_s, 1),
               baseline_s=round(baseline.wall_s, 1), time_added_s=round(result.wall_s - baseline.wall_s, 1))
    finally:
        stop_worker(node)
