"""Where things live: PLATFORM_HOME, the Ray address, store URIs.

Values come, in order of precedence, from environment variables, an optional
`platform.yaml` (in the working directory, or the file named by PLATFORM_CONFIG)
and defaults derived from PLATFORM_HOME. Every value remembers where it came from
so that `platformctl config show` can explain the effective configuration.

Two kinds of value never travel with a submitted job (`Settings.job_env`), because the
Ray dashboard shows a job's runtime_env to everyone who can see the cluster and the
submitter is not the operator: the allow-lists of code a spec may name
(`estimator_modules`, `transformation_modules`) and store URLs that carry a password.
A job reads both from its own, the cluster's, environment or PLATFORM_CONFIG file.

The production backends take their secrets the way their own clients do, from the
cluster's environment: PGPASSWORD (or a password in a URL set there), AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY. Only the S3 endpoint (`s3_endpoint_url`, not secret) travels with a
job. Every connection has a timeout (`apply_store_env`), so an unreachable store fails
within seconds instead of hanging a command, a step or a replica.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlplatform.errors import InputError
from mlplatform.redact import has_secret, redact_text, redact_url, url_location

AuthMode = Literal["token", "disabled"]
ProxyLocation = Literal["EveryNode", "HeadOnly", "Disabled"]
Placement = Literal["auto", "local", "cluster"]
_APPLIED_MARK = "_PLATFORM_APPLIED_RAY_AUTH_MODE"

# Environment variable(s) read for each setting, first match wins.
DEFAULT_ESTIMATOR_MODULES = "sklearn,xgboost,lightgbm"
DEFAULT_TRANSFORMATION_MODULES = "jobs"

ENV_VARS: dict[str, tuple[str, ...]] = {
    "home": ("PLATFORM_HOME",),
    "ray_address": ("PLATFORM_RAY_ADDRESS",),
    "metadata_url": ("PLATFORM_METADATA_URL",),
    "mlflow_tracking_uri": ("PLATFORM_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    "storage_uri": ("PLATFORM_STORAGE_URI",),
    "online_store_url": ("PLATFORM_ONLINE_STORE_URL",),
    "estimator_modules": ("PLATFORM_ESTIMATOR_MODULES",),
    "transformation_modules": ("PLATFORM_TRANSFORMATION_MODULES",),
    "ray_auth_mode": ("RAY_AUTH_MODE",),
    "serve_host": ("PLATFORM_SERVE_HOST",),
    "serve_port": ("PLATFORM_SERVE_PORT",),
    "serve_url": ("PLATFORM_SERVE_URL",),
    "serve_proxy_location": ("PLATFORM_SERVE_PROXY_LOCATION",),
    # pyarrow, boto3 and (through MLFLOW_S3_ENDPOINT_URL) MLflow all read AWS_ENDPOINT_URL.
    "s3_endpoint_url": ("PLATFORM_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    "alert_webhook": ("PLATFORM_ALERT_WEBHOOK",),
    "placement": ("PLATFORM_PLACEMENT",),
}
# Where Ray Serve listens; not secret, forwarded to jobs so that the deploy step reaches it.
SERVE_KEYS = ("serve_host", "serve_port", "serve_url", "serve_proxy_location")
# Store URLs a job needs; forwarded to it unless they carry a password (see job_env).
STORE_URL_KEYS = ("metadata_url", "mlflow_tracking_uri", "storage_uri", "online_store_url")
# Seconds a client waits to connect to PostgreSQL (libpq's PGCONNECT_TIMEOUT, which MLflow's
# own engine honours too) and to Redis: an unreachable store is an error within seconds.
CONNECT_TIMEOUT_S = 5
# Set by job_env for a URL left out: the redacted URL the submitter used, so that a job on a
# cluster that lacks the credentials fails naming the setting instead of using another store.
EXPECT_PREFIX = "PLATFORM_EXPECT_"
# mlflow.set_tracking_uri (models/registry.py) also writes MLFLOW_TRACKING_URI into the process's
# environment; the registry notes the value here so that settings built later in the same process
# (another home, a test) do not take the first home's MLflow database for the user's setting.
MLFLOW_SET_MARK = "_PLATFORM_MLFLOW_URI_SET_BY_REGISTRY"


class ConfigFile(BaseModel):
    """The optional platform.yaml: same keys as the settings, all optional."""

    model_config = ConfigDict(extra="forbid")

    home: str | None = None
    ray_address: str | None = None
    metadata_url: str | None = None
    mlflow_tracking_uri: str | None = None
    storage_uri: str | None = None
    online_store_url: str | None = None
    estimator_modules: str | None = None
    transformation_modules: str | None = None
    ray_auth_mode: AuthMode | None = None
    serve_host: str | None = None
    serve_port: int | None = None
    serve_url: str | None = None
    serve_proxy_location: ProxyLocation | None = None
    s3_endpoint_url: str | None = None
    alert_webhook: str | None = None
    placement: Placement | None = None


class Settings(BaseModel):
    """The effective configuration of this process."""

    home: Path
    ray_address: str | None = Field(
        None, description="Ray dashboard / Jobs API address (http://host:8265)."
    )
    metadata_url: str
    mlflow_tracking_uri: str
    storage_uri: str
    online_store_url: str = Field(description="sqlite:///path (default) or redis://host:port/db.")
    estimator_modules: str = Field(
        DEFAULT_ESTIMATOR_MODULES, description="Comma-separated module prefixes a spec's "
        "model.estimator may be imported from (a spec names code that the cluster will run).")
    transformation_modules: str = Field(
        DEFAULT_TRANSFORMATION_MODULES, description="Comma-separated module prefixes a spec's "
        "features.views[].transformation may be imported from.")
    ray_auth_mode: AuthMode
    auth_token_path: Path
    serve_host: str = Field("127.0.0.1", description="Interface Ray Serve's HTTP proxy binds to; "
                            "127.0.0.1 unless configured (0.0.0.0 exposes the models to the network).")
    serve_port: int = Field(8000, description="Ray Serve's HTTP port.")
    serve_url: str = Field(description="Where clients (the CLI, the deploy step's infra validation) "
                           "send HTTP requests: http://<serve_host>:<serve_port> unless configured.")
    serve_proxy_location: ProxyLocation = Field(
        "EveryNode", description="Where Serve runs its HTTP proxies (Serve's proxy_location): EveryNode "
        "(Serve's default: a proxy on each node with replicas), HeadOnly (one entry point; also for "
        "several Ray nodes on one machine, whose proxies would all bind the same port) or Disabled.")
    s3_endpoint_url: str | None = Field(None, description="An S3-compatible server's endpoint "
                                        "(MinIO, moto, ...) for s3:// URIs; unset: AWS.")
    alert_webhook: str | None = Field(None, description="http(s) URL every alert is POSTed to as JSON "
                                      "(monitoring/webhook.py), in the background, retried; unset: none.")
    placement: Placement = Field(
        "auto", description="Where the data steps run when a spec leaves execution.placement at auto "
        "(mlplatform.runtime.placement): auto (by input size), local (the job's process) or cluster.")
    sources: dict[str, str] = Field(default_factory=dict)

    @property
    def cluster_state_path(self) -> Path:
        return self.home / "cluster.json"

    def __repr_args__(self) -> Any:
        # repr() and str() end up in logs and tracebacks: never with a password.
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if isinstance(value, str) else value

    def job_env(self) -> dict[str, str]:
        """Environment a job on the cluster needs to see the same stores.

        Shown on the Ray dashboard, so it holds nothing secret and nothing that decides
        what code may run: a store URL with a password is left out (the job resolves it from
        the cluster's own environment; PLATFORM_EXPECT_<VAR> holds the redacted URL so the job
        can tell it resolved the same store), and so are the allow-lists (the operator's).
        """
        env = {"PLATFORM_HOME": str(self.home)}
        for key in STORE_URL_KEYS:
            var, value = ENV_VARS[key][0], getattr(self, key)
            if has_secret(value):
                env[EXPECT_PREFIX + var.removeprefix("PLATFORM_")] = redact_url(value)
            else:
                env[var] = value
        for key in SERVE_KEYS:
            env[ENV_VARS[key][0]] = str(getattr(self, key))
        if self.s3_endpoint_url and not has_secret(self.s3_endpoint_url):
            env["AWS_ENDPOINT_URL"] = env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        # Jobs and Serve replicas raise alerts too; a webhook URL with credentials in it stays
        # with the cluster's own environment, like a store URL with a password.
        if self.alert_webhook and not has_secret(self.alert_webhook):
            env[ENV_VARS["alert_webhook"][0]] = self.alert_webhook
        env[ENV_VARS["placement"][0]] = self.placement
        return env


def _config_file(env: dict[str, str]) -> tuple[ConfigFile, str | None]:
    path = Path(env.get("PLATFORM_CONFIG", "platform.yaml"))
    if not path.exists():
        if "PLATFORM_CONFIG" in env:
            raise InputError(f"PLATFORM_CONFIG={path}: file not found")
        return ConfigFile(), None
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return ConfigFile.model_validate(data), str(path)
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = redact_text("; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        ))
        raise InputError(f"{path}: {problems}") from None


def _check_expected_stores(values: dict[str, str], sources: dict[str, str], env: dict[str, str]) -> None:
    """In a job: each store whose URL the submitter could not send (it had a password) must
    be the one this process resolved from the cluster's configuration."""
    for key in STORE_URL_KEYS:
        var = ENV_VARS[key][0]
        expected = env.get(EXPECT_PREFIX + var.removeprefix("PLATFORM_"))
        if expected and url_location(expected) != url_location(values[key]):
            raise InputError(
                f"{key}: the submitter uses {expected} but this job resolved {redact_url(values[key])} "
                f"({sources.get(key, 'default')}); credentials never travel with a job: set {var} "
                "in the cluster's environment (or its PLATFORM_CONFIG file)")


def _check_webhook(url: str | None) -> str | None:
    """The alert webhook must be an http(s) URL with a host: anything else would only fail,
    silently, in a background thread the first time an alert is raised."""
    if url is None:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0].rpartition("@")[2]:
        raise InputError(f"{setting_name('alert_webhook')} {redact_url(url)!r}: expected an http:// or "
                         "https:// URL with a host")
    return url


