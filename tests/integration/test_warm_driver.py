"""A pipeline job's driver hands its run to the node's warm process (mlplatform.runtime.warm_driver)
and stays the process Ray knows: the run's output is the driver's, its exit status and a stop
are relayed, a killed driver takes its run with it, and the job's own code is imported afresh.

The "job" here is a module in the test's folder run through the real client and server
processes, without Ray: what is checked is the process contract that a Ray Job relies on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlplatform.runtime.local import _gone  # exited: no such process, or an unreaped zombie
from mlplatform.runtime.warm_driver import socket_path, warm_key

ROOT = Path(__file__).resolve().parents[2]

# A driver's __main__, as jobs/pipeline.py's: through the warm process, else "COLD" (exit 99).
CLIENT = """
import sys
from mlplatform.runtime.warm_driver import exit_like, run_warm
code = run_warm("tmod", sys.argv[1:])
if code is None:
    print("COLD", flush=True)
    sys.exit(99)
exit_like(code)
"""

JOB = """
import os, sys, time
print("version", VERSION, "argv", sys.argv[1:], "cwd", os.getcwd(),
      "mark", os.environ.get("PLATFORM_JOB_MARK"), "child", os.environ.get("_PLATFORM_WARM_CHILD"),
      flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1] == "graceful":  # a run that ends on a stop by itself
    import signal
    def stopped(signum, frame):
        open("stopped", "w").write(str(signum))
        sys.exit(143)
    signal.signal(signal.SIGTERM, stopped)
if sys.argv[1] == "oom":  # killed outright, as by the kernel's OOM killer
    os.kill(os.getpid(), 9)
if sys.argv[1] == "interrupt":  # a SIGINT stop is KeyboardInterrupt, as in any interpreter
    open("child.tmp", "w").write(str(os.getpid())); os.replace("child.tmp", "child.pid")  # whole, at once
    try:
        time.sleep(120)
    except KeyboardInterrupt:
        open("stopped", "w").write("interrupted")
        sys.exit(130)
if sys.argv[1] in ("sleep", "graceful"):
    open("child.tmp", "w").write(str(os.getpid())); os.replace("child.tmp", "child.pid")  # whole, at once
    time.sleep(120)
sys.exit(int(sys.argv[2]))
"""


def _job(folder: Path, version: int) -> None:
    (folder / "tmod.py").write_text(f"VERSION = {version}\n{JOB}")


def _gcs() -> str:
    """A stand-in for the cluster's GCS port, listening while this test module runs: a server
    that finds nothing listening there ends (`test_a_server_ends_when_its_cluster_is_gone`), so
    none outlives the tests."""
    global _GCS
    if _GCS is None:
        _GCS = socket.create_server(("127.0.0.1", 0))
    return f"127.0.0.1:{_GCS.getsockname()[1]}"


_GCS: socket.socket | None = None


def _env(folder: Path, **extra: str) -> dict[str, str]:
    # TEST_WARM_KEY: this test's own server, whatever else runs on the machine.
    # PYTEST_CURRENT_TEST changes from test to test; a real driver's environment differs from
    # run to run only in what the key leaves out (the platform's settings, Ray's job config).
    base = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    return {**base, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(folder)]),
            "TEST_WARM_KEY": str(folder), "RAY_ADDRESS": _gcs(), **extra}


def _client(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLIENT, *args], cwd=folder, env=env or _env(folder),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The job's folder, with a warm server for it: the first driver runs cold and starts none
    (one run alone does not pay for a server); the second, soon after, runs cold and starts it."""
    folder = tmp_path_factory.mktemp("warm-job")
    _job(folder, 1)
    sock = socket_path(warm_key(_env(folder), str(folder)))

    def servers() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if "mlplatform.runtime.warm_server" in
                " ".join(p.info["cmdline"] or []) and sock.stem in " ".join(p.info["cmdline"] or [])]

    for started in (False, True):
        cold = _client(folder, "print", "0")
        out, err = cold.communicate(timeout=60)
        assert cold.returncode == 99 and out.strip() == "COLD", out + err
        # The server is a detached grandchild: its command line is its own only after its
        # execve, which a loaded machine may run after the driver has exited.
        if started:
            _wait_for(lambda: bool(servers()), 30, "the second cold driver's server")
        else:
            time.sleep(2)
            assert not servers(), "one cold run started a server"
    _wait_for(sock.exists, 120, "the warm server's socket")
    yield folder
    server = servers()
    sock.unlink()  # a removed socket ends its server
    gone, alive = psutil.wait_procs(server, timeout=10)
    assert server and not alive, "the server outlived its socket"


