"""What a rollout's state means for the world, applied idempotently: the serving weights,
the champion record, the challenger alias, MLflow tags and alerts.

The runner stores each decision first (compare-and-set) and applies it after, and every
check applies the stored state again. So a runner killed between the two (or a cluster
restarted) converges on the next check: nothing is applied that was not stored, and
nothing stored stays unapplied.
"""

from __future__ import annotations

import logging

from mlplatform.errors import PlatformError
from mlplatform.metadata.champion import ChampionConflict
from mlplatform.monitoring.alerts import raise_alert
from mlplatform.rollout.state import RolloutState
from mlplatform.services import Services
from mlplatform.serving.client import ServeControl
from mlplatform.serving.deployer import DeployResult, change
from mlplatform.spec import PipelineSpec

log = logging.getLogger(__name__)


def desired(state: RolloutState) -> tuple[dict[str, int], str, str | None, list[str]]:
    """(weights, champion, shadow, versions to remove) the serving config should have."""
    champ, chall = state.champion, state.challenger
    if state.status == "promoted":
        return {chall: 100}, chall, None, []
    if state.status in ("rolled_back", "aborted"):
        return {champ: 100}, champ, None, [chall]
    if state.phase == "shadow":  # mirrored while it runs; a paused shadow gets nothing
        return {champ: 100}, champ, chall if state.status == "running" else None, []
    w = state.weight
    return ({champ: 100 - w, chall: w} if w < 100 else {chall: 100}), champ, None, []


def reconcile(services: Services, spec: PipelineSpec, state: RolloutState) -> DeployResult | None:
    """Bring the served weights to what `state` says; None when they already are."""
    weights, champion, shadow, remove = desired(state)
    if state.status == "promoted":
        promote(services, state)
    live = ServeControl(services.settings).app(spec.name)
    cfg = live.config if live is not None else None
    if cfg is not None:
        same = ({k: v for k, v in cfg.weights.items() if v} == weights and cfg.champion == champion
                and cfg.shadow == shadow and not (set(remove) & set(cfg.weights)))
        if same:
            return None
    gone = [v for v in remove if cfg is not None and v in cfg.weights]
    return change(services, spec, weights={v: w for v, w in weights.items() if w}, champion=champion,
                  shadow=shadow, clear_shadow=shadow is None, remove=gone, run_id=state.run_id)


def promote(services: Services, state: RolloutState) -> None:
    """The challenger becomes champion by compare-and-set against the champion the rollout
    started from; a person's change in between wins, and the rollout says so."""
    reg = services.models
    try:
        reg.set_champion(state.model_name, state.challenger, expected=state.champion, action="promote",
                         run_id=f"rollout:{state.id}",
                         reason=f"rollout {state.id} ({state.strategy}) passed: {state.reason}")
    except ChampionConflict as exc:
        if exc.actual != state.challenger:
            raise PlatformError(f"rollout {state.id}: cannot promote v{state.challenger}: {exc}") from None


def finished(services: Services, state: RolloutState) -> None:
    """Once a rollout ends: its decision and numbers as MLflow tags on the challenger, the
    challenger alias gone after a rollback, and an alert for anything a person must know."""
    reg = services.models
    last = state.timeline[-1] if state.timeline else None
    tags = {"rollout.id": state.id, "rollout.strategy": state.strategy, "rollout.decision": state.status,
            "rollout.reason": state.reason, "rollout.champion": state.champion}
    if last is not None and last.test is not None:
        t = last.test
        tags.update({"rollout.ab.verdict": t.verdict, "rollout.ab.lift": f"{t.lift}",
                     "rollout.ab.ci": f"[{t.ci_low}, {t.ci_high}]", "rollout.ab.p_value": f"{t.p_value}"})
    try:
        reg.tag_version(state.model_name, state.challenger, tags)
        if state.status in ("rolled_back", "aborted"):
            reg.clear_challenger(state.model_name, state.challenger)
    except Exception as exc:  # noqa: BLE001 - tags are a mirror; the store holds the decision
        log.warning("rollout %s: MLflow tags not written: %s", state.id, exc)


def alert(services: Services, state: RolloutState) -> None:
    """Rollbacks are critical, pauses a warning (a person must resume or abort), promotions info."""
    severity = {"rolled_back": "critical", "paused": "warning",
                "aborted": "warning"}.get(state.status, "info")
    what = {"rolled_back": "rolled back", "paused": "paused", "promoted": "promoted",
            "aborted": "aborted"}.get(state.status, state.status)
    last = state.timeline[-1] if state.timeline else None
    raise_alert(
        services, pipeline=state.pipeline, source="guardrail", kind=f"rollout_{state.status}",
        severity=severity,  # type: ignore[arg-type]
        message=f"{state.model_name} v{state.challenger} {what} ({state.strategy} rollout {state.id} "
        f"against v{state.champion}): {state.reason}", run_id=state.run_id, step="rollout",
        link=f"rollout:{state.id}", details=last.model_dump(mode="json") if last else {})


def abort(services: Services, state: RolloutState, *, by: str, reason: str,
          serve: bool = True) -> RolloutState:
    """End a rollout by hand (a person, the demo, `serve down`): the abort is stored first
    (compare-and-set), then its tags and alert; with `serve`, the champion takes all the
    traffic back, which needs the cluster (ClusterUnreachable then, the abort already recorded
    and its controller applying it once the cluster is back). Returns the settled state."""
    from mlplatform.metadata.schema import utcnow
    from mlplatform.rollout import controller
    from mlplatform.rollout.store import RolloutConflict, RolloutStore

    store = RolloutStore(services.metadata)
    if state.active:
        state = store.save(controller.abort(state, by=by, reason=reason, now=utcnow()))
    finished(services, state)
    alert(services, state)
    if serve:
        spec = ServeControl(services.settings).deployed_spec(state.pipeline)
        if spec is not None:
            reconcile(services, spec, state)
    try:
        return store.save(state.model_copy(update={"settled": True}))
    except RolloutConflict:  # its controller settled it meanwhile
        return store.get(state.id) or state

