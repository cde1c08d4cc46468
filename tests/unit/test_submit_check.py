"""`platformctl submit` to a cluster that is not this machine's refuses stores on this
machine's disk, naming each setting to change, before it connects to anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mlplatform.errors import PlatformError
from mlplatform.runtime.jobs import check_stores_reach_cluster, cluster_is_local
from mlplatform.settings import load_settings
from tests.conftest import ROOT, cli

# TEST-NET-1 (RFC 5737): documentation only, never this machine's and never routed; if the
# command tried to connect there it would wait out a timeout and then fail on the connection.
REMOTE = "http://192.0.2.10:8265"
REMOTE_STORES = {"PLATFORM_METADATA_URL": "postgresql+psycopg://mlp@db.example:5432/meta",
                 "PLATFORM_MLFLOW_TRACKING_URI": "postgresql://mlp:hunter2@db.example:5432/mlflow",
                 "PLATFORM_STORAGE_URI": "s3://bucket/platform",
                 "PLATFORM_ONLINE_STORE_URL": "redis://cache.example:6379/0"}


def _settings(tmp_path: Path, address: str, **env: str):  # noqa: ANN202
    return load_settings(env={"PLATFORM_HOME": str(tmp_path / "home"), **env}, address=address)


def test_submit_to_a_remote_cluster_with_the_embedded_stores_names_every_setting(tmp_path: Path) -> None:
    # The embedded defaults: no store setting this process may have inherited (MLflow's own
    # set_tracking_uri leaves MLFLOW_TRACKING_URI behind in a process that used the registry).
    inherited = {k: None for k in ("MLFLOW_TRACKING_URI", *REMOTE_STORES)}
    proc = cli("submit", str(ROOT / "jobs" / "examples" / "demo.yaml"), "--address", REMOTE,
               env={"PLATFORM_HOME": str(tmp_path / "home"), **inherited})  # type: ignore[dict-item]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    for var in ("PLATFORM_METADATA_URL", "PLATFORM_MLFLOW_TRACKING_URI", "PLATFORM_STORAGE_URI",
                "PLATFORM_ONLINE_STORE_URL"):
        assert var in err, err
    assert "192.0.2.10" in err and "not this machine's" in err
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())


def test_only_the_local_settings_are_named_and_passwords_are_masked(tmp_path: Path) -> None:
    local_storage = str(tmp_path / "storage")
    settings = _settings(tmp_path, REMOTE, **{**REMOTE_STORES, "PLATFORM_STORAGE_URI": local_storage,
                                              "PLATFORM_METADATA_URL": "sqlite:///meta.db"})
    with pytest.raises(PlatformError) as info:
        check_stores_reach_cluster(settings)
    message = info.value.message
    assert "PLATFORM_STORAGE_URI" in message and local_storage in message
    assert "PLATFORM_METADATA_URL" in message
    assert "PLATFORM_MLFLOW_TRACKING_URI" not in message and "PLATFORM_ONLINE_STORE_URL" not in message
    assert info.value.exit_code == 1


@pytest.mark.parametrize("storage", ["file:///srv/platform", "relative/dir"])
def test_file_uris_and_relative_paths_are_local_too(tmp_path: Path, storage: str) -> None:
    settings = _settings(tmp_path, REMOTE, **{**REMOTE_STORES, "PLATFORM_STORAGE_URI": storage})
    with pytest.raises(PlatformError, match="PLATFORM_STORAGE_URI"):
        check_stores_reach_cluster(settings)


def test_remote_stores_pass_and_no_password_is_shown(tmp_path: Path) -> None:
    settings = _settings(tmp_path, REMOTE, **REMOTE_STORES)
    check_stores_reach_cluster(settings)  # nothing local: no refusal
    bad = _settings(tmp_path, REMOTE, **{**REMOTE_STORES, "PLATFORM_METADATA_URL": "sqlite:///x.db",
                                         "PLATFORM_MLFLOW_TRACKING_URI": "sqlite:///hunter2.db"})
    with pytest.raises(PlatformError) as info:
        check_stores_reach_cluster(bad)
    assert "PLATFORM_MLFLOW_TRACKING_URI" in info.value.message


def _an_interface_address() -> str:
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return "127.0.0.1"


@pytest.mark.parametrize("address,local", [
    ("http://127.0.0.1:8265", True), ("http://localhost:8265", True), ("127.0.0.2:6379", True),
    ("http://[::1]:8265", True), (f"http://{socket.gethostname()}:8265", True),
    (f"http://{_an_interface_address()}:8265", True),
    (REMOTE, False), ("ray://192.0.2.10:10001", False), ("http://ray-head.example:8265", False),
])
def test_which_clusters_are_this_machines(tmp_path: Path, address: str, local: bool) -> None:
    assert cluster_is_local(_settings(tmp_path, address)) is local


def test_the_embedded_stores_with_the_local_cluster_are_not_refused(tmp_path: Path) -> None:
    check_stores_reach_cluster(_settings(tmp_path, "http://127.0.0.1:8265"))
