"""What a pipeline's Serve application should look like: its live versions and their
weights (the `user_config` its ingress replicas apply in place), and the Serve config
that deploys it through the dashboard's REST API.

Weights travel as `user_config` because Serve applies a change of it to the running
replicas (`reconfigure`) without restarting them: re-deploying the same config with new
weights moves traffic with no replica start and no dropped request, which a Python
`serve.run` of a changed application does not do (it replaces the replicas).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlplatform.settings import Settings
from mlplatform.spec import DeploySpec, PipelineSpec

IMPORT_PATH = "serve.app:build"
INGRESS = "ingress"
# The header that pins a request to one live version (testing, infra validation).
VERSION_HEADER = "x-model-version"
# Set by infra validation: its pinned requests are logged as variant `validation`, apart from
# the traffic that A/B statistics and live drift read.
PURPOSE_HEADER = "x-mlplatform-purpose"


class VersionSlot(BaseModel):
    """One live version: its weight (0 = deployed, idle) and the sha256 it must load with."""

    model_config = ConfigDict(extra="forbid")

    version: str
    weight: int = Field(ge=0, le=100)
    sha256: str
    idle_until: dt.datetime | None = Field(None, description="A weight-0 previous champion is "
                                           "removed after this time (kept for an instant rollback).")


class ServingConfig(BaseModel):
    """The ingress replicas' user_config: which versions are live, with what weights."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str
    model_name: str
    champion: str | None = None
    versions: list[VersionSlot] = Field(default_factory=list)
    shadow: str | None = Field(None, description="A version that gets a copy of the traffic; its "
                               "answers are logged, never returned.")
    shadow_fraction: float = Field(1.0, gt=0, le=1)
    generation: int = Field(0, description="Bumped by every change, so a client can tell which "
                            "config a replica has applied.")
    store: str | None = Field(None, description="Which metadata store and registry the versions "
                              "(and their sha256) come from: a fingerprint, never the URLs, which "
                              "may hold passwords and are shown by the Ray dashboard.")

    @model_validator(mode="after")
    def _consistent(self) -> ServingConfig:
        names = [s.version for s in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"versions: a version is listed twice: {names}")
        total = sum(s.weight for s in self.versions)
        if total not in (0, 100):  # 0: staged versions only, nothing routed yet
            shown = ", ".join(f"v{s.version}={s.weight}" for s in self.versions)
            raise ValueError(f"weights must sum to 100, got {total} ({shown})")
        if self.shadow is not None and self.shadow not in names:
            raise ValueError(f"shadow v{self.shadow} is not one of the live versions {names}")
        if self.shadow is not None and self.slot(self.shadow).weight > 0:
            raise ValueError(f"shadow v{self.shadow} has weight {self.slot(self.shadow).weight}: a "
                             "shadow gets a copy of the traffic, never a share of it; set its weight to 0")
        return self

    def slot(self, version: str) -> VersionSlot:
        for s in self.versions:
            if s.version == version:
                return s
        raise KeyError(version)

    @property
    def weights(self) -> dict[str, int]:
        return {s.version: s.weight for s in self.versions}

    def variant(self, version: str) -> str:
        """The name the response and the prediction log give a version's traffic: champion,
        challenger (any other version with weight), shadow, or idle (weight 0: it answers only
        requests pinned to it, logged as `pinned`)."""
        if version == self.shadow:
            return "shadow"
        if version == self.champion:
            return "champion"
        return "challenger" if self.weights.get(version, 0) > 0 else "idle"


def store_fingerprint(settings: Settings) -> str:
    """Tells apart two platforms deploying the same pipeline name onto one cluster: version 3
    of one registry is not version 3 of another, so a config is only extended by a deploy
    from the store it came from."""
    key = f"{settings.metadata_url}\n{settings.mlflow_tracking_uri}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


def ingress_options(deploy: DeploySpec, config: ServingConfig) -> dict[str, Any]:
    """The ingress deployment's Serve options from the spec's `deploy` section.

    The models live inside the ingress replicas rather than in a deployment per version:
    measured on 2 cores (benchmarks/serving.py, LogisticRegression, one JSON row), each
    extra hop between Ray processes (ingress -> model replica) added 5-7 ms at p50 and
    cost about as much CPU as the model itself, for scikit-learn models of a few MB that
    every replica can hold. Scaling is per pipeline, which is what the replicas share.
    """
    options: dict[str, Any] = {
        "name": INGRESS,
        "max_ongoing_requests": deploy.max_ongoing_requests,
        "max_queued_requests": deploy.max_queued_requests,
        # Excess load is shed at once with 503 + Retry-After instead of queueing for seconds.
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
        "ray_actor_options": {"num_cpus": deploy.num_cpus},
        "user_config": config.model_dump(mode="json"),
        "graceful_shutdown_timeout_s": 30,
        "graceful_shutdown_wait_loop_s": 0.5,
        "health_check_period_s": 5,
    }
    if deploy.autoscaling is not None:
        options["autoscaling_config"] = {
            "min_replicas": deploy.autoscaling.min_replicas,
            "max_replicas": deploy.autoscaling.max_replicas,
            "target_ongoing_requests": deploy.autoscaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = deploy.replicas
    if deploy.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = deploy.max_replicas_per_node
    return options


def application_config(spec: PipelineSpec, config: ServingConfig, settings: Settings) -> dict[str, Any]:
    """One entry of the Serve config's `applications`: the pipeline's app at /<pipeline>."""
    if spec.deploy is None:
        raise ValueError(f"pipeline {spec.name!r} has no deploy section")
    return {
        "name": spec.name,
        "route_prefix": f"/{spec.name}",
        "import_path": IMPORT_PATH,
        "args": {"spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)},
        # The replicas open the same stores as the jobs; secrets come from the cluster's own env.
        "runtime_env": {"env_vars": settings.job_env()},
        "deployments": [ingress_options(spec.deploy, config)],
    }
