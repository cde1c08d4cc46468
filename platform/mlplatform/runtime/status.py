"""What a cluster is running: nodes, jobs and Serve applications, for `cluster status`, and
what of it listens beyond this machine (the local cluster's processes, read with psutil)."""

from __future__ import annotations

import ipaddress
from typing import Any

import psutil
from pydantic import BaseModel, Field

from mlplatform.errors import ClusterUnreachable
from mlplatform.runtime.dashboard import dashboard_get, ray_version_at, require_address
from mlplatform.runtime.jobs import JobsClient
from mlplatform.runtime.local import cluster_processes, read_state
from mlplatform.settings import Settings


class NodeInfo(BaseModel):
    node_id: str
    ip: str
    state: str
    is_head: bool
    cpus: float = 0
    memory_gb: float = 0
    object_store_gb: float = 0


class Exposure(BaseModel):
    """A socket of the cluster that other machines can reach: on every interface, or on an
    address other than loopback (Ray 2.60's client server binds to the node's IP)."""

    pid: int
    process: str
    address: str
    port: int
    fix: str = Field(description="What to set so that it binds to 127.0.0.1.")


# What to set, by the process's executable name (Ray's binaries), else by a fragment of its
# command line (Python processes; the first match wins: a raylet's command line names the agent).
_BY_NAME = {
    "haproxy": "Ray's HAProxy template binds its stats and Prometheus ports to every interface; "
               "PLATFORM_SERVE_FASTPATH=off runs Serve's Python proxy instead, or firewall the port",
    "raylet": "--node-ip-address=127.0.0.1 (ray start)",
    "gcs_server": "--node-ip-address=127.0.0.1 (ray start)",
}
_RAY_OWN = ("one of Ray's own gRPC/metrics ports, which Ray binds to every interface whatever the "
            "node IP: firewall the node's ports (only --node-ip-address is configurable)")
_BY_CMDLINE = (
    ("ServeReplica", "Serve's HTTP host: PLATFORM_SERVE_HOST=127.0.0.1 (http_options.host)"),
    ("ProxyActor", "Serve's HTTP host: PLATFORM_SERVE_HOST=127.0.0.1 (http_options.host)"),
    ("ray.util.client.server", "the Ray client server binds to the node IP: start the node with "
     "--node-ip-address=127.0.0.1, or firewall --ray-client-server-port"),
    ("dashboard/agent", "the dashboard agent: --node-ip-address=127.0.0.1 (ray start)"),
    ("ray-dashboard-", _RAY_OWN),
    ("dashboard", "--dashboard-host=127.0.0.1 (ray start)"),
    ("ray::", _RAY_OWN),
    ("mlflow", "the MLflow UI: `platformctl ui` binds it to 127.0.0.1"),
)


def _fix(name: str, cmdline: str) -> str:
    if name in _BY_NAME:
        return _BY_NAME[name]
    return next((fix for key, fix in _BY_CMDLINE if key in cmdline),
                "bind it to 127.0.0.1 (--node-ip-address=127.0.0.1 for Ray's own), or firewall the port")


def _beyond_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return True
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4's loopback
    return not (mapped or addr).is_loopback


def _process_name(name: str) -> str:
    """Ray retitles an actor's process `ray::Class.method` while a call runs and `ray::Class`
    between calls: the class is the process (two looks a moment apart named one Serve
    controller two ways), the method only what it was doing then."""
    return name.split(".", 1)[0] if name.startswith("ray::") else name


def exposed_listeners(procs: list[psutil.Process]) -> list[Exposure]:
    """The listening TCP sockets of `procs` that are not on a loopback address (0.0.0.0 and ::
    included), sorted by port. Processes that exit meanwhile are skipped."""
    found: dict[tuple[int, str, int], Exposure] = {}
    for proc in procs:
        try:
            conns = proc.net_connections(kind="tcp")
            cmdline = " ".join(proc.cmdline()) or proc.name()
            name = _process_name(proc.name())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for c in conns:
            if c.status != psutil.CONN_LISTEN or not c.laddr or not _beyond_loopback(c.laddr.ip):
                continue
            found[(proc.pid, c.laddr.ip, c.laddr.port)] = Exposure(
                pid=proc.pid, process=name, address=c.laddr.ip, port=c.laddr.port,
                fix=_fix(name, cmdline))
    return sorted(found.values(), key=lambda e: (e.port, e.address, e.pid))


class ClusterStatus(BaseModel):
    address: str
    ray_version: str
    dashboard_url: str
    local: bool = Field(description="Started by `platformctl cluster up` from this PLATFORM_HOME.")
    nodes: list[NodeInfo]
    running_jobs: list[dict[str, Any]]
    serve_applications: dict[str, str]
    exposed: list[Exposure] | None = Field(None, description="The local cluster's sockets that "
                                           "listen beyond 127.0.0.1; null for a cluster of another "
                                           "machine (its processes cannot be inspected from here).")


def status(settings: Settings) -> ClusterStatus:
    version = ray_version_at(settings)
    url = require_address(settings)
    raw = dashboard_get(settings, "/api/v0/nodes?limit=1000&detail=true", timeout=15)
    nodes = []
    for n in raw.get("data", {}).get("result", {}).get("result", []):
        res = n.get("resources_total") or {}
        nodes.append(NodeInfo(
            node_id=n.get("node_id", "?"), ip=n.get("node_ip", "?"), state=n.get("state", "?"),
            is_head=bool(n.get("is_head_node")), cpus=res.get("CPU", 0),
            memory_gb=round(res.get("memory", 0) / 2**30, 2),
            object_store_gb=round(res.get("object_store_memory", 0) / 2**30, 2)))
    jobs = [j.model_dump(mode="json") for j in JobsClient(settings).list()
            if j.status in ("PENDING", "RUNNING")]
    try:
        serve = dashboard_get(settings, "/api/serve/applications/", timeout=10)
        apps = {name: a.get("status", "?") for name, a in (serve.get("applications") or {}).items()}
    except (ClusterUnreachable, ValueError):  # Serve not started: no applications
        apps = {}
    state = read_state(settings)
    local = bool(state and state.dashboard_url == url)
    exposed = None
    if state is not None and local:
        port = int(state.gcs_address.rsplit(":", 1)[1])
        exposed = exposed_listeners(cluster_processes(state.temp_dir, port))
    return ClusterStatus(address=url, ray_version=version, dashboard_url=url, local=local, nodes=nodes,
                         running_jobs=jobs, serve_applications=apps, exposed=exposed)
