"""`cluster status` warns about the cluster's sockets that other machines can reach: real
sockets in child processes for the detection, and the session's real cluster for the command
(checked against psutil's own view of the same processes)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from mlplatform.runtime.local import cluster_processes
from mlplatform.runtime.status import exposed_listeners
from tests.conftest import cli

_LISTEN = """
import socket, sys
if len(sys.argv) > 2:  # titled as Ray titles a worker process
    import ray._raylet
    ray._raylet.setproctitle(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def listener() -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(host: str, *title: str) -> tuple[psutil.Process, int]:
        proc = subprocess.Popen([sys.executable, "-c", _LISTEN, host, *title], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return psutil.Process(proc.pid), int(proc.stdout.readline())

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::", 0))
        return True
    except OSError:
        return False


def test_a_socket_on_every_interface_is_reported_loopback_is_not(listener) -> None:  # noqa: ANN001
    wide, wide_port = listener("0.0.0.0")
    local, _ = listener("127.0.0.1")
    found = exposed_listeners([wide, local])
    assert [(e.pid, e.address, e.port) for e in found] == [(wide.pid, "0.0.0.0", wide_port)]
    assert found[0].process == wide.name() and "127.0.0.1" in found[0].fix


def test_a_ray_actor_is_named_by_its_class_not_the_call_it_is_in(listener) -> None:  # noqa: ANN001
    busy, _ = listener("0.0.0.0", "ray::ServeController.listen_for_change")
    idle, _ = listener("0.0.0.0", "ray::ServeController")
    task, _ = listener("0.0.0.0", "ray::IDLE")
    names = {e.pid: e.process for e in exposed_listeners([busy, idle, task])}
    assert names == {busy.pid: "ray::ServeController", idle.pid: "ray::ServeController",
                     task.pid: "ray::IDLE"}


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 on this machine")
def test_the_ipv6_any_address_is_reported(listener) -> None:  # noqa: ANN001
    wide, port = listener("::")
    local, _ = listener("::1")
    assert [(e.address, e.port) for e in exposed_listeners([wide, local])] == [("::", port)]


def test_a_process_gone_meanwhile_is_skipped(listener) -> None:  # noqa: ANN001
    proc, _ = listener("0.0.0.0")
    proc.kill()
    proc.wait(timeout=10)
    assert exposed_listeners([proc]) == []


@pytest.mark.ray
def test_cluster_status_lists_what_listens_beyond_loopback(ray_cluster, capsys) -> None:  # noqa: ANN001
    shown = cli("cluster", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    exposed = json.loads(shown.stdout)["exposed"]
    assert exposed is not None  # the session cluster is this machine's `cluster up`
    # The independent truth: psutil's view of every listening socket of the cluster's processes.
    port = int(ray_cluster["gcs_address"].rsplit(":", 1)[1])
    truth = set()
    for proc in cluster_processes(ray_cluster["temp_dir"], port):
        try:
            for c in proc.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr.ip not in ("127.0.0.1", "::1",
                                                                         "::ffff:127.0.0.1"):
                    truth.add((proc.pid, c.laddr.ip, c.laddr.port))
        except psutil.NoSuchProcess:
            continue
    reported = {(e["pid"], e["address"], e["port"]) for e in exposed}
    # Workers come and go between the two looks: compare the processes alive in both.
    alive = {pid for pid, _, _ in truth | reported if psutil.pid_exists(pid)}
    assert {t for t in reported if t[0] in alive} == {t for t in truth if t[0] in alive}
    with capsys.disabled():
        print(f"\ncluster status: {len(exposed)} socket(s) beyond loopback: "
              + ", ".join(f"{e['process']} {e['address']}:{e['port']}" for e in exposed))
    # A socket can open or close between the looks (the session's other tests keep Serve busy;
    # CI saw a Serve controller's socket there before and after the text but not during it): the
    # text must show each one seen both before and after it, in one of three tries.
    missing: list[str] = []
    for _ in range(3):
        text = cli("cluster", "status")
        assert text.returncode == 0
        after = {(e["pid"], e["address"], e["port"])
                 for e in json.loads(cli("cluster", "status", "--json").stdout)["exposed"]}
        lines = [f"{e['process']} (pid {e['pid']}) listens on {e['address']}:{e['port']}"
                 for e in exposed if (e["pid"], e["address"], e["port"]) in after]
        missing = [line for line in lines if line not in text.stdout]
        if not missing:
            break
    assert missing == [], text.stdout
