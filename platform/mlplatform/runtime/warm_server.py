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
import ctypes
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
import struct
import sys
import threading
import time
import traceback
from typing import Any

from mlplatform.runtime.warm_driver import CHILD_FLAG, IDLE_S, WARM_MODULES, job_path, signal_run, socket_path

_GCS_CHECK_S = 5.0
_RELAYED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
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


def _gcs_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a GCS address `host:port`; None for anything else (then no probe)."""
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _gcs_answers(where: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(where, timeout=2):
            return True
    except OSError:
        return False


def _same_user(conn: socket.socket) -> bool:
    """The socket is the user's own (0600 in a 0700 folder); its peer's uid, checked besides."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return bool(struct.unpack("3i", creds)[1] == os.getuid())


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    try:
        buf = bytearray(data)
        while b"\n" not in buf:
            more = conn.recv(1 << 16)
            if not more:
                raise ConnectionError("the driver closed its connection mid-request")
            buf.extend(more)
        request = json.loads(bytes(buf).partition(b"\n")[0])
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} file descriptors, not 3")
        return request, list(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _run_child(request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: become the driver's process (its stdio, directory, environment,
    import path) and run its module as `python -m` would."""
    os.setsid()  # its own group: a stop reaches it and everything it starts
    # A fresh interpreter's dispositions (Ctrl-C or a SIGINT stop is KeyboardInterrupt, so
    # `finally` blocks run), then the signals the server blocked around the fork are let in.
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _RELAYED)
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    # Fresh streams on the driver's descriptors, written through, as PYTHONUNBUFFERED gives a driver.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True,
                                  encoding=sys.__stdout__.encoding if sys.__stdout__ else None)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                  encoding=sys.__stderr__.encoding if sys.__stderr__ else None,
                                  errors="backslashreplace")
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
    try:  # what C extensions wrote through C's stdio (os._exit does not flush it)
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    return code


class Server:
    def __init__(self, key: str, gcs: str, lock_fd: int):
        self.path = socket_path(key)
        self.gcs = _gcs_port(gcs)
        self.gcs_failures = 0
        self.lock_fd = lock_fd
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
            if not _same_user(conn):
                raise PermissionError("a connection from another user")
            request, fds = _recv_request(conn)
        except (OSError, ValueError, ConnectionError) as exc:
            print(f"a request was dropped: {exc}", flush=True)
            conn.close()
            return
        # The server's own handlers (SIGTERM ends the server) must never run in the child: the
        # signals a driver relays are held until the child has its own dispositions.
        signal.pthread_sigmask(signal.SIG_BLOCK, _RELAYED)
        try:
            pid = os.fork()
        except OSError as exc:  # e.g. a pids limit: the driver hears nothing and runs its job itself
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _RELAYED)
            print(f"fork failed: {exc}", flush=True)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if pid == 0:
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # the server's: before its socket is closed here
                self.sel.close()
                self.listener.close()
                self.wake_r.close()
                self.wake_w.close()
                os.close(self.lock_fd)  # a new server may start while this run goes on
                for other in self.children.values():
                    other.close()
                conn.close()
                code = _run_child(request, fds)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _RELAYED)
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

    def _handle(self, selected: selectors.SelectorKey) -> None:
        if selected.fileobj is self.listener:
            conn, _ = self.listener.accept()
            conn.settimeout(5)  # a request is one message; a driver that stalls is dropped
            self._fork(conn)
            return
        if selected.data == "wake":
            try:
                while self.wake_r.recv(512):
                    pass
            except BlockingIOError:
                pass
            return
        pid = selected.data
        try:
            gone = not selected.fileobj.recv(1)  # type: ignore[union-attr]
        except OSError:
            gone = True
        if gone and pid in self.children:  # the driver died (killed, or its node lost)
            signal_run(pid, signal.SIGKILL)
            self.sel.unregister(self.children[pid])

    def _cluster_gone(self) -> bool:
        """Three probes in a row found nothing at the GCS port (a GCS restart or a blip is not
        the cluster's end). Asked only while no run is under way: runs are never ended for it."""
        if self.gcs is None:
            return False
        self.gcs_failures = 0 if _gcs_answers(self.gcs) else self.gcs_failures + 1
        return self.gcs_failures >= 3

    def serve(self) -> None:
        idle_since = last_gcs = time.monotonic()
        while True:
            # One failure (a fork refused, a descriptor limit) is that request's, not every run's.
            try:
                for selected, _ in self.sel.select(timeout=0.25):
                    self._handle(selected)
                self._reap()
            except Exception as exc:  # noqa: BLE001
                print(f"serving: {type(exc).__name__}: {exc}", flush=True)
                time.sleep(0.1)
            now = time.monotonic()
            if self.children:
                idle_since = now
                continue
            if now - idle_since > IDLE_S or not self._still_ours():
                return
            if now - last_gcs > _GCS_CHECK_S:
                last_gcs = now
                if self._cluster_gone():
                    return

    def close(self) -> None:
        for pid in list(self.children):
            signal_run(pid, signal.SIGKILL)
        if self._still_ours():
            self.path.unlink()


def main(argv: list[str]) -> int:
    key, gcs = argv[0], (argv[1] if len(argv) > 1 else "")
    path = socket_path(key)
    lock = os.fdopen(os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server of this key is starting or serving
    started = time.monotonic()
    own = set(os.environ.get("PYTHONPATH", "").split(os.pathsep))
    _BASE_PATH[:] = [p for p in sys.path[1:] if p and p not in own]
    warm_up()
    server = Server(key, gcs, lock.fileno())
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
    from mlplatform.process_start import raise_gc_thresholds

    raise_gc_thresholds()
    sys.exit(main(sys.argv[1:]))
