"""The `train`, `evaluate` and `register` steps of the loop.

train: search + final fit on the run's training set (or, run by hand, the pipeline's
newest one), each model logged to MLflow with its trials as child runs (one writer: this
driver). evaluate: the challenger against the champion on the same holdout. register:
every trained model becomes a model version tagged with its gate decision; a passing one
gets `challenger`, and the `promote` step (mlplatform.models.promote_step) makes it champion
by compare-and-set. A rejected one ends the run: the champion keeps serving.
"""

from __future__ import annotations

import hashlib
import json

from mlplatform.artifacts import Evaluation, ModelVersion, TrainedModel, TrainingSet, ValidatedBatch
from mlplatform.errors import PlatformError
from mlplatform.evaluation.gate import evaluate
from mlplatform.models.registry import ModelRegistry
from mlplatform.pipeline import StepContext, StepResult, step
from mlplatform.training.estimators import check_model
from mlplatform.training.trainer import (
    FitResult,
    code_version,
    newest_training_set,
    placement_for,
    prepare,
    schema_hash,
    train,
)


def training_set_of(ctx: StepContext) -> TrainingSet | None:
    """This run's training set; run by hand (`platformctl train`), the pipeline's newest."""
    found = ctx.upstream(TrainingSet)
    if found:
        return found[0]
    return newest_training_set(ctx.metadata, ctx.spec.name)


def _log_trials(reg: ModelRegistry, pipeline: str, parent: str, m: FitResult) -> None:
    if m.search is None:
        return
    for t in m.search.trials:
        child = reg.start_run(pipeline, f"trial-{t.trial_id}", {"mlplatform.kind": "trial"},
                              parent_run_id=parent)
        reg.log(child, params=t.config, metrics={**t.metrics, "iterations": t.iterations,
                                                 "restored": t.restored},
                tags={"status": t.status, **({"error": t.error} if t.error else {})})
        reg.end_run(child, "FINISHED" if t.status == "TERMINATED" else "FAILED")


@step("train", consumes=(TrainingSet,), produces=(TrainedModel,))
def train_step(ctx: StepContext) -> StepResult:
    art = training_set_of(ctx)
    if art is None:
        return StepResult(message="no training set (the spec has no feature views): nothing to train")
    spec = ctx.spec
    check_model(spec.model, ctx.settings.estimator_modules)  # bad input fails before any cluster work
    prepared = prepare(spec.model, spec.evaluation, art)
    reg = ctx.services.models  # creates the MLflow database before any fan-out
    ctx.log(f"training set {art.uri}: {prepared.rows} rows; "
            f"{len(prepared.train)} model(s) to train")
    ctx.placement = placement_for(spec, prepared, ctx.settings)
    models = train(spec, ctx.settings, prepared, name=ctx.run_id, log=ctx.log, placement=ctx.placement)
    git = code_version()
    snapshots = sorted({n.artifact.content_hash or ""
                        for n in ctx.metadata.lineage(art.id or 0, "upstream", max_depth=1)
                        if n.artifact.kind == ValidatedBatch.kind})
    outputs, lines = [], []
    for m in models:
        X, _ = prepared.train[m.segment or ""]
        tags = {"mlplatform.pipeline": spec.name, "mlplatform.run_id": ctx.run_id,
                "mlplatform.model_name": m.name, "mlplatform.segment": m.segment or "",
                "data.training_set": art.uri, "data.training_set_sha256": art.content_hash or "",
                "data.snapshots": ",".join(h[:16] for h in snapshots),
                "schema.hash": schema_hash(X), "feature_service": art.service,
                "feature_service.version": art.service_hash,
                "code.version": git, "seed": str(spec.model.seed), "estimator": spec.model.estimator}
        run_id = reg.start_run(spec.name, f"{ctx.run_id}{'-' + m.segment if m.segment else ''}", tags)
        params = {**spec.model.params, **m.config, "estimator": spec.model.estimator,
                  "seed": spec.model.seed}
        metrics = {f"holdout_{k}": v for k, v in m.holdout.items()}
        metrics["training_duration_s"] = m.duration_s
        if m.search:
            metrics[f"search_best_{m.search.metric}"] = m.search.best_score
            metrics["search_trials"] = len(m.search.trials)
        reg.log(run_id, params=params, metrics=metrics)
        reg.log_json(run_id, {"features": {c: str(t) for c, t in X.dtypes.items()},
                              "view_versions": art.view_versions}, "schema.json")
        sha = reg.log_model(run_id, m.model, X.head(20))
        _log_trials(reg, spec.name, run_id, m)
        reg.end_run(run_id)
        outputs.append(TrainedModel(
            uri=f"runs:/{run_id}/model", content_hash=sha, model_name=m.name, segment=m.segment,
            mlflow_run_id=run_id, config=m.config, params=params, seed=spec.model.seed,
            estimator=spec.model.estimator, holdout=m.holdout, training_set=art.uri,
            training_set_sha256=art.content_hash, training_set_id=art.id or 0, snapshots=snapshots,
            duration_s=m.duration_s, code_version=git,
            search_best=m.search.best_score if m.search else None,
            model_spec=spec.model.model_dump(mode="json"),
            evaluation_spec=spec.evaluation.model_dump(mode="json")))
        score = m.holdout.get(spec.model.metric)
        lines.append(f"{m.name}: holdout {spec.model.metric} "
                     f"{'n/a' if score is None else f'{score:.4f}'} (MLflow run {run_id[:8]})")
    return StepResult(inputs=[art],
                      outputs=outputs, message="; ".join(lines),
                      summary={"models": [{"name": m.name, "holdout": m.holdout, "config": m.config,
                                           "trials": len(m.search.trials) if m.search else 0}
                                          for m in models]})


