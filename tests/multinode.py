"""Worker nodes joined to a local Ray head, each a `ray start` of its own with its own temp
dir, ports and resources: a multi-node cluster on one machine, the way a real one is built
(one raylet, object store and set of workers per node), so that placement, node loss and
storage that must not go through a node's disk can be tested for real.

A node is removed the way a machine dies: every process of the node killed at once
(SIGKILL), with no drain; the GCS notices through its health checks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass
class WorkerNode:
    temp_dir: str
    resources: dict[str, float]
    num_cpus: int
    node_id: str = ""
    pids: list[int] = field(default_factory=list)


def _ray() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def _node_env(temp_dir: str) -> dict[str, str]:
    from mlplatform.runtime.local import serve_env

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    # Each node's Serve replicas take direct-ingress ports from blocks of their own.
    env.update(serve_env(temp_dir))
    return env


def start_worker(gcs_address: str, head_temp_dir: str, index: int, *, num_cpus: int = 1,
                 resources: dict[str, float] | None = None, object_store_mb: int = 150,
                 wait_s: float = 60.0) -> WorkerNode:
    """Join one worker node to the head at `gcs_address`. Its temp dir extends the head's
    name (so `cluster down`, which stops every process naming the head's temp dir, stops it
    too) but is a folder of its own."""
    from mlplatform.runtime.local import free_port

    temp_dir = f"{head_temp_dir}-w{index}"
    res = {f"node_w{index}": 1.0, **(resources or {})}
    cmd = [_ray(), "start", f"--address={gcs_address}", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", f"--resources={json.dumps(res)}",
           f"--object-store-memory={object_store_mb * 1024 * 1024}",
           f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
           "--disable-usage-stats"]
    proc = subprocess.run(cmd, env=_node_env(temp_dir), capture_output=True, text=True, timeout=wait_s)
    if proc.returncode != 0:
        raise RuntimeError(f"worker node {index} did not start: {(proc.stderr or proc.stdout)[-2000:]}")
    node = WorkerNode(temp_dir=temp_dir, resources=res, num_cpus=num_cpus)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        node_id = _alive_node_with(f"node_w{index}")
        if node_id:
            node.node_id = node_id
            node.pids = [p.pid for p in _processes(temp_dir)]
            return node
        time.sleep(0.5)
    stop_worker(node)
    raise RuntimeError(f"worker node {index} never joined the cluster at {gcs_address}")


def _alive_node_with(resource: str) -> str | None:
    import ray

    for n in ray.nodes():
        if n.get("Alive") and resource in (n.get("Resources") or {}):
            return str(n["NodeID"])
    return None


def _processes(temp_dir: str) -> list[psutil.Process]:
    from mlplatform.runtime.local import cluster_processes

    return cluster_processes(temp_dir)


def start_workers(gcs_address: str, head_temp_dir: str, count: int, *, num_cpus: int = 1) -> list[WorkerNode]:
    return [start_worker(gcs_address, head_temp_dir, i + 1, num_cpus=num_cpus) for i in range(count)]


def kill_worker(node: WorkerNode) -> int:
    """The node dies: SIGKILL to every one of its processes (raylet, object store, workers)."""
    procs = _processes(node.temp_dir)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return len(procs)


def stop_worker(node: WorkerNode) -> None:
    procs = _processes(node.temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def stop_workers(nodes: list[WorkerNode]) -> None:
    for node in nodes:
        stop_worker(node)


def wait_node_dead(node_id: str, timeout: float = 90.0) -> float:
    """Seconds until the GCS marks the node dead (its health checks time out)."""
    import ray

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes()):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise TimeoutError(f"node {node_id[:8]} still alive after {timeout:.0f}s")
