"""The local Ray head that `platformctl cluster up` manages.

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
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests
from pydantic import BaseModel

from mlplatform.errors import ClusterUnreachable, InputError, PlatformError
from mlplatform.runtime import prometheus
from mlplatform.runtime.dashboard import ray_version_at
from mlplatform.runtime.prometheus import MetricsServer
from mlplatform.settings import Settings


class ClusterState(BaseModel):
    """What `cluster up` started, persisted in PLATFORM_HOME/cluster.json."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str
    num_cpus: int
    started_at: dt.datetime
    ray_version: str


class UpResult(BaseModel):
    started: bool
    message: str
    state: ClusterState
    metrics: MetricsServer | None = None


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
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Created 0600 from the start: a chmod afterwards leaves a window where others can read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        if path.read_text().strip():
            return
        # Empty: a crash between creating and writing it. An empty token is no secret.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


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


def _gone(p: psutil.Process) -> bool:
    """Exited: no such process, or a zombie nobody reaps (in a container without an init, the
    raylet's workers stay zombies after it exits; psutil.wait_procs would wait them out)."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _terminate(procs: list[psutil.Process], timeout: float = 2.0) -> int:
    """SIGTERM, then SIGKILL what is left after `timeout`. Measured on Ray 2.60 (issue 15): the
    raylet and its agents exit within a second or two of SIGTERM, but the GCS server and the
    autoscaler monitor were still there 20 s later, which made every `cluster down` take the
    full wait. A local cluster keeps nothing a kill loses (no persistent GCS; Serve's apps are
    drained before this), so the wait is short."""
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    alive = _wait_gone(procs, timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(alive, 5)
    return len(procs)


# How long the head's raylet keeps an idle worker process once more than num_cpus exist.
# Ray's default is 1 s, and a pipeline's work comes in bursts: each step's tasks, a search's
# trials, a deploy's build task found the previous burst's extra workers killed and started
# new ones, about a CPU second each on 2 cores. Kept 10 s, the next burst of the same job
# reuses them, for ~100 MB of memory each meanwhile. benchmarks/worker_reuse.py: 0.26x the
# CPU and half the wall time per burst; the test suite's README stage: 925 -> 859 busy CPU s.
WORKER_IDLE_KEEP_ENV = "RAY_idle_worker_killing_time_threshold_ms"
WORKER_IDLE_KEEP_MS = 10_000

# Where a port block for Serve's direct ingress is looked for: above Ray's worker ports (10002-19999
# by default) and below Linux's ephemeral range (32768-60999), which every outgoing connection
# draws its local port from. A block taken from the ephemeral range was found in use on a busy
# machine (two multi-node test sessions: 50 random starts, none with 16 free ports after it),
# and a port of it could be taken by a client connection between this check and Serve's bind.
_BLOCK_RANGE = (20000, 32767)


def _port_block(template: str, size: int = 16) -> dict[str, str]:
    """MIN/MAX settings for a run of `size` consecutive ports that are free on 127.0.0.1 now."""
    rng = random.SystemRandom()
    for _ in range(200):
        start = rng.randrange(_BLOCK_RANGE[0], _BLOCK_RANGE[1] - size)
        if all(_port_free(p) for p in range(start, start + size)):
            return {template.format("MIN"): str(start), template.format("MAX"): str(start + size - 1)}
    raise PlatformError(f"found no {size} consecutive free ports in {_BLOCK_RANGE[0]}-{_BLOCK_RANGE[1]} "
                        "for Ray Serve's direct ingress")


def serve_env(temp_dir: str, mode: str | None = None) -> dict[str, str]:
    """Ray Serve's settings for the local cluster, fixed when the head starts.

    PLATFORM_SERVE_FASTPATH=auto (the default: when Debian's `haproxy` is installed) or
    `haproxy` runs Ray's HAProxy ingress with direct ingress to the replicas; `off` keeps
    Serve's Python proxy. Measured with benchmarks/serving.py on 2 cores (the demo's
    LogisticRegression pipeline, one JSON row): the Python proxy peaked at 101 req/s (p50
    13 ms at one connection) and sagged to 90 at 64 connections; HAProxy reached 205 req/s
    (p50 4.9 ms), level to 64 connections: the same as plain uvicorn serving the same model
    in one worker (199 req/s, p50 5.0 ms). Ray keeps HAProxy's files under
    /tmp/haproxy-serve and its metrics/stats ports at 9101/8404 by default: one cluster per
    machine. Here they live under the cluster's temp dir (so `cluster down` finds and stops
    the HAProxy process by its command line) on free ports, so that two clusters coexist.
    HAProxy's request frontend binds to Serve's host (127.0.0.1 unless configured); its stats
    page and Prometheus exporter bind to every interface (Ray's template gives no choice).
    """
    mode = (mode or os.environ.get("PLATFORM_SERVE_FASTPATH", "auto")).lower()
    if mode not in ("off", "haproxy", "auto"):
        raise InputError(f"PLATFORM_SERVE_FASTPATH={mode!r}: expected off, haproxy or auto")
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if mode == "off" or (mode == "auto" and binary is None):
        return {}
    if binary is None:
        raise InputError("PLATFORM_SERVE_FASTPATH=haproxy: the haproxy binary is not installed "
                         "(apt-get install haproxy)")
    base = f"{temp_dir}/haproxy"
    Path(base).mkdir(parents=True, exist_ok=True)
    return {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": binary,
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{base}/haproxy.cfg",
            # Ray puts the node id (56 characters) in the socket's path and HAProxy allows 97:
            # /tmp/mlplatform-ray/<10>/<node id>/h.sock is 94.
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{temp_dir}/h.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{base}/server-state",
            # Ray hands replicas direct-ingress ports from fixed ranges (30000+, 40000+) bound with
            # SO_REUSEPORT: two clusters on one machine would share them and answer each other's
            # requests. A block of ports found free now, per cluster, keeps them apart.
            **_port_block("RAY_SERVE_DIRECT_INGRESS_{}_HTTP_PORT"),
            **_port_block("RAY_SERVE_DIRECT_INGRESS_{}_GRPC_PORT"),
            # With HAProxy in front, Serve's Python proxy moves to a fixed fallback port (8500,
            # gRPC 9500), HAProxy's backup server for a replica marked down. Both clusters' proxies
            # bound it (SO_REUSEPORT), so under load one cluster's requests were answered by the
            # other's application of the same name (the suite in two workers, issue 15).
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            # A replica going away (serve down, a redeploy) stays open this long before it stops
            # accepting, so that load balancers can deregister it: 30 s by default, made for
            # external balancers. Here HAProxy is the only one, Serve rewrites its configuration
            # itself and it retries a refused connection on another replica: 2 s is enough, and
            # tests/integration/test_serving.py's shutdown test went from 36 s to 8.5 s.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            # A replica that dies mid-request (killed, OOM, its node lost) closes the connection
            # with no response: Ray's default retries only connection failures, so each request in
            # flight became a 500 (tests/integration/faults/test_replica_loss.py: 3 of 2,139, over the
            # 0.1% target). A prediction has no side effect that outlives the dead replica (its
            # prediction-log buffer dies with it), so HAProxy replays it on another replica.
            "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response",
            "RAY_SERVE_HAPROXY_RETRIES": "3"}


def up(settings: Settings, *, num_cpus: int | None = None, port: int = 6379,
       dashboard_port: int = 8265, object_store_mb: int | None = None,
       wait_s: float = 90.0, metrics: bool = False) -> UpResult:
    """Start the local head, or report the one this PLATFORM_HOME already runs. With `metrics`,
    also a local Prometheus scraping it (mlplatform.runtime.prometheus), when one can run."""
    state = read_state(settings)
    if state is not None:
        local = settings.model_copy(update={"ray_address": state.dashboard_url,
                                            "ray_auth_mode": "token"})
        try:
            ray_version_at(local)
            server = prometheus.read(settings)
            if metrics and (server is None or server.url is None):
                server = prometheus.start(settings, state.temp_dir, _metrics_port())
            return UpResult(started=False, state=state, metrics=server,
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
    env.update(serve_env(temp_dir))
    env.setdefault(WORKER_IDLE_KEEP_ENV, str(WORKER_IDLE_KEEP_MS))  # a user's own setting wins
    metrics_port = _metrics_port() if metrics else None
    if metrics_port is not None:  # the dashboard's Metrics tab reads from the Prometheus started below
        env["RAY_PROMETHEUS_HOST"] = f"http://127.0.0.1:{metrics_port}"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        _terminate(cluster_processes(temp_dir, port))
        raise PlatformError(f"`ray start` failed (exit {proc.returncode}):\n{tail}")
    dashboard_url = f"http://127.0.0.1:{dashboard_port}"
    local = settings.model_copy(update={"ray_address": dashboard_url, "ray_auth_mode": "token"})
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                version = ray_version_at(local)
                break
            except (ClusterUnreachable, requests.HTTPError):
                if time.monotonic() > deadline:
                    raise PlatformError(f"the Ray dashboard did not come up at {dashboard_url} "
                                        f"within {wait_s:.0f}s; logs under {temp_dir}") from None
                time.sleep(0.5)
        state = ClusterState(gcs_address=f"127.0.0.1:{port}", dashboard_url=dashboard_url,
                             temp_dir=temp_dir, num_cpus=cpus, ray_version=version,
                             started_at=dt.datetime.now(dt.UTC))
        settings.cluster_state_path.write_text(state.model_dump_json(indent=2))
    except BaseException:  # timed out, interrupted or anything else: no head left unrecorded
        _terminate(cluster_processes(temp_dir, port))
        raise
    server = prometheus.start(settings, temp_dir, metrics_port) if metrics_port is not None else None
    return UpResult(started=True, state=state, metrics=server,
                    message=f"started a local Ray {version} cluster: dashboard {dashboard_url}")


def _metrics_port() -> int:
    return 9090 if _port_free(9090) else free_port()  # Prometheus' own default when it is free


def _port(state: ClusterState) -> int:
    return int(state.gcs_address.rsplit(":", 1)[1])


def down(settings: Settings) -> int:
    """Stop the cluster `up` started from this PLATFORM_HOME; returns processes stopped."""
    state = read_state(settings)
    if state is None:
        return 0
    n = _terminate(cluster_processes(state.temp_dir, _port(state)))
    n += int(prometheus.stop(settings))
    settings.cluster_state_path.unlink(missing_ok=True)
    return n
