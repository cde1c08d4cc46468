import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplatform.cli.app import app
from mlplatform.errors import InputError
from mlplatform.settings import load_settings


def test_defaults_derive_from_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(env={})
    assert s.home == tmp_path / ".platform"
    assert s.metadata_url == f"sqlite:///{tmp_path / '.platform' / 'metadata.db'}"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path / '.platform' / 'mlflow.db'}"
    assert s.storage_uri == str(tmp_path / ".platform" / "storage")
    assert s.ray_address is None
    assert s.ray_auth_mode == "disabled"
    assert s.sources["home"] == "default"


def test_env_beats_file_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "platform.yaml").write_text(
        "storage_uri: s3://bucket/ml\nmetadata_url: postgresql://db/meta\n")
    s = load_settings(env={"PLATFORM_HOME": str(tmp_path / "h"),
                           "PLATFORM_METADATA_URL": "sqlite:////tmp/x.db"})
    assert s.home == tmp_path / "h"
    assert s.storage_uri == "s3://bucket/ml"
    assert s.sources["storage_uri"] == "file platform.yaml"
    assert s.metadata_url == "sqlite:////tmp/x.db"
    assert s.sources["metadata_url"] == "env PLATFORM_METADATA_URL"


def test_address_precedence(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    env = {"PLATFORM_HOME": str(home), "RAY_ADDRESS": "10.0.0.1:8265"}
    assert load_settings(env=env).ray_address == "http://10.0.0.1:8265"
    (home / "cluster.json").write_text(json.dumps({"dashboard_url": "http://127.0.0.1:9999"}))
    local = load_settings(env=env)
    assert local.ray_address == "http://127.0.0.1:9999"
    assert local.ray_auth_mode == "token"  # our local cluster always uses a token
    flagged = load_settings(env=env, address="http://other:8265")
    assert flagged.ray_address == "http://other:8265"
    assert flagged.sources["ray_address"] == "flag --address"
    assert flagged.ray_auth_mode == "disabled"


def test_bad_config_file_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "platform.yaml").write_text("storage_url: /tmp\n")
    with pytest.raises(InputError, match="storage_url"):
        load_settings(env={})


def test_bad_auth_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="RAY_AUTH_MODE='maybe'"):
        load_settings(env={"RAY_AUTH_MODE": "maybe"})


def test_config_show_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLATFORM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PLATFORM_STORAGE_URI", "s3://b/p")
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["settings"]["home"] == str(tmp_path / "home")
    assert data["settings"]["storage_uri"] == "s3://b/p"
    assert data["sources"]["storage_uri"] == "env PLATFORM_STORAGE_URI"


def test_auth_mode_set_by_this_process_is_re_resolved(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo` resolves settings before and after `cluster up` in one process."""
    from mlplatform.settings import apply_ray_auth_env

    home = tmp_path / "h"
    home.mkdir()
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("PLATFORM_HOME", str(home))
    before = load_settings()
    assert before.ray_auth_mode == "disabled"
    apply_ray_auth_env(before)
    (home / "cluster.json").write_text(json.dumps({"dashboard_url": "http://127.0.0.1:9999"}))
    assert load_settings().ray_auth_mode == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's own choice still wins
    monkeypatch.delenv("_PLATFORM_APPLIED_RAY_AUTH_MODE")
    assert load_settings().ray_auth_mode == "disabled"


def test_a_second_home_in_one_process_keeps_its_own_mlflow(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri (the registry) writes MLFLOW_TRACKING_URI into the environment;
    settings for another home built later in the process must not take it for the user's."""
    import os

    from mlplatform.models.registry import ModelRegistry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PLATFORM_MLFLOW_TRACKING_URI", raising=False)
    a = load_settings(env={**os.environ, "PLATFORM_HOME": str(tmp_path / "a")})
    ModelRegistry(a)
    assert os.environ.get("MLFLOW_TRACKING_URI")  # what MLflow did
    b = load_settings(env={**os.environ, "PLATFORM_HOME": str(tmp_path / "b")})
    assert b.mlflow_tracking_uri != a.mlflow_tracking_uri and str(tmp_path / "b") in b.mlflow_tracking_uri
    # A user's own MLFLOW_TRACKING_URI still counts.
    mine = f"sqlite:///{tmp_path}/mine.db"
    c = load_settings(env={**os.environ, "PLATFORM_HOME": str(tmp_path / "c"), "MLFLOW_TRACKING_URI": mine})
    assert c.mlflow_tracking_uri == mine
