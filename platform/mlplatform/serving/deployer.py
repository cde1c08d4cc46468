"""Changing what a pipeline serves, safely: new versions are staged at weight 0, infra-
validated through the live replicas, and only then given traffic; a version that fails
never gets any, and the failure is an alert. The previous champion stays deployed at
weight 0 for `keep_previous`, so a rollback is a weight change, not a model load.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from mlplatform.artifacts import Deployment, ModelVersion
from mlplatform.errors import InputError, PlatformError
from mlplatform.monitoring.alerts import raise_alert
from mlplatform.services import Services
from mlplatform.serving.client import AppState, ServeControl
from mlplatform.serving.infra import InfraCheck, validate
from mlplatform.serving.plan import ServingConfig, VersionSlot, store_fingerprint
from mlplatform.spec import PipelineSpec, duration_seconds


class DeployResult(BaseModel):
    pipeline: str
    model_name: str
    generation: int
    champion: str | None
    weights: dict[str, int]
    shadow: str | None = None
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    infra: list[InfraCheck] = Field(default_factory=list)
    replicas: int = 0
    seconds: float = 0.0
    applied_at: dt.datetime | None = Field(None, description="When the final weights were sent (naive "
                                           "UTC): no request could reach them before.")
    message: str

    def artifact(self) -> Deployment:
        """The metadata store's record of this change (the deploy step's output; `serve` commands
        record it themselves)."""
        return Deployment(uri=f"serving://{self.pipeline}/{self.generation}", pipeline=self.pipeline,
                          model_name=self.model_name, generation=self.generation, champion=self.champion,
                          weights=self.weights, shadow=self.shadow, added=self.added,
                          infra=[c.model_dump() for c in self.infra])


class InfraValidationFailed(PlatformError):
    """A new version did not answer like the offline model; it got no traffic."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _sha(services: Services, name: str, version: str) -> str:
    mv = services.metadata.find(ModelVersion, f"models:/{name}/{version}")
    if mv is None or not mv.content_hash:
        raise InputError(f"{name} v{version} is not a version the platform registered (no sha256 "
                         f"recorded); registered versions: platformctl models list {name}")
    return mv.content_hash


def current_config(control: ServeControl, spec: PipelineSpec) -> tuple[ServingConfig, str | None]:
    """The live config to change, and a note when the live application came from another
    metadata store (another PLATFORM_HOME or cluster config deploying the same pipeline name):
    its versions mean nothing in this registry, so the deploy replaces it instead of keeping
    them beside the new ones."""
    mine = store_fingerprint(control.settings)
    state = control.app(spec.name)
    if state is None or state.config is None:
        return ServingConfig(pipeline=spec.name, model_name=spec.name, store=mine), None
    if state.config.store == mine:
        return state.config, None
    live = ", ".join(f"v{s.version}" for s in state.config.versions) or "no versions"
    note = (f"replaced the application {spec.name!r} that served {live} from another metadata "
            f"store (fingerprint {state.config.store})")
    return ServingConfig(pipeline=spec.name, model_name=spec.name, store=mine,
                         generation=state.config.generation), note


