"""The local cluster keeps idle worker processes for the next burst of work of the same job
(runtime/local.py, WORKER_IDLE_KEEP_MS), where Ray's default would have stopped them after 1 s
and started new ones: the second burst, a few seconds after the first, runs on the first's
processes. The truth is the processes' own PIDs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import ray

pytestmark = pytest.mark.ray
WIDTH = 4  # twice the session cluster's 2 CPUs: above Ray's soft limit, idle ones are trimmed


@ray.remote(num_cpus=0)
def _held_pid(folder: str) -> int:
    """Runs until WIDTH of these run at once, so each burst holds WIDTH worker processes."""
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(os.listdir(folder)) < WIDTH and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()


def _burst(folder: Path) -> set[int]:
    folder.mkdir()
    pids = set(ray.get([_held_pid.remote(str(folder)) for _ in range(WIDTH)]))
    assert len(pids) == WIDTH, pids
    return pids


def test_a_burst_after_a_pause_runs_on_the_same_worker_processes(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    first = _burst(tmp_path / "first")
    time.sleep(3)  # idle past Ray's own 1 s
    assert _burst(tmp_path / "second") == first
