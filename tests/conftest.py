"""Shared fixtures: one real local Ray cluster per test session, started the way users
start it (`cluster.up`), on free ports, under a throwaway PLATFORM_HOME.

`--backends cluster` (or PLATFORM_TEST_BACKENDS=cluster) runs the same tests against the
production backends: the session starts a real PostgreSQL, redis-server and moto's S3 server
(tests/backends.py), puts their credentials in the environment before the Ray cluster starts
(as an operator would in the cluster's), and fixtures that build a home of their own give it
its own stores through `tests.backends.store_env`. A missing backend fails the session: it
never skips. The default, `embedded`, is the single-machine one (SQLite, files, SQLite online).

The environment is fixed at import time, before anything imports Ray: Ray 2.60 would
otherwise decide token auth from whatever ~/.ray holds on this machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import backends

ROOT = Path(__file__).resolve().parents[1]
SESSION_HOME = Path(tempfile.mkdtemp(prefix="mlp-test-home-"))
os.environ["PLATFORM_HOME"] = str(SESSION_HOME)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(SESSION_HOME / "ray" / "auth_token")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# The operator's allow-list of feature code: the examples, plus the broken transformations the
# tests define under tests/. The session cluster inherits it, as a real cluster would its own.
os.environ["PLATFORM_TRANSFORMATION_MODULES"] = "jobs,tests"
os.environ.pop("PLATFORM_ESTIMATOR_MODULES", None)
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("PLATFORM_RAY_ADDRESS", None)
os.environ.pop("RAY_AUTH_TOKEN", None)
os.environ.setdefault("COLUMNS", "200")


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Ray Serve's HTTP port for the session (the default 8000 may belong to a user's own cluster).
os.environ["PLATFORM_SERVE_PORT"] = str(_free_port())
os.environ.pop("PLATFORM_SERVE_HOST", None)
# Every Ray node of the session runs on this machine: one Serve proxy (on the head), since the
# proxies of several nodes would all bind the same port (tests/multinode.py adds worker nodes).
os.environ["PLATFORM_SERVE_PROXY_LOCATION"] = "HeadOnly"
os.environ.pop("PLATFORM_SERVE_URL", None)


def platformctl(*args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (),
                timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the real console script as a user would, in a subprocess."""
    exe = Path(sys.executable).parent / "platformctl"
    # A user's shell never holds the mark the platform leaves when it sets RAY_AUTH_MODE itself
    # (settings.apply_ray_auth_env) in this process: the child decides its auth mode afresh.
    drop = {*unset, "_PLATFORM_APPLIED_RAY_AUTH_MODE"}
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop}
    return subprocess.run([str(exe), *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout)


def _build_each_app_once() -> None:
    """typer's CliRunner builds the whole click command tree of the app it is given on every
    invoke (typer.main.get_command: a signature and its type hints per command, ~50 ms for
    platformctl's ~40 commands), and the suite invokes apps in this process some 300 times:
    measured, 14.7 CPU s of the two workers' time. A built tree holds no state of a call
    (click makes a new Context for each), and no test changes an app after it was built, so
    each app object is built once. A typer without that seam builds on every call, as before."""
    import typer.main
    import typer.testing

    if not callable(getattr(typer.testing, "_get_command", None)):
        return
    # A Typer hashes by identity, and the cache keeps each app it has seen alive.
    typer.testing._get_command = functools.cache(typer.main.get_command)


_build_each_app_once()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The same app in this process (typer's CliRunner), for tests of what a command does
    rather than how it starts: no interpreter start-up and imports per call. The environment
    is restored afterwards (commands set RAY_AUTH_MODE for themselves)."""
    from typer.testing import CliRunner

    from mlplatform.cli.app import app

    saved = dict(os.environ)
    try:
        result = CliRunner().invoke(app, list(args), env=env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backends", choices=("embedded", "cluster"),
                     default=os.environ.get("PLATFORM_TEST_BACKENDS", "embedded"),
                     help="embedded: SQLite, local files (default); cluster: PostgreSQL, Redis and "
                          "an S3 server (moto), started for the session (env PLATFORM_TEST_BACKENDS)")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns `-n 2` (pyproject) into workers
def pytest_cmdline_main(config: pytest.Config) -> None:
    """`--backends cluster` runs in one process: its PostgreSQL, Redis, S3 server and
    three-node cluster are started once, by the process that runs the tests."""
    if config.getoption("--backends") == "cluster" and getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0


def pytest_configure(config: pytest.Config) -> None:
    """Our sources are compiled once, by the process that starts the session, before any
    other process imports them. An editable install leaves them uncompiled, and a machine
    with PYTHONDONTWRITEBYTECODE=1 (this one, and CI's) never caches what an import
    compiles: each of the suite's ~300 processes (Ray workers and actors, CLI and job
    subprocesses, the import check's children) compiled again every module it imported.
    Reading a cached .pyc is still allowed there; writing it here is explicit.

    Every process of the session (this one, each xdist worker) collects garbage at the
    platform's thresholds (mlplatform.process_start), as its own processes do: at CPython's,
    the two workers spent 14.3 of ~90 CPU s in the collector over the unit and fuzz tests."""
    from mlplatform.process_start import raise_gc_thresholds

    raise_gc_thresholds()
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    import compileall

    for folder in ("platform", "jobs", "serve", "tests"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (every test module, most of mlplatform and its libraries) lives
    for the whole session: frozen, the collector's full passes stop re-scanning it."""
    import gc

    gc.freeze()


def pytest_sessionstart(session: pytest.Session) -> None:
    mode = session.config.getoption("--backends")
    if mode != "cluster":
        backends.activate("embedded", None)
        return
    try:
        started = backends.ClusterBackends.start(SESSION_HOME)
    except (backends.BackendUnavailable, RuntimeError) as exc:
        pytest.exit(f"--backends cluster: {exc}", returncode=1)
    backends.activate("cluster", started)
    # This run exercises the steps' Ray paths (Ray Data, Tune) across the nodes whatever the
    # size of the test data: the session's own home and every job it submits included.
    os.environ["PLATFORM_PLACEMENT"] = "cluster"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Tests marked `late` run after all the others, in their own order: a test that checks
    what must still hold a minute after an earlier test (test_metrics.py's gauges) lets the
    session's other tests fill that minute instead of sleeping through it. Under pytest-xdist
    (`--dist loadfile --no-loadscope-reorder`, pyproject.toml) the files go to the workers in
    this order and each worker runs its work units whole: a late test runs after the rest of
    its unit (its file, or all the files that take `demo_runs`: pytest_xdist_make_scheduler),
    and each worker runs its tests in the order one process would."""
    late = [i for i in items if i.get_closest_marker("late")]
    if late:
        items[:] = [i for i in items if not i.get_closest_marker("late")] + late


# Test files that take this session fixture (tests/integration/conftest.py) run on one xdist worker,
# one after another (pytest_xdist_make_scheduler below).
SHARED_SCOPE_FIXTURE = "demo_runs"


@functools.cache
def _takes_shared_fixture(path: str) -> bool:
    """Whether the test file at `path` (a node id's file part) names the shared fixture. Read from
    the source rather than from the collected items: the scheduler runs in pytest-xdist's
    controller, which sees only node ids."""
    file = ROOT / path
    return file.suffix == ".py" and SHARED_SCOPE_FIXTURE in file.read_text(encoding="utf-8")


@pytest.hookimpl(optionalhook=True)  # a run without pytest-xdist (`-p no:xdist`) has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """pytest-xdist's `loadfile`, except that the files taking `demo_runs` are one work unit.

    Why: a session fixture is built once per worker, and `demo_runs` (three pipeline days served
    on the worker's cluster) took 28-30 s of setup in each worker that ran one of its files. As one
    unit they are also one process's files in their collection order, so test_metrics.py's `late`
    test, last in the unit, runs after the other files of the unit instead of sleeping through
    its wait right after its own file (46 s). pytest-xdist's `loadgroup` marker would say the same,
    but it does not group on pytest 9.2 (pytest-xdist#1386). The unit is dispatched where its first
    file comes in the collection, like any other."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return f"<{SHARED_SCOPE_FIXTURE}>" if _takes_shared_fixture(path) else path

    return SharedFixtureScheduling(config, log)  # type: ignore[arg-type]


def pytest_report_header(config: pytest.Config) -> str:
    mode = config.getoption("--backends")
    active = backends.active()
    if mode == "cluster" and active is not None:
        return (f"backends: cluster (PostgreSQL :{active.postgres.port}, Redis :{active.redis.port}, "
                f"S3 {active.s3.endpoint})")
    return f"backends: {mode}"


_SESSION_AUTH_ENV = {k: os.environ.get(k) for k in (
    "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "_PLATFORM_APPLIED_RAY_AUTH_MODE")}


@pytest.fixture(autouse=True)
def _session_ray_auth_env() -> Iterator[None]:
    """Every test starts with the session's Ray auth environment. A test that applies another
    home's settings in this process (settings.apply_ray_auth_env sets RAY_AUTH_TOKEN_PATH) must
    not hand that token to the next test's `platformctl` subprocesses: which test comes next
    depends on how pytest-xdist spreads the files over its workers."""
    yield
    for key, value in _SESSION_AUTH_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def session_home() -> Iterator[Path]:
    yield SESSION_HOME


@pytest.fixture(scope="session")
def ray_cluster(session_home: Path) -> Iterator[dict[str, str]]:
    """The session's local Ray head: num_cpus=2, a small object store, free ports."""
    from mlplatform.runtime import local as cluster
    from mlplatform.settings import load_settings

    settings = load_settings()
    # With --backends cluster the backends' credentials are already in os.environ
    # (pytest_sessionstart): the head and its workers inherit them, as from an operator.
    result = cluster.up(settings, num_cpus=2, port=cluster.free_port(),
                        dashboard_port=cluster.free_port(), object_store_mb=300)
    workers: list = []
    stop_workers = None
    try:
        if backends.mode() == "cluster":
            workers, stop_workers = _start_worker_nodes(result.state.gcs_address, result.state.temp_dir)
        yield {"dashboard_url": result.state.dashboard_url,
               "gcs_address": result.state.gcs_address, "temp_dir": result.state.temp_dir}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if stop_workers is not None:
            stop_workers(workers)
        cluster.down(load_settings())


def _start_worker_nodes(gcs_address: str, head_temp_dir: str) -> tuple[list, object]:
    """In cluster mode the session cluster is multi-node: 2 worker nodes beside the head
    (tests/multinode.py; without it, the head alone). This process connects first: the
    workers are found joined through ray.nodes()."""
    import importlib.util

    if importlib.util.find_spec("tests.multinode") is None:
        return [], None
    from mlplatform.runtime.connect import connect
    from mlplatform.settings import load_settings
    from tests import multinode

    connect(load_settings())
    return multinode.start_workers(gcs_address, head_temp_dir, 2), multinode.stop_workers


@pytest.fixture(scope="session")
def ray_connected(ray_cluster: dict[str, str]) -> dict[str, str]:
    """This test process connected to the session cluster as a Ray driver."""
    from mlplatform.runtime.connect import connect
    from mlplatform.settings import load_settings

    connect(load_settings())
    return ray_cluster


@pytest.fixture(scope="session")
def redis_url(session_home: Path) -> Iterator[str]:
    """A real redis-server on a free port, for the session. Without the binary the Redis
    tests are skipped, saying how to install it, unless PLATFORM_REQUIRE_REDIS=1 (CI
    sets it, so that CI can never pass by skipping them). With --backends cluster: the
    session's Redis (db 0; isolated homes get dbs of their own)."""
    import time

    active = backends.active()
    if active is not None:
        yield active.redis.url(0)
        return

    from mlplatform.runtime.local import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server not found (apt-get install redis-server)"
        if os.environ.get("PLATFORM_REQUIRE_REDIS") == "1":
            pytest.fail(message + " and PLATFORM_REQUIRE_REDIS=1")
        pytest.skip(message)
    import redis

    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(session_home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server did not start on port {port}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[backends.PostgresServer]:
    """A real PostgreSQL (Debian's binaries) for tests of the PostgreSQL paths themselves:
    the session's with --backends cluster, else one started for them. Without the binaries
    they are skipped, saying how to install them, unless PLATFORM_REQUIRE_POSTGRES=1 (CI)."""
    active = backends.active()
    if active is not None:
        yield active.postgres
        return
    try:
        server = backends.PostgresServer.start()
    except backends.BackendUnavailable as exc:
        if os.environ.get(backends.REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{exc} and {backends.REQUIRE_POSTGRES}=1")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    active = backends.active()
    if active is not None:
        active.stop()
        backends.activate("embedded", None)
    shutil.rmtree(SESSION_HOME, ignore_errors=True)
