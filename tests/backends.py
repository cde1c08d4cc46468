"""The production backends for `pytest --backends cluster`: a real PostgreSQL (Debian's
binaries), a real redis-server and moto's S3 server, one of each per test session, started
by the session itself so that a developer gets what CI runs with one command.

Credentials reach every process the way they would on a real cluster: from the environment
(PGPASSWORD, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never inside a store URL, so the
URLs travel with jobs and Serve replicas (Settings.job_env) and the secrets stay in the Ray
cluster's own environment. `store_env(home, name)` gives a test's own home its own stores:
a database each for the metadata store and MLflow, a prefix in the bucket, a Redis db.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["embedded", "cluster"]
BUCKET = "mlp-test"
PG_USER = "mlp"
REDIS_DBS = 1024
REQUIRE_POSTGRES = "PLATFORM_REQUIRE_POSTGRES"


class BackendUnavailable(RuntimeError):
    """A backend's binary or package is missing: the message says how to install it."""


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            check()  # type: ignore[operator]
            return
        except Exception as exc:  # noqa: BLE001 - still starting
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout_s:.0f}s: {last}")


def postgres_bindir() -> Path:
    """Debian's `postgresql` package: /usr/lib/postgresql/<major>/bin (newest major), or the
    folder of an `initdb` on PATH; PLATFORM_TEST_PG_BINDIR overrides both."""
    if os.environ.get("PLATFORM_TEST_PG_BINDIR"):
        return Path(os.environ["PLATFORM_TEST_PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.findall(r"/(\d+)/bin", p)[0]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise BackendUnavailable("PostgreSQL's initdb not found (apt-get install postgresql)")


@dataclass
class PostgresServer:
    """A throwaway cluster: initdb into a temp dir, 127.0.0.1 only, a free port, password
    (SCRAM) authentication over TCP. As root it runs as the `postgres` user (PostgreSQL
    refuses root), so the data dir lives in a folder that user owns."""

    base: Path
    port: int
    password: str
    bindir: Path
    as_user: str | None

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = postgres_bindir()
        as_user = "postgres" if os.geteuid() == 0 else None
        base = Path(tempfile.mkdtemp(prefix="mlp-pg-", dir="/tmp"))
        password = secrets.token_urlsafe(16)
        (base / "pw").write_text(password + "\n")
        if as_user:
            shutil.chown(base, as_user)
            shutil.chown(base / "pw", as_user)
        server = cls(base=base, port=free_port(), password=password, bindir=bindir, as_user=as_user)
        server._run("initdb", "-D", str(base / "data"), "-U", PG_USER, f"--pwfile={base / 'pw'}",
                    "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
        server._start()
        return server

    def _start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400")
        self._run("pg_ctl", "-D", str(self.base / "data"), "-o", options, "-l", str(self.base / "log"),
                  "-w", "-t", "60", "start")

    def restart(self, down_s: float) -> None:
        """A database restart as operators do it (fast shutdown: open connections are cut),
        down for `down_s` seconds, then back on the same port with its data."""
        self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        time.sleep(down_s)
        self._start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.base)
        if proc.returncode != 0:
            log = (self.base / "log").read_text()[-2000:] if (self.base / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}{log}")

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A SQLAlchemy URL; without `password` the driver takes PGPASSWORD from the environment."""
        auth = f"{PG_USER}:{password}" if password is not None else PG_USER
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=self.password,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    base: Path

    @classmethod
    def start(cls, base: Path) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BackendUnavailable("redis-server not found (apt-get install redis-server)")
        import redis

        port = free_port()
        server = cls(port=port, proc=cls._spawn(binary, port, base), base=base)
        _wait(lambda: redis.Redis(port=port, socket_connect_timeout=1).ping(), "redis-server")
        return server

    @staticmethod
    def _spawn(binary: str, port: int, base: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(base), "--databases", str(REDIS_DBS)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self, down_s: float) -> None:
        """Down for `down_s` seconds, then back on the same port with its data (saved to an RDB
        file at shutdown, as a persistent production Redis keeps it)."""
        import redis

        redis.Redis(port=self.port, socket_connect_timeout=2).shutdown(save=True)
        self.proc.wait(timeout=30)
        time.sleep(down_s)
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = self._spawn(binary, self.port, self.base)
        _wait(lambda: redis.Redis(port=self.port, socket_connect_timeout=1).ping(), "redis-server")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class S3Server:
    """moto in server mode: an S3 API on a free port, one bucket."""

    port: int
    server: object

    @classmethod
    def start(cls) -> S3Server:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise BackendUnavailable("moto's server not installed (pip install 'moto[server]')") from None
        import logging

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        return cls(port=port, server=server)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, bucket: str) -> None:
        import boto3

        # moto accepts any key; explicit ones make this work whatever the environment holds.
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="mlp-test",
                     aws_secret_access_key="mlp-test").create_bucket(Bucket=bucket)

    def stop(self) -> None:
        self.server.stop()  # type: ignore[attr-defined]


@dataclass
class ClusterBackends:
    """The session's three servers and the environment that reaches them."""

    postgres: PostgresServer
    redis: RedisServer
    s3: S3Server
    aws_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    _counter: int = 0
    _homes: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    @classmethod
    def start(cls, base: Path) -> ClusterBackends:
        postgres = PostgresServer.start()
        try:
            redis_server = RedisServer.start(base)
            try:
                s3 = S3Server.start()
            except BaseException:
                redis_server.stop()
                raise
        except BaseException:
            postgres.stop()
            raise
        backends = cls(postgres=postgres, redis=redis_server, s3=s3)
        os.environ.update(backends.credentials_env())
        s3.create_bucket(BUCKET)
        return backends

    def credentials_env(self) -> dict[str, str]:
        """What a cluster's own environment holds (secrets included): set in this process
        before the session's Ray cluster starts, so its workers and replicas inherit it."""
        return {"PGPASSWORD": self.postgres.password, "AWS_ACCESS_KEY_ID": "mlp-test",
                "AWS_SECRET_ACCESS_KEY": self.aws_secret, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.s3.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def store_env(self, home: Path, name: str) -> dict[str, str]:
        known = self._homes.get((str(home), name))
        if known is not None:  # the same home asked again: the same stores
            return dict(known)
        self._counter += 1
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "home"
        key = f"{slug}_{self._counter}"
        if self._counter >= REDIS_DBS:
            raise RuntimeError(f"more than {REDIS_DBS - 1} isolated homes in one session")
        env = {"PLATFORM_METADATA_URL": self.postgres.create_database(f"meta_{key}"),
               "PLATFORM_MLFLOW_TRACKING_URI": self.postgres.create_database(f"mlflow_{key}"),
               "PLATFORM_STORAGE_URI": f"s3://{BUCKET}/{key}",
               "PLATFORM_ONLINE_STORE_URL": self.redis.url(self._counter),
               # The steps' Ray paths (Ray Data, Tune) across the nodes whatever the data's size;
               # the embedded run takes the in-process paths the thresholds choose for test data.
               "PLATFORM_PLACEMENT": "cluster"}
        self._homes[(str(home), name)] = env
        return dict(env)

    def stop(self) -> None:
        for stop in (self.s3.stop, self.redis.stop, self.postgres.stop):
            try:
                stop()
            except Exception:  # noqa: BLE001, S110 - stop the others whatever happens
                pass


_ACTIVE: ClusterBackends | None = None
_MODE: Mode = "embedded"


def activate(mode: Mode, backends: ClusterBackends | None) -> None:
    """Called once by tests/conftest.py at session start."""
    global _ACTIVE, _MODE
    _MODE, _ACTIVE = mode, backends


def mode() -> Mode:
    return _MODE


def active() -> ClusterBackends | None:
    return _ACTIVE


def store_env(home: Path, name: str) -> dict[str, str]:
    """The environment that gives `home` its own stores: {} on the embedded default (the
    stores are files under home); with `--backends cluster` a fresh PostgreSQL database for
    the metadata store and one for MLflow, `s3://<bucket>/<name>_<n>` for storage (and MLflow's
    artifacts under it), a Redis db of its own, and PLATFORM_PLACEMENT=cluster. Merge it over
    {"PLATFORM_HOME": home}."""
    if _MODE == "embedded":
        return {}
    assert _ACTIVE is not None, "cluster backends not started (tests/conftest.py)"
    return _ACTIVE.store_env(home, name)
