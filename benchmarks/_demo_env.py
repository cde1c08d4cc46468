"""The demo pipeline on a cluster of its own, for the benchmarks that run the platform end to end
(rollout.py, soak.py).

- `start(work, ...)`: a throwaway PLATFORM_HOME under `work`, this process's environment set for it
  (the cluster, its jobs and the pipeline runs inherit it), a local Ray head on free ports
  (`mlplatform.runtime.local.up`, token auth, its own temp dir).
- `run_day(work, day, ...)`: one pipeline run of the demo spec (written by `write_config`) on a
  fresh synthetic day, in a child process: its driver, imports and threads stay out of the
  benchmark's process, which times the clients' requests.
- `stop(work, cluster)`: that cluster, named by its temp dir, and the work dir; nothing else. Also
  after a failed or interrupted `up` (the temp dir is derived from PLATFORM_HOME).

Run as a script, this module is that child: `python _demo_env.py --pipeline-day N --work DIR`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import _harness as h
except ImportError:  # imported as benchmarks._demo_env
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
ROOT, LOG_DIR = HERE.parent, HERE / "results" / "logs"
NAME = "demo"
JsonDict = dict[str, Any]


# --- the spec --------------------------------------------------------------------------------


def canary_plan(interval_s: int, failure_limit: int = 2) -> JsonDict:
    """A canary rollout section: the integration test's (tests/integration/test_rollout.py)."""
    return {"strategy": "canary", "steps": [10, 50], "interval": f"{interval_s}s",
            "failure_limit": failure_limit, "step_timeout": "2m",
            "guardrails": {"success_rate": {"min_requests": 10},
                           # Two cores shared with the clients and the pipeline: latency judged loosely.
                           "latency": {"min_requests": 10, "max_ratio": 4, "slack_ms": 100}}}


def demo_spec(rollout: JsonDict, *, evaluation: JsonDict | None = None, keep_previous: str | None = None
              ) -> JsonDict:
    """demo.yaml with the test's model (no search, max_iter 60), `rollout` as its rollout plan and
    `evaluation` updates (e.g. an opened gate). Read under this process's PLATFORM_HOME (`start`
    sets it): the source path names it."""
    from mlplatform.spec_loader import load_spec

    raw = load_spec(ROOT / "jobs" / "examples" / "demo.yaml").model_dump(mode="json", by_alias=True,
                                                                          exclude_none=True)
    raw["model"].update(search=None, params={"max_iter": 60})
    raw["evaluation"].update(evaluation or {})
    raw["deploy"]["rollout"] = rollout
    if keep_previous:
        raw["deploy"]["keep_previous"] = keep_previous
    return raw


def write_config(work: Path, spec: JsonDict, rows_per_day: int) -> None:
    """What the pipeline-day children read."""
    (work / "config.json").write_text(json.dumps({"spec": spec, "rows_per_day": rows_per_day}))


# --- the cluster -----------------------------------------------------------------------------


def isolate(work: Path, *, fastpath: str, estimator_modules: str = "sklearn",
            extra_env: dict[str, str] | None = None) -> Any:
    """Point this process's environment at a throwaway PLATFORM_HOME under `work` (free Serve
    port, token auth, no Ray or platform settings of the caller's shell); returns its settings."""
    from mlplatform.runtime.local import free_port
    from mlplatform.settings import load_settings

    for key in [k for k in os.environ if k.startswith(("PLATFORM_", "RAY_")) and "RAY_SERVE_" not in k]:
        os.environ.pop(key)
    home = work / "home"
    os.environ.update(PLATFORM_HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
                      RAY_AUTH_TOKEN_PATH=str(home / "ray" / "auth_token"),
                      PLATFORM_SERVE_PORT=str(free_port()), PLATFORM_SERVE_FASTPATH=fastpath,
                      PLATFORM_ESTIMATOR_MODULES=estimator_modules)
    os.environ.update(extra_env or {})
    return load_settings()


def start(work: Path, *, fastpath: str, estimator_modules: str = "sklearn", num_cpus: int = 2,
          object_store_mb: int = 300, extra_env: dict[str, str] | None = None) -> tuple[Any, JsonDict]:
    """Isolate, start the cluster; returns the settings that reach it (Serve's REST API through the
    dashboard, as a CLI finds it from the cluster state) and a record of the cluster."""
    from mlplatform.runtime.local import free_port, up

    settings = isolate(work, fastpath=fastpath, estimator_modules=estimator_modules, extra_env=extra_env)
    print(f"cluster up (num_cpus={num_cpus}), PLATFORM_HOME={settings.home}", flush=True)
    began = time.monotonic()
    state = up(settings, num_cpus=num_cpus, port=free_port(), dashboard_port=free_port(),
               object_store_mb=object_store_mb).state
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    cluster = {"seconds": round(time.monotonic() - began, 1), "temp_dir": state.temp_dir,
               "gcs_address": state.gcs_address, "fastpath": fastpath}
    return settings.model_copy(update={"ray_address": state.dashboard_url, "ray_auth_mode": "token"}), cluster


def cluster_processes(cluster: JsonDict) -> list[Any]:
    """The cluster's processes (named by its temp dir or its GCS port), with their descendants."""
    from mlplatform.runtime.local import cluster_processes as found

    return found(cluster["temp_dir"], int(cluster["gcs_address"].rsplit(":", 1)[1]))


