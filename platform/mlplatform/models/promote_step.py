"""The `promote` step: a registered version that passed the gate becomes champion, by
compare-and-set against the champion the evaluate step compared it with.

The champion is a row of the metadata store (mlplatform.metadata.champion); MLflow's
`champion` alias mirrors it. If another run (or a person) moved the champion after this
model was evaluated, the compare-and-set fails: this model's win over the old champion
says nothing about the new one, so it is not promoted. The run still succeeds, saying
why; the version stays registered, tagged `gate.decision=passed`, with the `challenger`
alias (until a later passing model takes it), so a person can compare and promote it by
hand (`platformctl models promote`).

Retried after a crash, the step finds its own change (the champion row already is this
version, set by this run) and writes nothing new; the alias is mirrored again. If a person
made this very version champion before the step ran or resumed, it is reported as already
champion with promoted: false: `promoted` says this step made the change (and so produced a
champion-change artifact), and it did not; `champion` says who is champion.

With a progressive rollout in the spec (`deploy.rollout.strategy` canary, ab or shadow) a
version that passed against a champion is not promoted here: the `rollout` step puts it
in front of live traffic and the rollout promotes it or rolls it back. A first model
(no champion to compare with live) is promoted here as before.

Summary per model: version, promoted (bool), champion (after this step), previous_champion
(before it), reason, change_id (the champion history row, when promoted).
"""

from __future__ import annotations

from typing import Any

from mlplatform.artifacts import ChampionChange, Evaluation, ModelVersion
from mlplatform.errors import PlatformError
from mlplatform.metadata.champion import ChampionConflict, ChampionEvent
from mlplatform.pipeline import StepContext, StepResult, step


def _v(version: str | None) -> str:
    return f"v{version}" if version else "(none)"


# How a change someone else made came about, for the step's message.
_HOW = {"manual": "by hand", "rollback": "by a rollback", "adopt": "by adoption",
        "promote": "by another run's promotion"}


def _change(mv: ModelVersion, change: ChampionEvent) -> ChampionChange:
    return ChampionChange(uri=f"champion://{mv.name}/{change.id}", name=mv.name, version=change.to_version,
                          previous_version=change.from_version, change_id=change.id, run_id=change.run_id,
                          segment=mv.segment)


def _not_promoted(mv: ModelVersion, champion: str | None, reason: str) -> dict[str, Any]:
    return {"version": mv.version, "promoted": False, "champion": champion,
            "previous_champion": champion, "reason": reason}


@step("promote", consumes=(ModelVersion, Evaluation), produces=(ChampionChange,))
def promote_step(ctx: StepContext) -> StepResult:
    versions = ctx.upstream(ModelVersion)
    if not versions:
        return StepResult(message="no model version registered in this run: nothing to promote")
    decisions = {e.model_name: e for e in ctx.upstream(Evaluation)}
    reg = ctx.services.models
    inputs: list[ModelVersion | Evaluation] = []
    outputs: list[ChampionChange] = []
    lines: list[str] = []
    summary: dict[str, Any] = {}
    for mv in versions:
        name = mv.name
        ev = decisions.get(name)
        if ev is None:
            raise PlatformError(f"model {name}: the evaluate step recorded no decision")
        inputs += [mv, ev]
        if not mv.passed:
            current = reg.champion(name)
            reason = f"rejected by the gate: champion {_v(current)} stays"
            summary[name] = {"version": mv.version, "promoted": False, "champion": current,
                             "previous_champion": current, "reason": reason}
            lines.append(f"{name} v{mv.version}: {reason}")
            continue
        expected = ev.champion_version
        rollout = ctx.spec.deploy.rollout if ctx.spec.deploy is not None else None
        if rollout is not None and rollout.progressive and expected is not None:
            # Live traffic decides, not this step: the rollout step canaries it against the champion.
            reason = (f"passed the gate against {_v(expected)}: handed to the {rollout.strategy} rollout, "
                      "which promotes it if it holds up on live traffic")
            summary[name] = {**_not_promoted(mv, expected, reason), "rollout": rollout.strategy}
            lines.append(f"{name} v{mv.version}: {reason}")
            ctx.log(lines[-1])
            continue
        try:
            change = reg.set_champion(
                name, mv.version, expected=expected, action="promote", run_id=ctx.run_id,
                reason=f"promoted by run {ctx.run_id}: passed the gate against {_v(expected)}")
        except ChampionConflict as exc:
            history = reg.champion_history(name)
            mine = [c for c in history
                    if c.run_id == ctx.run_id and c.to_version == mv.version and c.action == "promote"]
            if not mine and exc.actual == mv.version:
                # Someone else made this very version champion (`models promote` by hand
                # before this step ran or resumed): nothing left to do, and not this step's change.
                made = [c for c in history if c.to_version == mv.version][-1]
                how = _HOW.get(made.action, f"by a {made.action!r} change")
                reason = (f"already champion: v{mv.version} was made champion {how} (change {made.id} by "
                          f"{made.actor}) after this model was evaluated against {_v(expected)}; "
                          "this step changed nothing")
                summary[name] = _not_promoted(mv, mv.version, reason)
                lines.append(f"{name} v{mv.version}: {reason}")
                ctx.log(lines[-1])
                continue
            if not mine:
                reason = (f"not promoted: the champion changed from {_v(expected)} to {_v(exc.actual)} "
                          f"after this model was evaluated against it; v{mv.version} stays registered "
                          "as challenger: retrain, or compare and promote by hand")
                summary[name] = _not_promoted(mv, exc.actual, reason)
                lines.append(f"{name} v{mv.version}: {reason}")
                ctx.log(lines[-1])
                continue
            # An earlier attempt of this run promoted it and a later change replaced it since.
            change = mine[-1].model_copy(update={"written": False})
            reason = (f"promoted by an earlier attempt of this run (change {change.id}); "
                      f"the champion is {_v(exc.actual)} now")
            current = exc.actual
        else:
            again = "" if change.written else " (by an earlier attempt of this run)"
            reason = f"now champion (was {_v(change.from_version)}){again}"
            current = mv.version
        outputs.append(_change(mv, change))
        summary[name] = {"version": mv.version, "promoted": True, "champion": current,
                         "previous_champion": change.from_version, "change_id": change.id,
                         "reason": reason}
        lines.append(f"{name} v{mv.version}: {reason}")
        ctx.log(lines[-1])
    return StepResult(inputs=inputs, outputs=outputs, summary=summary, message="; ".join(lines))
