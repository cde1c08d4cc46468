"""Secrets are never shown: store URLs are masked wherever a person or the Ray dashboard reads
them, a submitted job carries no password and no allow-list, and the local cluster's token
file is private from the moment it exists."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mlplatform.errors import InputError, PlatformError
from mlplatform.redact import has_secret, redact_text, redact_url, url_location
from mlplatform.runtime.jobs import build_runtime_env, job_metadata
from mlplatform.settings import load_settings
from tests.conftest import cli

PASSWORDS = ("s3cr3t", "r3d1s", "t0k3n", "SK123")
SECRET_ENV = {
    "PLATFORM_METADATA_URL": "postgresql://mlp:s3cr3t@db.internal:5432/meta",
    "PLATFORM_ONLINE_STORE_URL": "redis://:r3d1s@cache.internal:6379/0",
    "PLATFORM_MLFLOW_TRACKING_URI": "https://ci:t0k3n@mlflow.internal/",
    "PLATFORM_STORAGE_URI": "s3://bucket/ml?region=eu-west-1&secret_key=SK123",
}


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg://user:p%40ss@host:5432/db?sslmode=require",
     "postgresql+psycopg://user:***@host:5432/db?sslmode=require"),
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("rediss://default:p@ss@host:6380/1", "rediss://default:***@host:6380/1"),  # an unencoded @
    ("postgresql://host/db?user=u&password=pw", "postgresql://host/db?user=u&password=***"),
    ("s3://b/p?region=x&secret_key=SK", "s3://b/p?region=x&secret_key=***"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
    ("http://127.0.0.1:8265", "http://127.0.0.1:8265"),
    ("http://host:8265/a@b", "http://host:8265/a@b"),  # a port and a path, not a password
    ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),  # a '/' in a generated password
    ("postgresql://u:a/b?c#d@e@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("mysql://u:1234/x@h/db", "mysql://u:***@h/db"),  # digits and a slash, yet before an '@' host
    ("/plain/path", "/plain/path"),
])
def test_urls_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert has_secret(url) is (url != shown)


def test_urls_inside_text_are_masked() -> None:
    assert redact_text("got ['postgresql://u:pw@h/db'] and redis://:x@h:1/0.") == (
        "got ['postgresql://u:***@h/db'] and redis://:***@h:1/0.")


def test_a_location_ignores_who_connects() -> None:
    assert url_location("postgresql://a:x@db:5432/meta?sslmode=require") == "postgresql://db:5432/meta"
    assert url_location("postgresql://b:y@db:5432/meta") == url_location("postgresql://db:5432/meta")


def test_config_show_masks_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"PLATFORM_HOME": str(tmp_path / "home"), **SECRET_ENV}
    text = cli("config", "show", env=env)
    assert text.returncode == 0, text.stderr
    assert "postgresql://mlp:***@db.internal:5432/meta" in text.stdout
    assert "redis://:***@cache.internal:6379/0" in text.stdout
    data = json.loads(cli("config", "show", "--json", env=env).stdout)
    assert data["settings"]["metadata_url"] == "postgresql://mlp:***@db.internal:5432/meta"
    assert data["settings"]["online_store_url"] == "redis://:***@cache.internal:6379/0"
    assert data["settings"]["mlflow_tracking_uri"] == "https://ci:***@mlflow.internal/"
    assert data["settings"]["storage_uri"] == "s3://bucket/ml?region=eu-west-1&secret_key=***"
    assert data["sources"]["metadata_url"] == "env PLATFORM_METADATA_URL"
    for out in (text.stdout + text.stderr, json.dumps(data)):
        assert not [p for p in PASSWORDS if p in out]


def test_settings_repr_masks_passwords(tmp_path: Path) -> None:
    settings = load_settings(env={"PLATFORM_HOME": str(tmp_path), **SECRET_ENV})
    assert settings.metadata_url == SECRET_ENV["PLATFORM_METADATA_URL"]  # the value itself is intact
    for shown in (repr(settings), str(settings)):
        assert "mlp:***@db.internal" in shown
        assert not [p for p in PASSWORDS if p in shown]


def test_a_bad_platform_yaml_key_does_not_echo_a_password(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for text, key in (("metadata_uri: postgresql://mlp:s3cr3t@db/meta\n", "metadata_uri"),  # a typo
                      ("metadata_url: [postgresql://mlp:s3cr3t@db/meta]\n", "metadata_url")):
        (tmp_path / "platform.yaml").write_text(text)
        with pytest.raises(InputError) as info:
            load_settings(env={})
        assert key in info.value.message and "mlp:***@db/meta" in info.value.message
        assert "s3cr3t" not in info.value.message


def test_a_job_carries_no_password_and_no_allow_list(tmp_path: Path) -> None:
    """The runtime_env and metadata are on the dashboard for everyone who can see the cluster;
    the allow-lists are the operator's, so a submitter's own setting must not reach the job."""
    env = {"PLATFORM_HOME": str(tmp_path / "home"), **SECRET_ENV,
           "PLATFORM_ESTIMATOR_MODULES": "sklearn,os", "PLATFORM_TRANSFORMATION_MODULES": "jobs,shutil"}
    settings = load_settings(env=env)
    runtime_env = build_runtime_env(settings, tmp_path, "run-1-00001")
    shown = json.dumps([runtime_env, job_metadata(pipeline="demo", run_id="run-1")])
    assert not [p for p in PASSWORDS if p in shown]
    env_vars = runtime_env["env_vars"]
    assert not {"PLATFORM_METADATA_URL", "PLATFORM_ONLINE_STORE_URL", "PLATFORM_MLFLOW_TRACKING_URI",
                "PLATFORM_STORAGE_URI"} & set(env_vars)
    assert not {"PLATFORM_ESTIMATOR_MODULES", "PLATFORM_TRANSFORMATION_MODULES"} & set(env_vars)
    assert env_vars["PLATFORM_EXPECT_METADATA_URL"] == "postgresql://mlp:***@db.internal:5432/meta"
    assert env_vars["PLATFORM_HOME"] == str(tmp_path / "home")
    assert env_vars["PLATFORM_JOB_ID"] == "run-1-00001"
    assert "/platform.yaml" in runtime_env["excludes"]  # the submitter's config stays home
    assert job_metadata(note="postgresql://u:pw@h/db") == {"note": "postgresql://u:***@h/db"}
    # A URL without a password still travels, so the job uses the same store.
    plain = load_settings(env={"PLATFORM_HOME": str(tmp_path / "home"),
                               "PLATFORM_METADATA_URL": "postgresql://db.internal/meta"})
    assert build_runtime_env(plain, tmp_path, "j")["env_vars"]["PLATFORM_METADATA_URL"] == (
        "postgresql://db.internal/meta")


def test_a_job_on_a_cluster_without_the_credentials_fails_naming_the_setting(tmp_path: Path) -> None:
    """What the job sees: the submission's env_vars over the cluster's own environment."""
    submitted = build_runtime_env(load_settings(env={"PLATFORM_HOME": str(tmp_path), **SECRET_ENV}),
                                  tmp_path, "j")["env_vars"]
    with pytest.raises(InputError, match=r"metadata_url: the submitter uses postgresql://mlp:\*\*\*@"
                                         r"db.internal:5432/meta but this job resolved sqlite:///.*set "
                                         r"PLATFORM_METADATA_URL in the cluster's environment"):
        load_settings(env=dict(submitted))
    cluster = {**SECRET_ENV, "PLATFORM_METADATA_URL": "postgresql://job:other@db.internal:5432/meta"}
    job = load_settings(env={**cluster, **submitted})
    assert job.metadata_url == "postgresql://job:other@db.internal:5432/meta"  # its own credentials
    assert job.online_store_url == SECRET_ENV["PLATFORM_ONLINE_STORE_URL"]


def test_online_store_errors_mask_the_password() -> None:
    pytest.importorskip("redis")
    from mlplatform.features.online_store import open_online_store

    with pytest.raises(InputError) as info:
        open_online_store("memcached://u:s3cr3t@host:11211")
    assert "u:***@host" in info.value.message and "s3cr3t" not in info.value.message
    with pytest.raises(PlatformError) as info:  # an unreachable store: the environment's fault, exit 1
        open_online_store("redis://:r3d1s@127.0.0.1:1/0")  # nothing listens on port 1
    assert ":***@127.0.0.1:1/0" in info.value.message and "r3d1s" not in info.value.message
    assert not isinstance(info.value, InputError)  # not the user's input (exit 2): exit 1


def test_the_local_cluster_token_file_is_private_from_the_start(tmp_path: Path) -> None:
    from mlplatform.runtime.local import _ensure_token

    settings = load_settings(env={"PLATFORM_HOME": str(tmp_path / "home"),
                                  "RAY_AUTH_TOKEN_PATH": str(tmp_path / "home" / "ray" / "auth_token")})
    old = os.umask(0o022)  # a permissive umask: files would be created world-readable
    try:
        _ensure_token(settings)
        token = settings.auth_token_path
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert len(token.read_text()) == 64
        token.chmod(0o644)  # an existing token left readable is tightened, not rewritten
        before = token.read_text()
        _ensure_token(settings)
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == before
        token.write_text("")  # a crash between creating and writing it: not kept as the token
        _ensure_token(settings)
        assert len(token.read_text()) == 64 and stat.S_IMODE(token.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_an_unreachable_store_is_named_without_its_password(tmp_path: Path) -> None:
    """The error quotes the URL it could not open (MLflow's own message repeats it): the
    user sees which store failed, masked."""
    env = {"PLATFORM_HOME": str(tmp_path / "home"), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
           "PLATFORM_MLFLOW_TRACKING_URI": "http://mlp:s3cr3t@127.0.0.1:1"}
    proc = cli("models", "list", env=env)
    assert proc.returncode == 1
    assert "mlp:***@127.0.0.1:1" in proc.stderr and "s3cr3t" not in proc.stdout + proc.stderr


def test_a_failed_step_is_recorded_and_logged_without_a_password(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What the metadata store keeps and the job log prints (both shown on the dashboard)."""
    from mlplatform import pipeline
    from mlplatform.errors import PlatformError
    from mlplatform.metadata.store import MetadataStore
    from mlplatform.pipeline import StepResult, run_pipeline, step
    from mlplatform.spec import PipelineSpec

    monkeypatch.setattr(pipeline, "_STEPS", {})
    monkeypatch.setattr(pipeline, "_DISCOVERED", True)

    def broken(ctx: object) -> StepResult:
        raise PlatformError("cannot reach postgresql://mlp:s3cr3t@db.internal:5432/meta")

    def buggy(ctx: object) -> StepResult:
        raise RuntimeError("connect to redis://:r3d1s@cache.internal:6379/0 failed")

    spec = PipelineSpec.model_validate({"name": "p", "source": {"path": "/d", "entity_column": "id",
                                                                "timestamp_column": "t"}})
    settings = load_settings(env={"PLATFORM_HOME": str(tmp_path)})
    for name, fn in (("ingest", broken), ("validate", buggy)):
        monkeypatch.setattr(pipeline, "_STEPS", {})
        step(name)(fn)
        lines: list[str] = []
        report = run_pipeline(spec, settings, run_id=f"r-{name}", log=lines.append)
        detail = MetadataStore(settings.metadata_url).run(f"r-{name}")
        assert detail is not None and report.status == "FAILED"
        shown = "\n".join([*lines, report.message, detail.message, detail.steps[0].error or ""])
        assert "***@" in shown and not [p for p in PASSWORDS if p in shown]
