"""The `deploy` step: after `promote`, the champion is what the pipeline serves.

A new champion is staged beside the live version at weight 0, infra-validated through the
real replicas, then takes 100% of the traffic (the rollout issue replaces this with canary
steps); the previous champion stays deployed, idle, for an instant rollback. A run whose
model was rejected changes nothing that is served; a run stopped by a schema break never
gets here. Without a `deploy` section in the spec nothing is served and the step says so.
"""

from __future__ import annotations

from mlplatform.artifacts import ChampionChange, Deployment, ModelVersion
from mlplatform.pipeline import StepContext, StepResult, step
from mlplatform.serving.client import ServeControl
from mlplatform.serving.deployer import change, current_config


@step("deploy", consumes=(ModelVersion, ChampionChange), produces=(Deployment,))
def deploy_step(ctx: StepContext) -> StepResult:
    spec = ctx.spec
    if spec.deploy is None:
        return StepResult(message="the spec has no deploy section: nothing is served")
    name = spec.name
    champion = ctx.services.models.champion(name)
    if champion is None:
        return StepResult(message=f"{name} has no champion yet: nothing to serve")
    served, _ = current_config(ServeControl(ctx.settings), spec)
    if served.champion == champion and served.weights.get(champion) == 100:
        return StepResult(message=f"already serving {name} v{champion} (100%): nothing to change",
                          summary={"served": champion, "changed": False})
    result = change(ctx.services, spec, weights={champion: 100}, champion=champion, run_id=ctx.run_id)
    ctx.log(result.message)
    return StepResult(outputs=[result.artifact()],
                      inputs=ctx.upstream(ModelVersion),
                      summary={"served": champion, "changed": True, "weights": result.weights,
                               "infra": [c.model_dump() for c in result.infra],
                               "seconds": result.seconds},
                      message=result.message)
