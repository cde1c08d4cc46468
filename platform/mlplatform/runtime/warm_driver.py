"""A warm process for pipeline job drivers: the imports paid once per node and code, not per run.

Why: a pipeline job's driver is a fresh interpreter. Before its first step it imported Ray,
scikit-learn, SciPy, pandas, pyarrow, MLflow and SQLAlchemy, and during the steps Ray Tune's
search spaces, MLflow's model flavours and the plots' tick locator: 2-5 s on 2 cores, more than
a 4,000-row day's steps themselves (issue 15). The Ray Job around the driver (its logs, its stop,
its status, a lost driver's resume) is worth keeping; its interpreter's start is not.

How: the second cold driver of a code version on a node within `IDLE_S` starts a server
process that imports all of that once and waits on a Unix socket. Each later driver (`run_warm`)
connects, hands over its argv, environment, working directory and its stdin/stdout/stderr file
descriptors (SCM_RIGHTS), and the server forks a child that runs the driver's module there: the
same code, writing to the Ray Job's own log. The driver stays the Ray Job's process: it relays a
stop (SIGTERM/SIGINT) to the child and exits with the child's status; if the driver dies
(killed, its node lost), the server kills the child at once, as Ray would have killed a driver
that did the work itself.

Written by hand: `multiprocessing`'s forkserver preloads modules the same way, but its children
belong to the process that started it and write to the server's own stdio, not to each Ray Job's
log, and it has no way to take a stranger's file descriptors or relay its signals.

The server is keyed by everything its imports depend on: the interpreter, the environment less
what is read per run (the platform's settings, which are read at call time, Ray's per-job
config), the import path less the job's working directory, whose code (transformations) each
child imports afresh, and the install folders' modification times (an upgraded library). A new
release of the platform (new `py_modules`) is a new key and a new server; the old one ends after
`IDLE_S` without a run, and any server ends once its cluster's GCS stops answering.
`PLATFORM_WARM_DRIVER=off` in the cluster's environment turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD_FLAG = "_PLATFORM_WARM_CHILD"
OFF_VAR = "PLATFORM_WARM_DRIVER"
IDLE_S = 600.0
_PER_RUN_PREFIXES = ("PLATFORM_", "_PLATFORM_")
_PER_RUN = {"RAY_JOB_CONFIG_JSON_ENV_VAR", "PWD", "OLDPWD", "_", "SHLVL", "PYTHONPATH"}
# What a driver imports before and during a small run's steps (measured: 593 modules, 2-5 s).
WARM_MODULES = (
    "numpy", "pandas", "pyarrow.dataset", "pyarrow.parquet", "scipy.stats", "sqlalchemy", "ray",
    "ray.tune", "sklearn.ensemble", "sklearn.pipeline", "sklearn.compose", "sklearn.preprocessing",
    "sklearn.metrics", "sklearn.model_selection", "mlflow", "mlflow.sklearn",
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
    "matplotlib.ticker", "jinja2", "requests",
)


# -- the key and the place --------------------------------------------------------------------


def job_path(env: dict[str, str], cwd: str) -> list[str]:
    """The import path the environment adds, less the working directory (a job's own code)."""
    here = os.path.realpath(cwd)
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != here]


def _installed() -> list[str]:
    """The install folders' modification times: `pip install` or uninstall adds or removes a
    package's dist-info folder there, so an upgraded library is a new key, and a new server."""
    out = []
    for name in ("purelib", "platlib"):
        folder = sysconfig.get_paths()[name]
        try:
            out.append(f"{folder}:{os.stat(folder).st_mtime_ns}")
        except OSError:
            out.append(folder)
    return out


def warm_key(env: dict[str, str], cwd: str) -> str:
    kept = sorted((k, v) for k, v in env.items() if k not in _PER_RUN and not k.startswith(_PER_RUN_PREFIXES))
    raw = json.dumps([sys.executable, job_path(env, cwd), kept, _installed()])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def socket_dir() -> Path:
    # Short and per user: a Unix socket's path is limited to 107 bytes, Ray's session dirs are not.
    return Path(tempfile.gettempdir()) / f"mlp-warm-{os.getuid()}"


def socket_path(key: str) -> Path:
    return socket_dir() / f"{key}.sock"


