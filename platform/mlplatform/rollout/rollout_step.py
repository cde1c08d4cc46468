"""The `rollout` step: after the gate, the model reaches production the way the spec's
`deploy.rollout` says.

- `direct` (or a first model, which has no champion to be compared with live): the promote
  step made it champion; it is staged beside the live version at weight 0, infra-validated
  through the real replicas, then takes all the traffic; the previous champion stays
  deployed, idle, for an instant rollback.
- `canary`, `ab`, `shadow`: the promote step left the champion alone; this step stages the
  challenger (infra-validated before any traffic), stores the rollout (one active per
  pipeline: a second is refused, naming the first) and starts its runner, a detached Ray
  actor that promotes or rolls back by itself (mlplatform.rollout.runner). The step does
  not wait for it: `platformctl rollout status` follows it.

A run whose model was rejected changes nothing that is served; a run stopped by a schema
break never gets here. Without a `deploy` section nothing is served and the step says so.
"""

from __future__ import annotations

from typing import Any

from mlplatform.artifacts import ChampionChange, Deployment, ModelVersion
from mlplatform.errors import PlatformError
from mlplatform.pipeline import StepContext, StepResult, step
from mlplatform.rollout.state import RolloutState
from mlplatform.serving.client import ServeControl
from mlplatform.serving.deployer import InfraValidationFailed, change, current_config
from mlplatform.spec import PipelineSpec


def challenger_of(ctx: StepContext) -> ModelVersion | None:
    """This run's version that passed the gate but was left to the rollout (not made champion)."""
    promoted = {(c.name, c.version) for c in ctx.upstream(ChampionChange)}
    for mv in ctx.upstream(ModelVersion):
        if mv.passed and (mv.name, mv.version) not in promoted:
            if ctx.services.models.champion(mv.name) not in (None, mv.version):
                return mv
    return None


@step("rollout", consumes=(ModelVersion, ChampionChange), produces=(Deployment,))
def rollout_step(ctx: StepContext) -> StepResult:
    spec = ctx.spec
    if spec.deploy is None:
        return StepResult(message="the spec has no deploy section: nothing is served")
    name = spec.name
    champion = ctx.services.models.champion(name)
    if champion is None:
        return StepResult(message=f"{name} has no champion yet: nothing to serve")
    challenger = challenger_of(ctx) if spec.deploy.rollout.progressive else None
    if challenger is not None:
        return _progressive(ctx, spec, champion, challenger)
    return _direct(ctx, spec, champion)


def _direct(ctx: StepContext, spec: PipelineSpec, champion: str) -> StepResult:
    name = spec.name
    served, _ = current_config(ServeControl(ctx.settings), spec)
    if served.champion == champion and served.weights.get(champion) == 100:
        return StepResult(message=f"already serving {name} v{champion} (100%): nothing to change",
                          summary={"served": champion, "changed": False, "strategy": "direct"})
    result = change(ctx.services, spec, weights={champion: 100}, champion=champion, run_id=ctx.run_id)
    ctx.log(result.message)
    return StepResult(outputs=[result.artifact()], inputs=ctx.upstream(ModelVersion),
                      summary={"served": champion, "changed": True, "strategy": "direct",
                               "weights": result.weights, "infra": [c.model_dump() for c in result.infra],
                               "seconds": result.seconds},
                      message=result.message)


def _progressive(ctx: StepContext, spec: PipelineSpec, champion: str, mv: ModelVersion) -> StepResult:
    from mlplatform.metadata.schema import utcnow
    from mlplatform.rollout import apply, controller
    from mlplatform.rollout.runner import ensure_runner
    from mlplatform.rollout.store import RolloutStore

    assert spec.deploy is not None
    plan = spec.deploy.rollout
    store = RolloutStore(ctx.metadata)
    rollout_id = f"{spec.name}-v{mv.version}-{ctx.run_id}"[:64]
    existing = store.get(rollout_id)
    if existing is None:
        # Serve the champion first if it is not (a first deploy of this pipeline, or after `serve down`).
        served, _ = current_config(ServeControl(ctx.settings), spec)
        if served.weights.get(champion, 0) == 0:
            change(ctx.services, spec, weights={champion: 100}, champion=champion, run_id=ctx.run_id)
        state = controller.start(plan, rollout_id=rollout_id, pipeline=spec.name, model_name=mv.name,
                                 champion=champion, challenger=mv.version, run_id=ctx.run_id,
                                 now=utcnow())
        state = state.model_copy(update={"service": spec.model.feature_service or "all_features"})
        existing = store.create(state)  # RolloutInProgress (an InputError) names the active one
    state: RolloutState = existing
    if state.active:
        try:
            result = apply.reconcile(ctx.services, spec, state)
        except InfraValidationFailed as exc:
            state = _give_up(store, state, f"infra validation failed: {exc}")
            apply.finished(ctx.services, state)
            store.save(state.model_copy(update={"settled": True}))
            raise PlatformError(f"v{mv.version} was not rolled out: {exc}") from None
        if result is not None and state.revision == 1:
            # The first window starts when the weights were sent, not when the rollout was recorded
            # (staging and infra validation took a while): its first check judges one interval of
            # the challenger's traffic, and a bad one is caught within failure_limit intervals.
            state = store.save(state.model_copy(update={"step_started_at": result.applied_at or utcnow()}))
        ensure_runner(ctx.settings, spec.name)
    else:
        result = None
    message = (f"{plan.strategy} rollout {state.id}: v{state.challenger} at {state.weight}% against "
               f"champion v{state.champion} ({state.phase}); follow it: platformctl rollout status "
               f"{spec.name}") if state.active else f"rollout {state.id} already {state.status}"
    ctx.log(message)
    summary: dict[str, Any] = {"rollout_id": state.id, "strategy": plan.strategy, "status": state.status,
                               "champion": state.champion, "challenger": state.challenger,
                               "weight": state.weight, "phase": state.phase}
    return StepResult(outputs=[result.artifact()] if result else [], inputs=[mv], summary=summary,
                      message=message)


def _give_up(store: Any, state: RolloutState, reason: str) -> RolloutState:
    from mlplatform.metadata.schema import utcnow
    from mlplatform.rollout.state import Event

    now = utcnow()
    ended = state.model_copy(update={
        "status": "rolled_back", "phase": "done", "weight": 0, "reason": reason,
        "timeline": [*state.timeline, Event(at=now, action="rollback", phase="done", weight=0,
                                            reasons=[reason])]})
    return store.save(ended)
