"""Can this process reach each configured store? One check per setting, each bounded by
the connect timeouts (settings.CONNECT_TIMEOUT_S), for `platformctl config check` and for
failing early with the setting's name instead of deep inside a step.

The checks connect and read; they never create tables, buckets or files, so a check against a
production store changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from mlplatform import storage
from mlplatform.errors import PlatformError
from mlplatform.redact import redact_text, redact_url
from mlplatform.settings import (
    CONNECT_TIMEOUT_S,
    ENV_VARS,
    STORE_URL_KEYS,
    Settings,
    apply_store_env,
    db_connect_args,
    setting_name,
    with_db_driver,
)

S3_CREDENTIAL_VARS = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"


class StoreCheck(BaseModel):
    setting: str
    variable: str
    value: str  # masked
    source: str
    ok: bool
    detail: str
    seconds: float


def s3_credentials_problem(uri: str) -> str | None:
    """Why an s3:// URI cannot be used by this process, before any request: no credentials
    anywhere in boto's chain (environment, profile, instance role). pyarrow would otherwise
    send unsigned requests and a real S3 answers 'Access Denied' about some object, far from
    the setting. Credentials in the URI itself, or `anonymous=true`, are the user's choice."""
    if not uri.startswith("s3://") or "access_key=" in uri or "anonymous=true" in uri.lower():
        return None
    try:
        import botocore.session
    except ImportError:
        return "boto3 is not installed (pip install 'mlplatform[cluster]')"
    session = botocore.session.get_session()
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    if session.get_credentials() is None:
        return f"no S3 credentials in this environment: set {S3_CREDENTIAL_VARS}"
    return None


def _sqlite_exists(url: str) -> bool:
    path = url.split("///", 1)[-1]
    return path == ":memory:" or Path(path).exists()


def _metadata(settings: Settings) -> str:
    import sqlalchemy
    from sqlalchemy.exc import DBAPIError

    from mlplatform.metadata.store import db_error_reason

    url = settings.metadata_url
    if url.startswith("sqlite") and not _sqlite_exists(url):
        return "SQLite file (created on first use)"
    args = {"timeout": CONNECT_TIMEOUT_S} if url.startswith("sqlite") else db_connect_args(url)
    try:
        engine = sqlalchemy.create_engine(with_db_driver(url), connect_args=args,
                                          poolclass=sqlalchemy.NullPool)
    except ModuleNotFoundError as exc:
        raise PlatformError(f"its database driver is not installed ({exc.name}): "
                            "pip install 'mlplatform[cluster]'") from None
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql(
                "SELECT sqlite_version()" if url.startswith("sqlite") else "SHOW server_version").scalar()
    except DBAPIError as exc:
        raise PlatformError(f"cannot connect: {db_error_reason(exc)}") from None
    finally:
        engine.dispose()
    return f"{engine.dialect.name} {version}"


def _mlflow(settings: Settings) -> str:
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S).raise_for_status()
        except requests.RequestException as exc:
            raise PlatformError(f"tracking server not reachable: {redact_text(str(exc))[:300]}") from None
        return "tracking server answers /health"
    if uri.startswith("sqlite"):
        return "SQLite file (created on first use)"
    from mlplatform.models.registry import _reachable

    _reachable(with_db_driver(uri))  # its message names the setting and the masked URL
    return "database reachable"


def _storage(settings: Settings) -> str:
    uri = settings.storage_uri
    problem = s3_credentials_problem(uri)
    if problem:
        raise PlatformError(problem)
    try:
        fs, path = storage.resolve(uri)
        if uri.startswith("s3://"):
            import pyarrow.fs as pafs

            bucket = path.split("/", 1)[0]
            if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise PlatformError(f"bucket {bucket!r} does not exist")
        fs.get_file_info(path)
    except PlatformError:
        raise
    except OSError as exc:
        raise PlatformError(redact_text(str(exc).splitlines()[0])[:300]) from None
    return type(fs).__name__


def _online(settings: Settings) -> str:
    from mlplatform.features.online_store import open_online_store

    url = settings.online_store_url
    if url.startswith("sqlite") and not _sqlite_exists(url):
        return "SQLite file (created on first use)"
    open_online_store(url).close()
    return "Redis answers PING" if settings.online_store_url.startswith(("redis", "unix")) else "SQLite"


CHECKS: dict[str, Callable[[Settings], str]] = {
    "metadata_url": _metadata, "mlflow_tracking_uri": _mlflow, "storage_uri": _storage,
    "online_store_url": _online,
}


def check_stores(settings: Settings) -> list[StoreCheck]:
    """Every store setting, connected to in turn; each result ok or the reason it is not."""
    apply_store_env(settings)
    results = []
    for key in STORE_URL_KEYS:
        start = time.monotonic()
        try:
            detail, ok = CHECKS[key](settings), True
        except PlatformError as exc:
            detail, ok = exc.message, False
        results.append(StoreCheck(
            setting=key, variable=ENV_VARS[key][0], value=redact_url(getattr(settings, key)),
            source=settings.sources.get(key, "default"), ok=ok, detail=redact_text(detail),
            seconds=round(time.monotonic() - start, 3)))
    return results


def require_storage(settings: Settings) -> None:
    """Fail now, naming the setting, when the storage URI cannot be used from here."""
    problem = s3_credentials_problem(settings.storage_uri)
    if problem:
        raise PlatformError(f"{setting_name('storage_uri')} {redact_url(settings.storage_uri)}: {problem}")