def _local_cluster_address(home: Path) -> str | None:
    state = home / "cluster.json"
    if not state.exists():
        return None
    try:
        return json.loads(state.read_text()).get("dashboard_url")
    except (OSError, ValueError):
        return None


def db_connect_args(url: str) -> dict[str, Any]:
    """The driver arguments every engine on a server database gets: a connect timeout, so that
    an unreachable PostgreSQL is an error within seconds, never a hang (a `connect_timeout` the
    user put in the URL wins)."""
    if url.startswith("postgres") and "connect_timeout" not in url:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def with_db_driver(url: str) -> str:
    """The URL an engine is created from: `postgresql://` (and `postgres://`) name no driver and
    SQLAlchemy would pick psycopg2, which the `cluster` extra does not install; the platform's
    driver is psycopg (3). The setting itself is shown and sent as the user wrote it."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def load_settings(env: dict[str, str] | None = None, *, address: str | None = None) -> Settings:
    """Resolve the settings from the environment, platform.yaml and defaults.

    `address` is an explicit `--address` flag, which beats everything else.
    """
    env = dict(os.environ if env is None else env)
    cfg, cfg_path = _config_file(env)
    sources: dict[str, str] = {}

    def pick(key: str) -> str | None:
        for var in ENV_VARS[key]:
            if env.get(var) and not (var == "MLFLOW_TRACKING_URI" and env[var] == env.get(MLFLOW_SET_MARK)):
                sources[key] = f"env {var}"
                return env[var]
        value = getattr(cfg, key)
        if value is not None:
            sources[key] = f"file {cfg_path}"
            return value
        return None

    home_raw = pick("home")
    if home_raw is None:
        home_raw, sources["home"] = ".platform", "default"
    home = Path(home_raw).expanduser().resolve()

    def with_default(key: str, default: str) -> str:
        value = pick(key)
        if value is None:
            sources[key] = "default (from home)"
            return default
        return value

    ray_address: str | None
    if address:
        ray_address, sources["ray_address"] = address, "flag --address"
    else:
        ray_address = pick("ray_address")
        if ray_address is None:
            ray_address = _local_cluster_address(home)
            if ray_address:
                sources["ray_address"] = f"local cluster ({home / 'cluster.json'})"
            elif env.get("RAY_ADDRESS"):
                ray_address, sources["ray_address"] = env["RAY_ADDRESS"], "env RAY_ADDRESS"
            else:
                sources["ray_address"] = "unset (no local cluster is up)"
    if ray_address and "://" not in ray_address:
        ray_address = f"http://{ray_address}"

    if env.get("RAY_AUTH_MODE") and env.get("RAY_AUTH_MODE") == env.get(_APPLIED_MARK):
        # The value is one this process set itself (apply_ray_auth_env), not the user's:
        # resolve it again, since the cluster may have changed (e.g. `cluster up` ran).
        env.pop("RAY_AUTH_MODE")
    auth_raw = pick("ray_auth_mode")
    if auth_raw is None:
        # Our own local cluster always runs with token auth; for any other cluster
        # the user says so, since Ray would otherwise guess from ~/.ray.
        local = _local_cluster_address(home)
        auth_raw = "token" if local and local == ray_address else "disabled"
        sources["ray_auth_mode"] = "default: token for the local cluster, else disabled"
    if auth_raw not in ("token", "disabled"):
        raise InputError(f"RAY_AUTH_MODE={auth_raw!r}: expected 'token' or 'disabled'")

    token_path = Path(env.get("RAY_AUTH_TOKEN_PATH") or home / "ray" / "auth_token")
    sources["auth_token_path"] = (
        "env RAY_AUTH_TOKEN_PATH" if env.get("RAY_AUTH_TOKEN_PATH") else "default (from home)"
    )
    stores = {
        "metadata_url": with_default("metadata_url", f"sqlite:///{home / 'metadata.db'}"),
        "mlflow_tracking_uri": with_default("mlflow_tracking_uri", f"sqlite:///{home / 'mlflow.db'}"),
        "storage_uri": with_default("storage_uri", str(home / "storage")),
        "online_store_url": with_default("online_store_url", f"sqlite:///{home / 'online.db'}"),
    }
    _check_expected_stores(stores, sources, env)
    serve_host = with_default("serve_host", "127.0.0.1")
    port_raw = with_default("serve_port", "8000")
    try:
        serve_port = int(port_raw)
        if not 0 < serve_port < 65536:
            raise ValueError
    except ValueError:
        raise InputError(f"PLATFORM_SERVE_PORT={port_raw!r}: expected a port number (1-65535)") from None
    connect_host = "127.0.0.1" if serve_host in ("0.0.0.0", "::") else serve_host
    serve_url = with_default("serve_url", f"http://{connect_host}:{serve_port}").rstrip("/")
    proxy = with_default("serve_proxy_location", "EveryNode")
    if proxy not in ("EveryNode", "HeadOnly", "Disabled"):
        raise InputError(f"PLATFORM_SERVE_PROXY_LOCATION={proxy!r}: expected EveryNode, HeadOnly or Disabled")
    return Settings(
        home=home,
        ray_address=ray_address,
        **stores,
        estimator_modules=pick("estimator_modules") or DEFAULT_ESTIMATOR_MODULES,
        transformation_modules=pick("transformation_modules") or DEFAULT_TRANSFORMATION_MODULES,
        ray_auth_mode=auth_raw,  # type: ignore[arg-type]
        auth_token_path=token_path,
        serve_host=serve_host,
        serve_port=serve_port,
        serve_url=serve_url,
        serve_proxy_location=proxy,  # type: ignore[arg-type]
        s3_endpoint_url=pick("s3_endpoint_url"),
        alert_webhook=_check_webhook(pick("alert_webhook")),
        placement=_check_placement(with_default("placement", "auto")),
        sources=sources,
    )


def _check_placement(value: str) -> Placement:
    if value not in ("auto", "local", "cluster"):
        raise InputError(f"PLATFORM_PLACEMENT={value!r}: expected auto, local or cluster")
    return value  # type: ignore[return-value]


def on_allow_list(path: str, modules: str) -> bool:
    """Whether import path `path` lies in one of the comma-separated module prefixes: by
    module, not by text (`sklearnx.Evil` is not under `sklearn`)."""
    prefixes = [m.strip() for m in modules.split(",") if m.strip()]
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def user_cache_dir() -> Path:
    """The platform's folder in the user's cache (XDG): what only saves time, keyed by its inputs
    whatever the home, and safe to delete."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlplatform"