def _training_set(ctx: StepContext, art_id: int) -> TrainingSet:
    a = ctx.metadata.get(TrainingSet, art_id)
    if a is None:
        raise PlatformError(f"training set (artifact {art_id}) is missing from the metadata store")
    return a


@step("evaluate", consumes=(TrainedModel,), produces=(Evaluation,))
def evaluate_step(ctx: StepContext) -> StepResult:
    trained = ctx.upstream(TrainedModel)
    if not trained:
        return StepResult(message="no model trained in this run: nothing to evaluate")
    spec = ctx.spec
    reg = ctx.services.models
    source = _training_set(ctx, trained[0].training_set_id)
    prepared = prepare(spec.model, spec.evaluation, source)
    outputs: list[Evaluation] = []
    inputs: list[TrainedModel | ModelVersion] = []
    lines, summary = [], {}
    for art in trained:
        name, seg = art.model_name, art.segment or ""
        challenger = reg.load_run_model(art.mlflow_run_id, art.content_hash or "")
        champ_version = reg.champion(name)  # the metadata row, the truth (the alias mirrors it)
        champion = reg.load(name, champ_version) if champ_version else None
        Xt, yt, test = prepared.test[seg]
        if champion is not None:
            needed = list(getattr(champion, "feature_names_in_", Xt.columns))
            missing = [c for c in needed if c not in test.columns]
            if missing:
                raise PlatformError(f"champion {name} v{champ_version} needs feature(s) {missing} that "
                                    "this training set lacks: compare by hand or promote explicitly")
        decision = evaluate(spec.model, spec.evaluation, challenger, champion, Xt, yt, test, champ_version)
        record = decision.model_dump(mode="json")
        reg.log(art.mlflow_run_id,
                metrics={**{f"eval_{k}": v for k, v in decision.challenger.items()},
                         **{f"champion_{k}": v for k, v in (decision.champion or {}).items()}},
                tags={"gate.decision": "passed" if decision.passed else "rejected",
                      "gate.reason": decision.reason,
                      "gate.champion_version": champ_version or ""})
        reg.log_json(art.mlflow_run_id, record, "evaluation.json")
        inputs.append(art)
        if champ_version:
            champ_art = ctx.metadata.find(ModelVersion, f"models:/{name}/{champ_version}")
            if champ_art:
                inputs.append(champ_art)
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        outputs.append(Evaluation(uri=f"evaluation://{spec.name}/{ctx.run_id}/{name}", content_hash=digest,
                                  model_name=name, model_uri=art.uri, **decision.model_dump()))
        summary[name] = {"passed": decision.passed, "reason": decision.reason,
                         "challenger": decision.challenger, "champion": decision.champion,
                         "champion_version": champ_version}
        lines.append(f"{name}: {decision.reason}")
        ctx.log(f"{name}: {decision.reason}")
    return StepResult(inputs=inputs, outputs=outputs, summary=summary, message="; ".join(lines))


@step("register", consumes=(TrainedModel, Evaluation), produces=(ModelVersion,))
def register_step(ctx: StepContext) -> StepResult:
    """Every trained model becomes a version tagged with its gate decision; a passing one gets
    the `challenger` alias. Who becomes champion is the `promote` step's to decide (by
    compare-and-set). Idempotent: a retried step finds the version its MLflow run already
    made. Summary per model: version, passed, reason, created (False: found from an earlier
    attempt), champion and previous_champion (both: the champion as registered; for a
    rejected model, the one that stays)."""
    trained = ctx.upstream(TrainedModel)
    if not trained:
        return StepResult(message="no model trained in this run: nothing to register")
    decisions = {a.model_name: a for a in ctx.upstream(Evaluation)}
    reg = ctx.services.models
    outputs: list[ModelVersion] = []
    inputs: list[TrainedModel | Evaluation] = []
    lines, summary = [], {}
    any_passed = False
    for art in trained:
        name = art.model_name
        ev = decisions.get(name)
        if ev is None:
            raise PlatformError(f"model {name}: the evaluate step recorded no decision")
        version, created = reg.register(name, art.mlflow_run_id, tags={
            "gate.decision": "passed" if ev.passed else "rejected",
            "gate.reason": ev.reason[:4000],
            "gate.champion_version": ev.champion_version or "",
            "mlplatform.run_id": ctx.run_id, "mlplatform.pipeline": ctx.spec.name,
            "data.training_set_sha256": art.training_set_sha256 or "",
            "seed": str(art.seed), "mlplatform.sha256": art.content_hash or ""})
        again = "" if created else " (registered by an earlier attempt of this run)"
        champion = reg.champion(name)
        if ev.passed:
            any_passed = True
            reg.set_challenger(name, version)
            line = (f"{name} v{version}{again}: passed the gate against "
                    f"{f'v{ev.champion_version}' if ev.champion_version else 'no champion'}: challenger")
        else:
            line = (f"{name} v{version}{again}: rejected by the gate, champion "
                    f"{f'v{champion}' if champion else '(none)'} stays: {ev.reason}")
        inputs += [art, ev]
        outputs.append(ModelVersion(uri=f"models:/{name}/{version}", content_hash=art.content_hash,
                                    name=name, version=version, passed=ev.passed,
                                    mlflow_run_id=art.mlflow_run_id, segment=art.segment,
                                    training_set_id=art.training_set_id))
        summary[name] = {"version": version, "passed": ev.passed, "reason": ev.reason, "created": created,
                         "champion": champion, "previous_champion": champion}
        lines.append(line)
        ctx.log(line)
    return StepResult(inputs=inputs, outputs=outputs, summary=summary, message="; ".join(lines),
                      stop_run=not any_passed)
