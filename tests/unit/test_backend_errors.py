"""Bad backends against real servers: a closed port, a wrong password on a real PostgreSQL,
s3:// with no credentials against a real S3 server (moto). Each is one clear error naming
the setting, its password masked, exit 1, no traceback; `config check` reports every store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import backends
from tests.conftest import cli, platformctl

# Credentials and store settings this process may hold (--backends cluster puts credentials in
# the environment; mlflow.set_tracking_uri, run by an earlier test, sets MLFLOW_TRACKING_URI): a
# test that means "no credentials" or "this store" takes them away.
CREDENTIALS = ("PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "AWS_PROFILE", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_URI",
               "PLATFORM_METADATA_URL", "PLATFORM_MLFLOW_TRACKING_URI", "PLATFORM_STORAGE_URI",
               "PLATFORM_ONLINE_STORE_URL", "PLATFORM_S3_ENDPOINT_URL", "PLATFORM_CONFIG")


@pytest.fixture(scope="module")
def s3() -> Iterator[backends.S3Server]:
    active = backends.active()
    if active is not None:
        yield active.s3
        return
    server = backends.S3Server.start()
    try:
        yield server
    finally:
        server.stop()


def _env(tmp_path: Path, **values: str | None) -> dict[str, str | None]:
    """A home of its own, no inherited credentials, no AWS config files; then `values`."""
    env: dict[str, str | None] = {k: None for k in CREDENTIALS}
    env.update({"PLATFORM_HOME": str(tmp_path / "home"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(values)
    return env


def _check(env: dict[str, str | None]) -> tuple[int, dict[str, dict], str]:
    proc = cli("config", "check", "--json", env=env)  # type: ignore[arg-type]
    assert "Traceback" not in proc.stdout + proc.stderr
    stores = {s["setting"]: s for s in json.loads(proc.stdout)["stores"]}
    return proc.returncode, stores, proc.stdout + proc.stderr


def test_a_closed_postgres_port_is_named_at_once(tmp_path: Path) -> None:
    port = backends.free_port()  # nothing listens there
    url = f"postgresql://mlp:s3cr3t@127.0.0.1:{port}/meta"
    code, stores, out = _check(_env(tmp_path, PLATFORM_METADATA_URL=url))
    assert code == 1
    assert not stores["metadata_url"]["ok"] and "cannot connect" in stores["metadata_url"]["detail"]
    assert stores["metadata_url"]["value"] == f"postgresql://mlp:***@127.0.0.1:{port}/meta"
    assert stores["storage_uri"]["ok"] and stores["online_store_url"]["ok"]
    assert "s3cr3t" not in out


def test_a_wrong_postgres_password_fails_the_command_naming_the_setting(
        tmp_path: Path, postgres_server: backends.PostgresServer) -> None:
    url = postgres_server.url("postgres", password="wr0ngpw")
    env = _env(tmp_path, PLATFORM_METADATA_URL=url)
    code, stores, out = _check(env)
    assert code == 1 and "password authentication failed" in stores["metadata_url"]["detail"]
    # A command that uses the store, as a user runs it: one message, exit 1, no traceback.
    proc = platformctl("alerts", "list", env={k: v for k, v in env.items() if v is not None},
                       unset=tuple(k for k, v in env.items() if v is None), timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "metadata_url (PLATFORM_METADATA_URL)" in err and "password authentication failed" in err
    assert f"mlp:***@127.0.0.1:{postgres_server.port}" in err
    assert "wr0ngpw" not in out + proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_a_wrong_password_for_mlflow_fails_naming_its_setting(
        tmp_path: Path, postgres_server: backends.PostgresServer) -> None:
    env = _env(tmp_path, PLATFORM_MLFLOW_TRACKING_URI=postgres_server.url("postgres", password="wr0ngpw"))
    proc = cli("models", "list", env=env)  # type: ignore[arg-type]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "mlflow_tracking_uri (PLATFORM_MLFLOW_TRACKING_URI)" in err
    assert "password authentication failed" in err and "wr0ngpw" not in err


def test_the_right_password_from_the_environment_passes(
        tmp_path: Path, postgres_server: backends.PostgresServer) -> None:
    env = _env(tmp_path, PGPASSWORD=postgres_server.password,
               PLATFORM_METADATA_URL=postgres_server.url("postgres"),
               PLATFORM_MLFLOW_TRACKING_URI=postgres_server.url("postgres"))
    code, stores, out = _check(env)
    assert code == 0, out
    assert stores["metadata_url"]["detail"].startswith("postgresql ")


def test_a_closed_redis_port_is_named_with_its_password_masked(tmp_path: Path) -> None:
    port = backends.free_port()
    code, stores, out = _check(_env(tmp_path, PLATFORM_ONLINE_STORE_URL=f"redis://:r3d1s@127.0.0.1:{port}/0"))
    assert code == 1
    detail = stores["online_store_url"]["detail"]
    assert "cannot reach Redis" in detail and f":***@127.0.0.1:{port}/0" in detail
    assert "r3d1s" not in out


def test_s3_without_credentials_says_which_variables_to_set(tmp_path: Path, s3: backends.S3Server) -> None:
    env = _env(tmp_path, PLATFORM_STORAGE_URI="s3://mlp-test/x", AWS_ENDPOINT_URL=s3.endpoint)
    code, stores, _ = _check(env)
    assert code == 1
    assert "no S3 credentials" in stores["storage_uri"]["detail"]
    assert "AWS_ACCESS_KEY_ID" in stores["storage_uri"]["detail"]


def test_a_step_opening_s3_storage_without_credentials_names_the_setting(
        tmp_path: Path, s3: backends.S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlplatform.errors import PlatformError
    from mlplatform.services import Services
    from mlplatform.settings import load_settings

    for key, value in _env(tmp_path, AWS_ENDPOINT_URL=s3.endpoint).items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    services = Services(load_settings(env={"PLATFORM_HOME": str(tmp_path / "home"),
                                           "PLATFORM_STORAGE_URI": "s3://mlp-test/x"}))
    with pytest.raises(PlatformError, match=r"storage_uri \(PLATFORM_STORAGE_URI\) s3://mlp-test/x: "
                                            "no S3 credentials"):
        services.storage("snapshots")


def test_s3_with_credentials_passes_and_an_unreachable_endpoint_is_named(
        tmp_path: Path, s3: backends.S3Server) -> None:
    bucket = "mlp-check"
    s3.create_bucket(bucket)
    creds = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}
    code, stores, out = _check(_env(tmp_path, PLATFORM_STORAGE_URI=f"s3://{bucket}/x",
                                    AWS_ENDPOINT_URL=s3.endpoint, **creds))
    assert code == 0, out
    code, stores, _ = _check(_env(tmp_path, PLATFORM_STORAGE_URI="s3://no-such-bucket/x",
                                  AWS_ENDPOINT_URL=s3.endpoint, **creds))
    assert code == 1 and "no-such-bucket" in stores["storage_uri"]["detail"]
    closed = f"http://127.0.0.1:{backends.free_port()}"
    code, stores, _ = _check(_env(tmp_path, PLATFORM_STORAGE_URI=f"s3://{bucket}/x", AWS_ENDPOINT_URL=closed,
                                  **creds))
    assert code == 1 and not stores["storage_uri"]["ok"]
