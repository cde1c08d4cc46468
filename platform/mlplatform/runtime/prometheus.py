"""A local Prometheus for the local cluster (`platformctl cluster up --metrics`).

It scrapes every Ray node through the service-discovery file Ray's dashboard keeps in its session
folder (the same `file_sd_configs` as cluster/prometheus/prometheus.yml, with the local cluster's
path), and Ray's dashboard is told where it is (RAY_PROMETHEUS_HOST) so that its Metrics tab draws
from it. Prometheus is optional: without Debian's `prometheus` binary, or when it does not come
up, the cluster still starts and the reason is reported and kept in the home (`metrics.json`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import requests
from pydantic import BaseModel

from mlplatform.settings import Settings

SD_FILE = "prom_metrics_service_discovery.json"
SCRAPE_INTERVAL = "5s"


class MetricsServer(BaseModel):
    """What `cluster up --metrics` started, or why it started nothing."""

    url: str | None = None
    pid: int | None = None
    config: str | None = None
    data_dir: str | None = None
    error: str | None = None


def binary() -> str | None:
    return shutil.which("prometheus") or next(
        (p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if os.access(p, os.X_OK)), None)


def sd_file(temp_dir: str) -> Path:
    """Where Ray's dashboard lists the nodes' metrics endpoints for Prometheus."""
    return Path(temp_dir) / "session_latest" / SD_FILE


def config_text(service_discovery: Path) -> str:
    return (f"# Written by `platformctl cluster up --metrics` (see cluster/prometheus/prometheus.yml).\n"
            f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  evaluation_interval: {SCRAPE_INTERVAL}\n"
            f"scrape_configs:\n- job_name: ray\n  file_sd_configs:\n  - files:\n"
            f"    - {json.dumps(str(service_discovery))}\n")


def _state_path(settings: Settings) -> Path:
    return settings.home / "metrics.json"


def read(settings: Settings) -> MetricsServer | None:
    try:
        return MetricsServer.model_validate_json(_state_path(settings).read_text())
    except (OSError, ValueError):
        return None


def start(settings: Settings, temp_dir: str, port: int, *, wait_s: float = 30.0) -> MetricsServer:
    """Start Prometheus on 127.0.0.1:`port`; never raises: a failure is the result's `error`."""
    folder = settings.home / "prometheus"
    found = binary()
    if found is None:
        result = MetricsServer(error="no `prometheus` binary on this machine (Debian: apt-get install "
                                     "prometheus); the cluster runs without it")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "prometheus.yml"
        config.write_text(config_text(sd_file(temp_dir)))
        log = open(folder / "prometheus.log", "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            [found, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=7d"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{port}"
        result = MetricsServer(url=url, pid=proc.pid, config=str(config), data_dir=str(folder / "data"))
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                result = MetricsServer(error=f"prometheus exited ({proc.returncode}); see "
                                             f"{folder / 'prometheus.log'}")
                break
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                proc.kill()
                result = MetricsServer(error=f"prometheus did not answer at {url} within {wait_s:.0f}s; "
                                             f"see {folder / 'prometheus.log'}")
                break
            time.sleep(0.3)
    settings.home.mkdir(parents=True, exist_ok=True)
    _state_path(settings).write_text(result.model_dump_json(indent=2))
    return result


def stop(settings: Settings) -> bool:
    """Stop the Prometheus `start` recorded for this home; True when one was stopped."""
    state = read(settings)
    _state_path(settings).unlink(missing_ok=True)
    if state is None or state.pid is None:
        return False
    try:
        proc = psutil.Process(state.pid)
        if "prometheus" not in " ".join(proc.cmdline()):
            return False  # the pid was reused by another program
        os.kill(state.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (psutil.Error, OSError):
        return False
    return True