def _started(folder: Path, mode: str) -> tuple[subprocess.Popen[str], psutil.Process]:
    """A driver whose run (`mode`: sleep, graceful, interrupt) has started: both processes."""
    (folder / "child.pid").unlink(missing_ok=True)
    (folder / "stopped").unlink(missing_ok=True)
    proc = _client(folder, mode, "0")
    _wait_for((folder / "child.pid").exists, 30, "the run to start")
    return proc, psutil.Process(int((folder / "child.pid").read_text()))


def _ended(child: psutil.Process) -> None:
    _wait_for(lambda: _gone(child), 10, "the run to end")


def test_the_run_writes_to_the_drivers_output_and_its_status_is_the_drivers(warm: Path) -> None:
    proc = _client(warm, "print", "3", env=_env(warm, PLATFORM_JOB_MARK="m1"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert f"version 1 argv ['print', '3'] cwd {warm} mark m1 child 1" in out
    assert "to stderr" in err and "COLD" not in out


def test_the_jobs_own_code_is_imported_afresh(warm: Path) -> None:
    _job(warm, 2)
    proc = _client(warm, "print", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "version 2 " in out, out + err
    _job(warm, 1)


def test_a_stop_reaches_the_run_and_the_driver_ends_as_it_did(warm: Path) -> None:
    proc, child = _started(warm, "graceful")
    assert child.pid != proc.pid  # the run is the warm process's child
    proc.send_signal(signal.SIGTERM)  # what Ray's `stop_job` sends the driver
    proc.communicate(timeout=30)
    assert (warm / "stopped").read_text() == str(int(signal.SIGTERM))  # the run saw the stop itself
    assert proc.returncode == 143


def test_a_run_killed_by_a_signal_ends_its_driver_by_that_signal(warm: Path) -> None:
    proc, child = _started(warm, "sleep")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # as Ray would have seen the driver end
    _ended(child)


def test_a_run_killed_outright_ends_its_driver_the_same_way(warm: Path) -> None:
    proc = _client(warm, "oom", "0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out + err
    assert "Traceback" not in err


def test_a_sigint_stop_is_a_keyboard_interrupt_in_the_run(warm: Path) -> None:
    proc, _ = _started(warm, "interrupt")
    proc.send_signal(signal.SIGINT)  # RAY_JOB_STOP_SIGNAL=SIGINT
    proc.communicate(timeout=30)
    assert (warm / "stopped").read_text() == "interrupted"
    assert proc.returncode == 130


def test_a_killed_driver_takes_its_run_with_it(warm: Path) -> None:
    proc, child = _started(warm, "sleep")
    proc.kill()  # SIGKILL: a driver lost with its node, or killed after Ray's stop timeout
    proc.communicate(timeout=30)
    _ended(child)


def test_turned_off_the_driver_runs_its_job_itself(warm: Path) -> None:
    proc = _client(warm, "print", "0", env=_env(warm, PLATFORM_WARM_DRIVER="off"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 99 and out.strip() == "COLD"


def test_a_server_ends_when_its_cluster_is_gone(tmp_path: Path) -> None:
    from mlplatform.runtime import warm_server

    sock_key = "t" + str(os.getpid()) + tmp_path.name[-8:]
    # A GCS address nothing listens on: the cluster was stopped.
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform.runtime.warm_server", sock_key, "127.0.0.1:9"],
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=120 + warm_server._GCS_CHECK_S)
    assert proc.returncode == 0 and "serving" in out, out
    assert not socket_path(sock_key).exists()


# -- through Ray Jobs, on the session's cluster ---------------------------------------------------

SLOW = '''
import os, time
from pathlib import Path

def activity(df):
    """The demo's columns unchanged; records which process ran it, and waits while asked to."""
    home = Path(os.environ["PLATFORM_HOME"]) / "warm-test"
    home.mkdir(exist_ok=True)
    (home / f"{os.getpid()}.ran").write_text(os.environ.get("_PLATFORM_WARM_CHILD", "cold"))
    while (home / "hold").exists():
        time.sleep(0.2)
    df["engagement_score"] = 0.0
    df["spend_per_session"] = 0.0
    return df
'''


def _server_ready(gcs_address: str) -> bool:
    port = ":" + gcs_address.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if len(cmd) >= 5 and cmd[2] == "mlplatform.runtime.warm_server" and cmd[4].endswith(port):
            if socket_path(cmd[3]).exists():
                return True
    return False


@pytest.mark.ray
def test_a_pipeline_job_runs_in_the_warm_process_and_stops_as_a_ray_job(
        ray_cluster: dict[str, str], session_home: Path, tmp_path: Path) -> None:
    import json

    from mlplatform.data.synthetic import DemoDataConfig, write_day
    from tests.conftest import ROOT as REPO
    from tests.conftest import cli, platformctl

    data, folder = tmp_path / "data", tmp_path / "spec"
    (folder / "tests").mkdir(parents=True)  # the job's own code, uploaded with its folder
    (folder / "tests" / "__init__.py").write_text("")
    (folder / "tests" / "warm_slow.py").write_text(SLOW)
    spec = folder / "pipeline.yaml"
    spec.write_text((REPO / "jobs/examples/demo.yaml").read_text()
                    .replace("name: demo\n", "name: warm-job\n")
                    .replace("${PLATFORM_HOME}/demo/data", str(data))
                    .replace("jobs.examples.demo_features.activity", "tests.warm_slow.activity")
                    + "\nexecution: {placement: local}\n")
    steps = [a for s in ("ingest", "validate", "featurize") for a in ("--step", s)]
    marks = session_home / "warm-test"
    day = 0

    def submit(wait: bool = True) -> dict[str, str]:
        nonlocal day
        day += 1
        write_day(data, DemoDataConfig(days=6, rows_per_day=600, seed=5), day)
        out = platformctl("submit", str(spec), *steps, "--json", *(["--wait"] if wait else []), cwd=folder)
        assert out.returncode == 0, out.stdout + out.stderr
        return dict(json.loads(out.stdout))

    # Cold drivers until this cluster's server is up (other tests' runs may have started it).
    for _ in range(2):
        if _server_ready(ray_cluster["gcs_address"]):
            break
        submit()
    _wait_for(lambda: _server_ready(ray_cluster["gcs_address"]), 180, "the warm driver server")

    shutil.rmtree(marks, ignore_errors=True)
    warm = submit()
    ran = {p.stem: p.read_text() for p in marks.glob("*.ran")}
    assert list(ran.values()) == ["1"], ran  # the transformation ran in a warm child
    logs = cli("jobs", "logs", warm["job_id"])
    assert "[featurize] complete" in logs.stdout and "in the node's warm driver process" in logs.stdout
    shown = json.loads(cli("runs", "show", warm["run_id"], "--json").stdout)
    assert shown["status"] == "SUCCEEDED"

    (marks / "hold").write_text("")
    try:
        held = submit(wait=False)
        try:
            _wait_for(lambda: len(list(marks.glob("*.ran"))) == 2, 120, "the held run's transformation")
        except AssertionError:
            raise AssertionError(cli("jobs", "logs", held["job_id"]).stdout[-3000:]) from None
        child = psutil.Process(int(next(p.stem for p in marks.glob("*.ran") if p.stem not in ran)))
        stopped = cli("jobs", "stop", held["job_id"])
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        _wait_for(lambda: _gone(child), 30, "the stopped run's process to end")

        def job_status() -> str:
            return str(json.loads(cli("jobs", "status", held["job_id"], "--json").stdout)["status"])

        _wait_for(lambda: job_status() in ("STOPPED", "FAILED", "SUCCEEDED"), 30, "the job to end")
        assert job_status() == "STOPPED"
    finally:
        (marks / "hold").unlink(missing_ok=True)
