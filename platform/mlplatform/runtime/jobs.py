"""Ray Jobs: submitting the pipeline to a cluster and following what it does.

A thin typed layer over ray.job_submission.JobSubmissionClient that turns its
errors (unreachable dashboard, unknown id, a job stuck PENDING after a failed
runtime_env, ray#56102) into messages a user can act on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlplatform.errors import InputError, PlatformError
from mlplatform.redact import redact_url
from mlplatform.run_ids import check_run_id
from mlplatform.runtime.dashboard import auth_headers, ray_version_at, require_address
from mlplatform.settings import STORE_URL_KEYS, Settings, apply_ray_auth_env, setting_name

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# Never upload these: .git alone often passes Ray's 100 MiB package limit.
# The submitter's platform.yaml stays home too: a job reads its configuration (credentials, the
# allow-lists of code a spec may name) from the cluster's environment, not from the submission.
EXCLUDES = [".git", ".platform", ".venv", "venv", "**/__pycache__", "*.pyc", "*.egg-info",
            ".pytest_cache", ".ruff_cache", ".hypothesis", "build", "dist", "mlruns",
            "benchmarks/results", "/platform.yaml"]


class JobInfo(BaseModel):
    job_id: str
    status: str
    entrypoint: str
    message: str | None = None
    error_type: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    driver_exit_code: int | None = None
    metadata: dict[str, str] = {}

    @property
    def duration_s(self) -> float | None:
        if not self.start_time:
            return None
        end = self.end_time or dt.datetime.now(dt.UTC)
        return (end - self.start_time).total_seconds()


def _ms(value: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC) if value else None


def _info(job_id: str, raw: Any) -> JobInfo:
    return JobInfo(
        job_id=raw.submission_id or job_id, status=str(raw.status.value if hasattr(
            raw.status, "value") else raw.status), entrypoint=raw.entrypoint,
        message=raw.message, error_type=getattr(raw, "error_type", None),
        start_time=_ms(raw.start_time), end_time=_ms(raw.end_time),
        driver_exit_code=getattr(raw, "driver_exit_code", None), metadata=raw.metadata or {})


def package_dir(name: str) -> Path:
    """The folder of an importable package, found without importing it."""
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise PlatformError(f"package {name!r} is not installed next to mlplatform")
    return Path(list(found.submodule_search_locations)[0])


class JobsClient:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.address = require_address(settings)
        apply_ray_auth_env(settings)
        ray_version_at(settings)  # fails fast (5 s) and clearly when unreachable
        from ray.job_submission import JobSubmissionClient

        self._client = JobSubmissionClient(self.address, headers=auth_headers(settings))

    def _call(self, job_id: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                raise InputError(f"job {job_id!r} not found on {self.address}") from None
            raise PlatformError(f"job {job_id}: {exc}") from None

    def submit(self, entrypoint: str, runtime_env: dict[str, Any], submission_id: str,
               metadata: dict[str, str]) -> str:
        # Ray logs every packaging detail at INFO/WARNING on the client (its loggers set
        # their own levels); the user sees the job id and, on failure, our message.
        logging.disable(logging.WARNING)
        try:
            return self._client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                           submission_id=submission_id, metadata=metadata)
        except (RuntimeError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[-1][:500]
            raise PlatformError(f"submitting the job failed: {msg}",
                                hint="the working directory upload is limited to 100 MiB; "
                                     "run from a smaller folder or exclude files") from None
        finally:
            logging.disable(logging.NOTSET)

    def list(self) -> list[JobInfo]:
        jobs = [_info(j.submission_id or j.job_id or "?", j) for j in self._client.list_jobs()]
        return sorted(jobs, key=lambda j: j.start_time or dt.datetime.min.replace(tzinfo=dt.UTC),
                      reverse=True)

    def status(self, job_id: str) -> JobInfo:
        return _info(job_id, self._call(job_id, lambda: self._client.get_job_info(job_id)))

    def logs(self, job_id: str) -> str:
        return str(self._call(job_id, lambda: self._client.get_job_logs(job_id)))

    def stop(self, job_id: str) -> bool:
        return bool(self._call(job_id, lambda: self._client.stop_job(job_id)))

    def follow(self, job_id: str, write: Callable[[str], None] = sys.stdout.write) -> JobInfo:
        """Stream the job's logs until it ends, then return its final state."""
        self.status(job_id)

        async def tail() -> None:
            async for chunk in self._client.tail_job_logs(job_id):
                write(chunk)

        asyncio.run(tail())
        return self.wait(job_id, timeout_s=60)

    def wait(self, job_id: str, timeout_s: float = 3600, pending_timeout_s: float = 300,
             on_tick: Callable[[JobInfo], None] | None = None) -> JobInfo:
        """Poll until the job ends; a job PENDING too long is stopped and reported."""
        start = time.monotonic()
        while True:
            info = self.status(job_id)
            if on_tick:
                on_tick(info)
            if info.status in TERMINAL:
                return info
            waited = time.monotonic() - start
            if info.status == "PENDING" and waited > pending_timeout_s:
                self.stop(job_id)
                raise PlatformError(
                    f"job {job_id} stayed PENDING for {pending_timeout_s:.0f}s and was stopped: "
                    "its runtime environment probably failed to set up",
                    hint=f"see `platformctl jobs logs {job_id}`")
            if waited > timeout_s:
                raise PlatformError(f"job {job_id} still {info.status} after {timeout_s:.0f}s")
            # A status call is one local HTTP request: polling often costs little and a small
            # job's end is seen at once (0.5 s was a tenth of a 4k-row run, issue 15).
            time.sleep(0.1 if waited < 60 else 0.5)