def setting_name(key: str) -> str:
    """How a user sets `key`: `metadata_url (PLATFORM_METADATA_URL)`, for error messages."""
    return f"{key} ({ENV_VARS[key][0]})" if key in ENV_VARS else key


def apply_store_env(settings: Settings) -> None:
    """Make this process's store clients behave as configured: connect timeouts (libpq reads
    PGCONNECT_TIMEOUT; MLflow builds its own engine, so a URL option would not reach it) and
    the S3 endpoint for pyarrow, boto3 and MLflow. Values the user set are kept."""
    os.environ.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT_S))
    if settings.s3_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.s3_endpoint_url)
    elif os.environ.get("AWS_ENDPOINT_URL"):
        os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", os.environ["AWS_ENDPOINT_URL"])


def apply_ray_auth_env(settings: Settings) -> None:
    """Set RAY_AUTH_MODE (and the token path) explicitly in this process.

    Ray 2.60 turns token auth on by itself when ~/.ray/auth_token exists and the
    variable is unset; being explicit keeps behaviour independent of that file.
    Must run before this process first talks to a cluster.
    """
    os.environ["RAY_AUTH_MODE"] = settings.ray_auth_mode
    os.environ[_APPLIED_MARK] = settings.ray_auth_mode
    if settings.ray_auth_mode == "token" and not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(settings.auth_token_path)
