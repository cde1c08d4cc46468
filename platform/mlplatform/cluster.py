"""Connect to / start Ray: the local head that `platformctl cluster up` manages.

The local cluster binds everything to 127.0.0.1, runs with token authentication
(the token kept under PLATFORM_HOME), and keeps its Ray temp dir in a folder named
after PLATFORM_HOME. That folder appears in the command line of every process the
head starts, which is how `cluster down` stops exactly those processes and leaves
any other Ray on the machine alone (`ray stop` would kill them all).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests
from pydantic import BaseModel, Field

from mlplatform.errors import ClusterUnreachable, InputError, PlatformError
from mlplatform.settings import Settings, apply_ray_auth_env, load_settings

REACH_TIMEOUT_S = 5.0


class ClusterState(BaseModel):
    """What `cluster up` started, persisted in PLATFORM_HOME/cluster.json."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str
    num_cpus: int
    started_at: dt.datetime
    ray_version: str


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


class UpResult(BaseModel):
    started: bool
    message: str
    state: ClusterState


# --- HTTP to the dashboard ---------------------------------------------------------


def auth_headers(settings: Settings) -> dict[str, str]:
    if settings.ray_auth_mode != "token":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token and settings.auth_token_path.exists():
        token = settings.auth_token_path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def require_address(settings: Settings) -> str:
    if not settings.ray_address:
        raise ClusterUnreachable(
            "no Ray cluster configured",
            hint="start one with `platformctl cluster up`, or pass --address / set RAY_ADDRESS "
                 "to a Ray dashboard (http://host:8265)",
        )
    return settings.ray_address.rstrip("/")


def dashboard_get(settings: Settings, path: str, timeout: float = REACH_TIMEOUT_S) -> Any:
    """GET a dashboard endpoint; unreachable or unauthorised clusters become clear errors."""
    url = require_address(settings)
    try:
        resp = requests.get(url + path, headers=auth_headers(settings), timeout=timeout)
    except requests.RequestException as exc:
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {url}: {type(exc).__name__}",
            hint="is it up? `platformctl cluster up` starts a local one; --address picks another",
        ) from None
    if resp.status_code in (401, 403):
        raise ClusterUnreachable(
            f"the Ray cluster at {url} refused the request ({resp.status_code}): token "
            "authentication failed",
            hint="set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) for it",
        )
    try:
        resp.raise_for_status()
        return resp.json()
    except (requests.HTTPError, ValueError):
        raise ClusterUnreachable(
            f"{url}{path} answered {resp.status_code} with no Ray dashboard JSON: is {url} a Ray "
            "dashboard (http://host:8265)?") from None


def ray_version_at(settings: Settings) -> str:
    return str(dashboard_get(settings, "/api/version").get("ray_version", "?"))


# --- the local head ----------------------------------------------------------------


def _temp_dir(home: Path) -> str:
    # Unix socket paths are capped at ~107 bytes, so this lives under /tmp, not HOME.
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:10]
    return f"/tmp/mlplatform-ray/{digest}"


