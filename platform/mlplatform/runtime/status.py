"""What a cluster is running: nodes, jobs and Serve applications, for `cluster status`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from mlplatform.errors import ClusterUnreachable
from mlplatform.runtime.dashboard import dashboard_get, ray_version_at, require_address
from mlplatform.runtime.jobs import JobsClient
from mlplatform.runtime.local import read_state
from mlplatform.settings import Settings


class NodeInfo(BaseModel):
    node_id: str
    ip: str
    state: str
    is_head: bool
    cpus: float = 0
    memory_gb: float = 0
    object_store_gb: float = 0


class ClusterStatus(BaseModel):
    address: str
    ray_version: str
    dashboard_url: str
    local: bool = Field(description="Started by `platformctl cluster up` from this PLATFORM_HOME.")
    nodes: list[NodeInfo]
    running_jobs: list[dict[str, Any]]
    serve_applications: dict[str, str]


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
    return ClusterStatus(address=url, ray_version=version, dashboard_url=url,
                         local=bool(state and state.dashboard_url == url), nodes=nodes,
                         running_jobs=jobs, serve_applications=apps)
