"""The warm driver server: imports once, then forks one child per pipeline job driver.

    python -m mlplatform.runtime.warm_server KEY [GCS_ADDRESS]

Started by `warm_driver.start_server`, detached; see `warm_driver` for why and the protocol.
One thread: a selector over the listening socket and one connection per running child. The
loop reaps children (their exit status goes back to their driver), kills a child whose driver's
connection closed, and ends after `IDLE_S` without a run, when its socket file is removed or
replaced, or when the cluster's GCS stops answering.
"""

from __future__ import annotations

import atexit
import fcntl
import gc
import importlib
import io
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from mlplatform.runtime.warm_driver import CHILD_FLAG, IDLE_S, WARM_MODULES, job_path, socket_path

_GCS_CHECK_S = 5.0
# The server's import path less its own directory and PYTHONPATH (set in `main`): a child puts
# its driver's directory and PYTHONPATH in front, as `python -m` in that directory would.
_BASE_PATH: list[str] = []


def warm_up() -> None:
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an optional package missing: the child imports what it needs
            print(f"warm-up: {name} not imported ({type(exc).__name__}: {exc})", flush=True)
    from mlplatform.pipeline import step_graph

    step_graph()  # every step module
    # Objects that exist now are never collected again: the children's collections do not
    # touch (and so copy) the server's pages.
    gc.collect()
    gc.freeze()


def _gcs_answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    buf = bytearray(data)
    while b"\n" not in buf:
        more = conn.recv(1 << 16)
        if not more:
            raise ConnectionError("the driver closed its connection mid-request")
        buf.extend(more)
    return json.loads(bytes(buf).partition(b"\n")[0]), list(fds)


def _run_child(request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: become the driver's process (its stdio, directory, environment,
    import path) and run its module as `python -m` would."""
    os.setsid()  # its own group: a stop reaches it and everything it starts
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    # Fresh streams on the driver's descriptors, written through, as PYTHONUNBUFFERED gives a driver.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    env: dict[str, str] = request["env"]
    cwd: str = request["cwd"]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    os.environ[CHILD_FLAG] = "1"
    sys.path[:] = [cwd, *job_path(env, cwd), *_BASE_PATH]
    import numpy as np

    np.random.seed()  # the legacy global generator was copied from the server: draw a fresh seed
    sys.argv = [request["module"], *request["argv"]]
    code = 0
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - as an interpreter would: the traceback, status 1
        traceback.print_exc()
        code = 1
    # The interpreter's own exit would unwind the server's frames too: do what it does (wait
    # for the run's non-daemon threads, then the atexit functions: Ray's disconnect, the
    # metrics' flush), then leave.
    shutdown_threads = getattr(threading, "_shutdown", None)
    if shutdown_threads is not None:
        shutdown_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


class Server:
    def __init__(self, key: str, gcs: str):
        self.path = socket_path(key)
        self.gcs = gcs
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A child's exit wakes the loop at once (SIGCHLD through the wakeup fd), so its driver
        # hears the status without waiting for the next tick.
        self.wake_r, self.wake_w = socket.socketpair()
        for end in (self.wake_r, self.wake_w):
            end.setblocking(False)

    def bind(self) -> None:
        if self.path.exists():
            self.path.unlink()
        self.listener.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.listener.listen(16)
        self.inode = self.path.stat().st_ino
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def _fork(self, conn: socket.socket) -> None:
        try:
            request, fds = _recv_request(conn)
        except (OSError, ValueError, ConnectionError) as exc:
            print(f"a request was dropped: {exc}", flush=True)
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # the server's: before its socket is closed here
                self.sel.close()
                self.listener.close()
                self.wake_r.close()
                self.wake_w.close()
                for other in self.children.values():
                    other.close()
                conn.close()
                code = _run_child(request, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        except OSError:
            pass  # the driver is gone already: the next pass of the loop kills the child
        self.children[pid] = conn
        self.sel.register(conn, selectors.EVENT_READ, pid)

    def _drop(self, pid: int) -> None:
        conn = self.children.pop(pid)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass  # unregistered when its driver's connection closed
        conn.close()

    def _reap(self) -> None:
        for pid in list(self.children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                try:
                    self.children[pid].sendall(
                        json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                self._drop(pid)

    def _still_ours(self) -> bool:
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False

    def serve(self) -> None:
        idle_since = last_gcs = time.monotonic()
        while True:
            for selected, _ in self.sel.select(timeout=0.25):
                if selected.fileobj is self.listener:
                    conn, _ = self.listener.accept()
                    conn.settimeout(5)  # a request is one message; a driver that stalls is dropped
                    self._fork(conn)
                    continue
                if selected.data == "wake":
                    try:
                        while self.wake_r.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                pid = selected.data
                try:
                    gone = not selected.fileobj.recv(1)  # type: ignore[union-attr]
                except OSError:
                    gone = True
                if gone and pid in self.children:  # the driver died (killed, or its node lost)
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.sel.unregister(self.children[pid])
            self._reap()
            now = time.monotonic()
            if self.children:
                idle_since = now
            elif now - idle_since > IDLE_S or not self._still_ours():
                return
            if self.gcs and now - last_gcs > _GCS_CHECK_S:
                last_gcs = now
                if not _gcs_answers(self.gcs):
                    return

    def close(self) -> None:
        for pid in list(self.children):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._still_ours():
            self.path.unlink()


def main(argv: list[str]) -> int:
    key, gcs = argv[0], (argv[1] if len(argv) > 1 else "")
    path = socket_path(key)
    lock = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server of this key is starting or serving
    started = time.monotonic()
    own = set(os.environ.get("PYTHONPATH", "").split(os.pathsep))
    _BASE_PATH[:] = [p for p in sys.path[1:] if p and p not in own]
    warm_up()
    server = Server(key, gcs)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.bind()
    print(f"serving {path} (warm in {time.monotonic() - started:.1f}s, pid {os.getpid()})", flush=True)
    try:
        server.serve()
    finally:
        server.close()
        path.with_suffix(".lock").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