def disabled() -> bool:
    return os.environ.get(OFF_VAR, "").strip().lower() in ("off", "0", "false", "no")


def _own_folder() -> bool:
    """Whether the socket folder is this user's alone (or absent, then made so): a folder of
    the same name made first by another user could hold their socket, which would receive a
    driver's environment and its output, or links that turn our writes onto our own files."""
    folder = socket_dir()
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


# -- the driver's side ------------------------------------------------------------------------


def signal_run(pid: int, signum: int) -> None:
    """Send `signum` to a warm child's process group (the run and what it started); before the
    child's setsid, its first act, to the child alone. A run already gone is no error."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    except OSError:
        pass


def _read_line(sock: socket.socket, pending: bytearray) -> dict[str, Any] | None:
    while b"\n" not in pending:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        pending.extend(chunk)
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return dict(json.loads(line))


def run_warm(module: str, argv: list[str]) -> int | None:
    """Run `python -m module argv` in a warm child of this node's server and return its exit
    status; None when there is no server to take it (this process runs it, and one is started
    for the next run)."""
    if os.environ.get(CHILD_FLAG) or disabled() or not hasattr(socket, "send_fds") or not _own_folder():
        return None
    cwd = os.getcwd()
    key = warm_key(dict(os.environ), cwd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path(key)))
    except OSError:
        sock.close()
        if _runs_come_often(key):
            start_server(key)
        return None
    with sock:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        request = json.dumps({"module": module, "argv": argv, "env": dict(os.environ), "cwd": cwd})
        pending = bytearray()
        try:
            sock.settimeout(30)  # the pid comes right after the fork; a wedged server is no server
            socket.send_fds(sock, [request.encode() + b"\n"], [0, 1, 2])
            started = _read_line(sock, pending)
            sock.settimeout(None)  # the run's status comes when the run ends
        except OSError:
            started = None
        if started is None:  # the server ended before it forked: nothing ran
            return None
        child = int(started["pid"])

        def relay(signum: int, _frame: Any) -> None:
            signal_run(child, signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, relay)
        try:
            ended = _read_line(sock, pending)
        except OSError:
            ended = None
        if ended is None:  # the server died with the run under way: end the run, say so
            signal_run(child, signal.SIGKILL)
            print("error: the warm driver process ended before the run did; submit the run again "
                  "to resume it", file=sys.stderr, flush=True)
            return 1
        return int(ended["exit"])


def _runs_come_often(key: str) -> bool:
    """Whether a driver of this key ran cold within `IDLE_S` before this one (then this one
    starts the server). A server costs a driver's imports in CPU while it warms up, beside the
    run that started it, and ~0.4 GB while it waits: a key that runs once a day (or a cluster
    that lives for one run, as the test suite's do) is better off without one."""
    marker = socket_dir() / f"{key}.seen"
    try:
        recent = time.time() - marker.stat().st_mtime < IDLE_S
    except OSError:
        recent = False
    try:
        marker.touch()
    except OSError:
        return False
    return recent


def exit_like(status: int) -> None:
    """End this process as the child ended: its exit code, or the signal that killed it (a
    negative status), so Ray reports a stopped or killed driver as it would have."""
    if status < 0:
        signum = -status
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL and SIGSTOP keep their default action anyway
        os.kill(os.getpid(), signum)
        sys.exit(128 + signum)  # a signal whose default action is not to end the process
    sys.exit(status)


def start_server(key: str) -> None:
    """Start this key's server, detached (its own session, a child of init): a Ray Job's stop
    kills its driver's process tree, and the server outlives the job that started it."""
    middle = os.fork()
    if middle != 0:
        os.waitpid(middle, 0)
        return
    try:  # the intermediate child
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        folder = socket_dir()
        log = os.open(folder / f"{key}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_PER_RUN_PREFIXES)
               and k not in ("RAY_JOB_CONFIG_JSON_ENV_VAR", "PYTHONPATH")}
        env["PYTHONPATH"] = os.pathsep.join(job_path(dict(os.environ), os.getcwd()))
        os.chdir("/")
        os.execve(sys.executable, [sys.executable, "-m", "mlplatform.runtime.warm_server", key,
                                   os.environ.get("RAY_ADDRESS", "")], env)
    finally:
        os._exit(1)