class Submission(BaseModel):
    job_id: str
    run_id: str
    entrypoint: str
    dashboard_url: str


def build_runtime_env(settings: Settings, working_dir: Path, job_id: str) -> dict[str, Any]:
    """The runtime_env of a pipeline job: the local code and the environment it needs.

    Everything here is shown on the Ray dashboard: `Settings.job_env` leaves out passwords
    and the allow-lists, which the job reads from the cluster's own configuration.
    """
    excludes = list(EXCLUDES)
    try:
        excludes.append(str(settings.home.relative_to(working_dir)))
    except ValueError:
        pass
    return {
        "working_dir": str(working_dir),
        "py_modules": [str(package_dir("mlplatform")), str(package_dir("jobs"))],
        "excludes": excludes,
        "env_vars": {**settings.job_env(), "PLATFORM_JOB_ID": job_id},
    }


def job_metadata(**values: str) -> dict[str, str]:
    """A job's metadata, shown on the dashboard: never a credential, whatever a value holds."""
    return {key: redact_url(value) for key, value in values.items()}


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _this_machine() -> tuple[set[str], set[str]]:
    """(host names, IP addresses) of this machine, from its interfaces: no DNS, no network."""
    import socket

    import psutil

    names = {socket.gethostname().lower(), socket.getfqdn().lower()} | _LOOPBACK_NAMES
    addresses = {a.address.split("%", 1)[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family in (socket.AF_INET, socket.AF_INET6)}
    return names, addresses


def cluster_is_local(settings: Settings) -> bool:
    """Whether the configured cluster's nodes share this machine's disk: its address is the
    local cluster `cluster up` started (PLATFORM_HOME/cluster.json), or its host is a loopback
    address, this machine's host name, or an address of one of its interfaces. Decided from
    the address alone, before connecting: any other host is a cluster whose nodes cannot read
    this machine's files (a name is not resolved, so an alias of this machine counts as remote)."""
    import ipaddress
    from urllib.parse import urlsplit

    from mlplatform.runtime.local import read_state

    address = settings.ray_address
    if not address:
        return True  # no cluster configured: the client fails on its own, saying so
    state = read_state(settings)
    if state is not None and address.rstrip("/") in (state.dashboard_url.rstrip("/"), state.gcs_address):
        return True
    host = (urlsplit(address if "://" in address else f"http://{address}").hostname or "").lower()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        names, _ = _this_machine()
        return host in names
    if ip.is_loopback or ip.is_unspecified:
        return True
    _, addresses = _this_machine()
    return str(ip) in addresses


def _node_local(key: str, value: str) -> str | None:
    """Why `value` of setting `key` is on this machine's disk only, or None."""
    if value.startswith(("sqlite:", "file:")):
        return f"{value.split(':', 1)[0]}: a file on this machine"
    if value.startswith("unix:"):
        return "a Unix socket on this machine"
    if "://" not in value and key in ("storage_uri", "mlflow_tracking_uri"):
        return "a local path"
    return None


_SUGGEST = {"metadata_url": "postgresql+psycopg://USER@HOST:5432/DB",
            "mlflow_tracking_uri": "postgresql+psycopg://USER@HOST:5432/DB or http://MLFLOW-SERVER",
            "storage_uri": "s3://BUCKET/PREFIX", "online_store_url": "redis://HOST:6379/0"}


def check_stores_reach_cluster(settings: Settings) -> None:
    """Before submitting to a cluster that is not this machine's: refuse every store setting
    that names this machine's disk (a local path, sqlite:, file:), naming each setting to
    change. The job would otherwise run against files of the same name on a cluster node, and
    it and this CLI would read and write different databases."""
    if cluster_is_local(settings):
        return
    problems = [(key, why) for key in STORE_URL_KEYS
                if (why := _node_local(key, str(getattr(settings, key)))) is not None]
    if not problems:
        return
    lines = "; ".join(f"{setting_name(key)} = {redact_url(str(getattr(settings, key)))} is {why}, "
                      f"e.g. {_SUGGEST[key]}" for key, why in problems)
    raise PlatformError(
        f"the cluster at {settings.ray_address} is not this machine's and its nodes cannot read "
        f"this machine's disk: {lines}",
        hint="set those settings (environment or platform.yaml) to stores every node reaches; "
             "`platformctl config check` tests them")


def submit_pipeline(settings: Settings, spec_file: Path, *, run_id: str, pipeline: str,
                    steps: list[str] | None = None, working_dir: Path | None = None,
                    cause: str = "manual", cause_detail: str = "", retrain: bool = False,
                    refeaturize: bool = False, base_dir: Path | None = None) -> Submission:
    """Submit `python -m jobs.pipeline` for a spec as a Ray Job running the local code.

    The working directory and the local `mlplatform` and `jobs` packages travel in the
    runtime_env, so the cluster runs exactly the code on this machine. The spec's
    relative paths resolve against its folder here (`--base-dir`), as `spec check` did, or
    against `base_dir` (a trigger watcher's upload of the spec keeps the original folder).
    `cause` (manual, or the trigger that fired) and `cause_detail` become run properties;
    `retrain` retrains on the pipeline's validated data instead of ingesting; `refeaturize`
    computes that data's features again first (a feature view with a new version).
    """
    check_stores_reach_cluster(settings)  # from the address alone, before connecting
    client = JobsClient(settings)
    working_dir = (working_dir or Path.cwd()).resolve()
    spec_file = spec_file.resolve()
    try:
        spec_arg = str(spec_file.relative_to(working_dir))
    except ValueError:
        raise InputError(
            f"spec {spec_file} is outside the working directory {working_dir}: the job "
            "reads the uploaded copy; run platformctl from a folder that contains it"
        ) from None
    q = shlex.quote
    base = (base_dir or spec_file.parent).resolve()
    entrypoint = (f"python -m jobs.pipeline --spec {q(spec_arg)} --base-dir {q(str(base))} "
                  f"--run-id {q(check_run_id(run_id))} --cause {q(cause)}")
    if cause_detail:
        entrypoint += f" --cause-detail {q(cause_detail[:500])}"
    if retrain:
        entrypoint += " --retrain" + (" --refeaturize" if refeaturize else "")
    for s in steps or []:
        entrypoint += f" --step {q(s)}"
    job_id = f"{run_id}-{int(time.time()) % 100000:05d}"
    runtime_env = build_runtime_env(settings, working_dir, job_id)
    client.submit(entrypoint, runtime_env, job_id, job_metadata(pipeline=pipeline, run_id=run_id,
                                                                  cause=cause))
    return Submission(job_id=job_id, run_id=run_id, entrypoint=entrypoint,
                      dashboard_url=client.address)