def stop(work: Path, cluster: JsonDict | None) -> None:
    """Stop this run's cluster (named by its temp dir) and remove its files; nothing else."""
    from mlplatform.runtime import local

    home = work / "home"
    if os.environ.get("PLATFORM_HOME") != str(home):
        return  # never isolated: no cluster of ours
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - the cluster goes down next anyway
        pass
    from mlplatform.settings import load_settings

    local.down(load_settings())
    # An `up` interrupted before it wrote cluster.json: its temp dir is derived from the home.
    temp_dir = (cluster or {}).get("temp_dir") or local._temp_dir(home)
    local._terminate(local.cluster_processes(temp_dir))
    shutil.rmtree(temp_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)


def ray_driver(settings: Any) -> None:
    """This process as a Ray driver (to read actors), without the actors' logs."""
    import ray

    from mlplatform.runtime.connect import gcs_address
    from mlplatform.settings import apply_ray_auth_env

    apply_ray_auth_env(settings)
    ray.init(address=gcs_address(settings), log_to_driver=False, logging_level="WARNING")


def sigterm_as_interrupt() -> None:
    """SIGTERM (e.g. from `timeout`) ends the benchmark like Ctrl-C: its `finally` stops the cluster."""
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)


# --- pipeline runs, one synthetic day each, in a child process --------------------------------


def pipeline_day(work: Path, day: int, estimator: str | None) -> None:
    """The child's side: write day `day`, run the pipeline, leave its report in day<N>.json."""
    from mlplatform.data.synthetic import DemoDataConfig, write_day
    from mlplatform.pipeline import run_pipeline
    from mlplatform.settings import load_settings
    from mlplatform.spec import PipelineSpec

    conf = json.loads((work / "config.json").read_text())
    raw = conf["spec"]
    if estimator:
        raw["model"]["estimator"] = estimator
    spec = PipelineSpec.model_validate(raw)
    settings = load_settings()
    rows = conf["rows_per_day"]
    write_day(settings.home / "demo" / "data",
              DemoDataConfig(days=3, rows_per_day=rows, entities=max(50, rows * 4 // 15)), day)
    began = time.perf_counter()
    report = run_pipeline(spec, settings, log=print)
    (work / f"day{day}.json").write_text(json.dumps({
        "day": day, "estimator": spec.model.estimator, "status": report.status, "message": report.message,
        "seconds": round(time.perf_counter() - began, 1),
        "steps": {s.step: [s.status, round(s.duration_s or 0, 1), s.message[:300]] for s in report.steps}}))


class DayRun:
    """One pipeline-day child, started now; `wait()` returns its report (never raises for a failed
    run: `rc`, `error` and the log's tail say what happened) with the driver's peak RSS."""

    def __init__(self, work: Path, day: int, log: Path, estimator: str | None = None):
        self.work, self.day, self.log = work, day, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--pipeline-day", str(day), "--work", str(work),
             *(["--estimator", estimator] if estimator else [])],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    def wait(self) -> JsonDict:
        try:
            # wait4 rather than wait(): it returns the child's own resource usage (peak RSS).
            _, status, usage = os.wait4(self.proc.pid, 0)
        finally:
            self._log.close()
        self.proc.returncode = rc = os.waitstatus_to_exitcode(status)
        out = self.work / f"day{self.day}.json"
        report: JsonDict = (json.loads(out.read_text()) if out.exists()
                            else {"day": self.day, "status": "NO_REPORT"})
        report.update(rc=rc, driver_peak_rss_mb=round(usage.ru_maxrss / 1024, 1), log=str(self.log))
        if rc != 0 or not out.exists():
            report["error"] = f"exit {rc}: {h.tail(self.log, 20)}"
        return report

    def kill(self) -> None:
        """Stop the child (an interrupted benchmark): its Ray workers go with the cluster."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- time and traffic ------------------------------------------------------------------------


def epoch(at: dt.datetime) -> float:
    """The store's naive-UTC datetimes as Unix time (Replay stamps failures with time.time())."""
    return at.replace(tzinfo=dt.UTC).timestamp() if at.tzinfo is None else at.timestamp()


def naive_utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None)


def wait_settled(store: Any, rollout_id: str, timeout_s: float) -> tuple[Any, float]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = store.get(rollout_id)
        if state is not None and state.settled:
            return state, time.time()
        time.sleep(0.25)
    raise RuntimeError(f"rollout {rollout_id} not settled in {timeout_s:.0f}s: {store.get(rollout_id)}")


def replay_summary(stats: Any, began: float, ended: float) -> JsonDict:
    return {"seconds": round(ended - began, 1), "sent": stats.sent, "failed": stats.failed,
            "rate_per_s": round(stats.sent / (ended - began), 1) if ended > began else None,
            "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
            "versions": dict(sorted(stats.versions.items())), "feedback": stats.feedback}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="One pipeline run of a benchmark's demo spec (a child process).")
    p.add_argument("--pipeline-day", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--estimator", help="another estimator for this run (e.g. a faulty one)")
    args = p.parse_args(argv)
    pipeline_day(args.work, args.pipeline_day, args.estimator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