def change(services: Services, spec: PipelineSpec, *, weights: dict[str, int] | None = None,
           champion: str | None = None, shadow: str | None = None, clear_shadow: bool = False,
           remove: list[str] | None = None, validate_new: bool = True,
           run_id: str | None = None) -> DeployResult:
    """Move the pipeline's serving config to `weights` (version -> weight, summing to 100).

    `champion`: the version that is champion now (labels its traffic); when it changes, the
    previous champion stays at weight 0 until `deploy.keep_previous` has passed. Versions not
    named keep weight 0 if they were live (and are dropped once idle past their time).
    """
    if spec.deploy is None:
        raise InputError(f"pipeline {spec.name!r} has no deploy section: add `deploy:` to its spec "
                         "to serve it")
    t0 = dt.datetime.now()
    control = ServeControl(services.settings)
    name = spec.name
    cur, replaced = current_config(control, spec)
    weights = dict(weights or {})
    if weights and sum(weights.values()) != 100:
        raise InputError(f"weights must sum to 100, got {sum(weights.values())} "
                         f"({', '.join(f'v{v}={w}' for v, w in weights.items())})")
    if any(w < 0 or w > 100 for w in weights.values()):
        raise InputError(f"weights must be between 0 and 100: {weights}")
    champion = champion or cur.champion
    new_shadow = None if clear_shadow else (shadow or cur.shadow)
    now = _now()
    keep = dt.timedelta(seconds=duration_seconds(spec.deploy.keep_previous))
    slots: dict[str, VersionSlot] = {}
    for s in cur.versions:
        if s.version in (remove or []):
            continue
        slots[s.version] = s  # staging keeps the live weights; the new ones come in step 2
    wanted = set(weights) | ({new_shadow} if new_shadow else set()) | ({champion} if champion else set())
    added = [v for v in sorted(wanted) if v not in slots]
    for v in added:
        slots[v] = VersionSlot(version=v, weight=0, sha256=_sha(services, name, v))
    if not weights:  # only a shadow or removal: keep the live weights
        weights = {s.version: s.weight for s in cur.versions
                   if s.weight > 0 and s.version not in (remove or [])}
        if remove and weights and sum(weights.values()) != 100:
            raise InputError(f"removing {remove} would leave weights {weights}: move the traffic first")
    # 1. Stage the new versions at weight 0 beside the live ones: loaded, answering only pinned
    #    requests, so they can be checked through the real server before they get traffic.
    checks: list[InfraCheck] = []
    generation = cur.generation
    if added:
        generation += 1
        staged = cur.model_copy(update={"versions": list(slots.values()), "generation": generation,
                                        "shadow": cur.shadow if cur.shadow in slots else None})
        if sum(staged.weights.values()) not in (0, 100):  # a removed version held traffic
            staged = staged.model_copy(update={"versions": [v for v in cur.versions] + [
                slots[a] for a in added]})
        state = control.apply(spec, staged)
        failed_load = _load_errors(control, spec.name)
        for v in added:
            if v in failed_load:
                checks.append(InfraCheck(version=v, passed=False, rows=0,
                                         detail=f"failed to load in the replica: {failed_load[v]}"))
            elif validate_new:
                checks.append(validate(services, spec.name, name, v, spec.deploy.infra_validation_rows))
        bad = [c for c in checks if not c.passed]
        if bad:
            for c in bad:
                raise_alert(services, pipeline=name, source="infra", kind="infra_validation",
                            severity="critical", message=f"{name} v{c.version} failed infra validation "
                            f"and gets no traffic: {c.detail}", run_id=run_id, step="rollout",
                            link=f"models:/{name}/{c.version}", details=c.model_dump())
            generation += 1
            control.apply(spec, cur.model_copy(update={"generation": generation}))  # unstage
            raise InfraValidationFailed("; ".join(f"v{c.version}: {c.detail}" for c in bad))
    # 2. Traffic: the new weights in place; a replaced champion stays, idle, for a rollback.
    for v, s in list(slots.items()):
        w = weights.get(v, 0)
        idle_until = s.idle_until
        if w == 0 and v != new_shadow:
            if s.weight > 0 or (cur.weights.get(v, 0) > 0):
                idle_until = now + keep
            elif idle_until is None:
                idle_until = now + keep
            if idle_until <= now and v != champion:  # the champion itself is never dropped
                del slots[v]
                continue
        else:
            idle_until = None
        slots[v] = s.model_copy(update={"weight": w, "idle_until": idle_until})
    missing = sorted(set(weights) - set(slots))
    if missing:
        raise InputError(f"version(s) {missing} are not live")
    generation += 1
    final = ServingConfig(pipeline=spec.name, model_name=name, champion=champion,
                          versions=sorted(slots.values(), key=lambda s: _order(s.version)),
                          shadow=new_shadow if new_shadow in slots else None,
                          shadow_fraction=spec.deploy.shadow_fraction, generation=generation,
                          store=cur.store)
    applied_at = _now()
    state: AppState = control.apply(spec, final)
    removed = sorted(set(cur.weights) - set(final.weights))
    result = DeployResult(pipeline=spec.name, model_name=name, generation=generation, champion=champion,
                          weights=final.weights, shadow=final.shadow, added=added, removed=removed,
                          infra=checks, replicas=state.replicas, applied_at=applied_at,
                          seconds=round((dt.datetime.now() - t0).total_seconds(), 2),
                          message="; ".join(p for p in (_describe(final, added, removed), replaced) if p))
    return result


def _order(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 30, v)


def _describe(cfg: ServingConfig, added: list[str], removed: list[str]) -> str:
    live = ", ".join(f"v{s.version}={s.weight}%" for s in cfg.versions)
    parts = [f"serving {live}"]
    if cfg.shadow:
        parts.append(f"shadow v{cfg.shadow}")
    if added:
        parts.append(f"added {', '.join('v' + v for v in added)} (infra-validated)")
    if removed:
        parts.append(f"removed {', '.join('v' + v for v in removed)}")
    return "; ".join(parts)


def _load_errors(control: ServeControl, pipeline: str) -> dict[str, str]:
    """Versions a replica could not load, from the replicas' /status."""
    from mlplatform.serving.client import ServeClient

    resp = ServeClient(control.settings, pipeline).get("/status")
    if resp.status_code != 200:
        return {}
    return {v["version"]: v["error"] for v in resp.json().get("versions", []) if v.get("error")}