def read_state(settings: Settings) -> ClusterState | None:
    try:
        return ClusterState.model_validate_json(settings.cluster_state_path.read_text())
    except (OSError, ValueError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise PlatformError("the `ray` command is not installed next to this Python")
    return found


def _ensure_token(settings: Settings) -> None:
    path = settings.auth_token_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
    path.chmod(0o600)


def cluster_processes(temp_dir: str, gcs_port: int | None = None) -> list[psutil.Process]:
    """Every process of the cluster whose Ray temp dir is `temp_dir`, with descendants.

    The Ray client server names only the GCS address on its command line, so
    processes pointing at `--address=<host>:<gcs_port>` count too.
    """
    found: dict[int, psutil.Process] = {}
    address_arg = f":{gcs_port}" if gcs_port else None
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            ours = any(temp_dir in part for part in cmdline) or bool(
                address_arg and any("ray.util.client.server" in p for p in cmdline)
                and any(p.startswith("--address=") and p.endswith(address_arg) for p in cmdline))
            if ours:
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _terminate(procs: list[psutil.Process], timeout: float = 15.0) -> int:
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def up(settings: Settings, *, num_cpus: int | None = None, port: int = 6379,
       dashboard_port: int = 8265, object_store_mb: int | None = None,
       wait_s: float = 90.0) -> UpResult:
    """Start the local head, or report the one this PLATFORM_HOME already runs."""
    state = read_state(settings)
    if state is not None:
        local = settings.model_copy(update={"ray_address": state.dashboard_url,
                                            "ray_auth_mode": "token"})
        try:
            ray_version_at(local)
            return UpResult(started=False, state=state,
                            message=f"the local cluster is already running at {state.dashboard_url}")
        except ClusterUnreachable:
            _terminate(cluster_processes(state.temp_dir, _port(state)))  # a stale head: clear it out
            settings.cluster_state_path.unlink(missing_ok=True)
    for name, p in (("--port", port), ("--dashboard-port", dashboard_port)):
        if not _port_free(p):
            raise InputError(f"{name} {p}: the port is in use on 127.0.0.1; pick another")
    settings.home.mkdir(parents=True, exist_ok=True)
    _ensure_token(settings)
    temp_dir = _temp_dir(settings.home)
    cpus = num_cpus or os.cpu_count() or 1
    cmd = [
        _ray_executable(), "start", "--head", f"--port={port}",
        "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}", f"--num-cpus={cpus}", f"--temp-dir={temp_dir}",
        f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
        "--disable-usage-stats",
    ]
    if object_store_mb:
        cmd.append(f"--object-store-memory={object_store_mb * 1024 * 1024}")
    env = {**os.environ, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(settings.auth_token_path),
           "RAY_USAGE_STATS_ENABLED": "0",
           # Job entrypoints say `python`: make that this interpreter, with mlplatform.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        _terminate(cluster_processes(temp_dir, port))
        raise PlatformError(f"`ray start` failed (exit {proc.returncode}):\n{tail}")
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    local = settings.model_copy(update={"ray_address": dashboard_url, "ray_auth_mode": "token"})
    deadline = time.monotonic() + wait_s
    while True:
        try:
            version = ray_version_at(local)
            break
        except (ClusterUnreachable, requests.HTTPError):
            if time.monotonic() > deadline:
                _terminate(cluster_processes(temp_dir, port))
                raise PlatformError(f"the Ray dashboard did not come up at {dashboard_url} "
                                    f"within {wait_s:.0f}s; logs under {temp_dir}") from None
            time.sleep(0.5)
    state = ClusterState(gcs_address=f"127.0.0.1:{port}", dashboard_url=dashboard_url,
                         temp_dir=temp_dir, num_cpus=cpus, ray_version=version,
                         started_at=dt.datetime.now(dt.UTC))
    settings.cluster_state_path.write_text(state.model_dump_json(indent=2))
    return UpResult(started=True, state=state,
                    message=f"started a local Ray {version} cluster: dashboard {dashboard_url}")


def _port(state: ClusterState) -> int:
    return int(state.gcs_address.rsplit(":", 1)[1])


def down(settings: Settings) -> int:
    """Stop the cluster `up` started from this PLATFORM_HOME; returns processes stopped."""
    state = read_state(settings)
    if state is None:
        return 0
    n = _terminate(cluster_processes(state.temp_dir, _port(state)))
    settings.cluster_state_path.unlink(missing_ok=True)
    return n


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
    from mlplatform.jobs_client import JobsClient

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


def ensure_ray() -> None:
    """Connect this process to Ray once: the job's cluster, or the configured one.

    Inside a Ray Job RAY_ADDRESS is set by Ray; elsewhere the local cluster's GCS
    address is used. RAY_AUTH_MODE is always set explicitly first.
    """
    import ray

    if ray.is_initialized():
        return
    settings = load_settings()
    if "RAY_AUTH_MODE" not in os.environ:
        apply_ray_auth_env(settings)
    address = os.environ.get("RAY_ADDRESS")
    if not address or address.startswith("http"):
        state = read_state(settings)
        address = state.gcs_address if state else None
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=True,
             logging_level="WARNING")

