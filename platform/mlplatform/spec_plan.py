"""What applying a spec and its code would change, against what the platform last ran
(`platformctl plan`, as `terraform plan` and `feast plan` do).

A pipeline run that trained records a snapshot of the spec it ran (the spec as loaded, its
schema file read in, and each feature view's version: a hash of the view's definition and of
its transformation's source, mlplatform.features.definitions), when it ends successfully: a
run that failed, or stopped before training ("nothing new to ingest", a schema break), did not
put a changed feature view or model into effect, so the next plan still reports the change.
`platformctl apply` records one too for changes that need no run (mlplatform.spec_apply). A
plan compares the spec on disk, with the code it names, to the newest snapshot and says what
differs and what that causes:

- a feature view whose definition or transformation changed has a new version: its
  features must be computed again (a backfill of the offline store) and the model retrained
  on them;
- the model section (estimator, search space, metric, features used) changed: a retraining;
- the schema changed: columns added or dropped, constraints changed (hard, which stop a
  batch, or soft, which are reported as a shift): the next batch is validated against it;
- the evaluation section (thresholds, slices): the gate of the next run uses it;
- deploy: the next rollout serves with it; triggers: the watcher must be restarted;
- anything else (source, validation, monitoring, execution): from the next run.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlplatform.metadata.store import MetadataStore
from mlplatform.spec import PipelineSpec

SNAPSHOT_KEY = "spec_snapshot"  # the run property that holds it
TRAIN_STEP = "train"

Area = Literal["features", "schema", "model", "evaluation", "deploy", "triggers", "other"]
EffectKind = Literal["backfill", "retraining", "next_run", "rollout", "watcher"]


class SpecSnapshot(BaseModel):
    """What a run ran: recorded with the run (a run property), compared by a plan."""

    spec: dict[str, Any]
    view_versions: dict[str, str] = Field(default_factory=dict)


class Change(BaseModel):
    area: Area
    path: str = Field(description="Where in the spec, e.g. model.estimator or features.views.activity")
    kind: Literal["added", "removed", "changed"]
    before: Any = None
    after: Any = None
    detail: str = ""


class Effect(BaseModel):
    kind: EffectKind
    detail: str


class SpecPlan(BaseModel):
    pipeline: str
    baseline: str | None = Field(description="The run whose spec this plan compares with; None when "
                                 "the pipeline never ran (everything is new)")
    changes: list[Change]
    effects: list[Effect]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def snapshot(spec: PipelineSpec) -> SpecSnapshot:
    """The spec as a run records it. Resolving the views imports their transformations (the
    spec check has done so already), so a change of their source changes the versions."""
    from mlplatform.features.definitions import resolve_views

    return SpecSnapshot(spec=spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                        view_versions={n: v.version for n, v in resolve_views(spec).items()})


def applies(step_status: dict[str, str]) -> bool:
    """Whether a successful run put its spec into effect: it trained (its features and model
    are the spec's), whatever the gate then decided; a run stopped before training did not."""
    return step_status.get(TRAIN_STEP) in ("COMPLETE", "RESUMED")


def recorded(store: MetadataStore, pipeline: str) -> tuple[str, SpecSnapshot] | None:
    """The newest run of the pipeline that recorded a snapshot: (run id, snapshot)."""
    found = store.newest_run_property(pipeline, SNAPSHOT_KEY)
    return None if found is None else (found[0], SpecSnapshot.model_validate(found[1]))


def _leaves(a: Any, b: Any, path: str) -> list[tuple[str, Any, Any]]:
    """The paths where two JSON values differ: dicts key by key, anything else whole."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(a) | set(b), key=str):
            out += _leaves(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) else [(path, a, b)]


def _kind(before: Any, after: Any) -> Literal["added", "removed", "changed"]:
    return "added" if before is None else "removed" if after is None else "changed"


def _view_changes(old: SpecSnapshot, new: SpecSnapshot) -> list[Change]:
    out = []
    for name in sorted(set(old.view_versions) | set(new.view_versions)):
        before, after = old.view_versions.get(name), new.view_versions.get(name)
        if before != after:
            kind = _kind(before, after)
            what = {"added": "a new view", "removed": "the view is gone",
                    "changed": "its definition or transformation changed"}[kind]
            out.append(Change(area="features", path=f"features.views.{name}", kind=kind, before=before,
                              after=after, detail=f"version {before or '-'} -> {after or '-'}: {what}"))
    return out


def _schema_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Change]:
    """Per column: added, dropped, or which constraints changed and whether each is hard."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [Change(area="schema", path="schema", kind=_kind(old, new),
                                             before=old, after=new, detail="the schema as a whole")]
    cols_old = {c["name"]: c for c in old.get("columns", [])}
    cols_new = {c["name"]: c for c in new.get("columns", [])}
    out = []
    for name in [*cols_old, *(c for c in cols_new if c not in cols_old)]:
        a, b = cols_old.get(name), cols_new.get(name)
        if a is None or b is None:
            out.append(Change(area="schema", path=f"schema.columns.{name}", kind=_kind(a, b), before=a,
                              after=b, detail="column added" if a is None else "column dropped"))
            continue
        soft = set(b.get("soft") or [])
        for path, x, y in _leaves(a, b, ""):
            field = path.split(".")[0]
            detail = ("which constraints are soft (one no longer listed is enforced)" if field == "soft"
                      else f"{field} (soft: reported as a shift)" if field in soft
                      else f"{field} (hard: a batch that breaks it stops)")
            out.append(Change(area="schema", path=f"schema.columns.{name}.{path}", kind=_kind(x, y),
                              before=x, after=y, detail=detail))
    rest_old = {k: v for k, v in old.items() if k != "columns"}
    rest_new = {k: v for k, v in new.items() if k != "columns"}
    out += [Change(area="schema", path=f"schema.{p}", kind=_kind(x, y), before=x, after=y)
            for p, x, y in _leaves(rest_old, rest_new, "")]
    return out


_AREAS: dict[str, Area] = {"model": "model", "evaluation": "evaluation", "deploy": "deploy",
                           "triggers": "triggers"}


def diff(old: SpecSnapshot, new: SpecSnapshot) -> list[Change]:
    changes = _view_changes(old, new)
    changes += _schema_changes(old.spec.get("schema"), new.spec.get("schema"))
    a = {k: v for k, v in old.spec.items() if k != "schema"}
    b = {k: v for k, v in new.spec.items() if k != "schema"}
    for path, x, y in _leaves(a, b, ""):
        top = path.split(".")[0]
        if path.startswith("features.views"):
            continue  # the views' versions above say it, with their transformations
        area: Area = "model" if path.startswith("features.services") else _AREAS.get(top, "other")
        changes.append(Change(area=area, path=path, kind=_kind(x, y), before=x, after=y))
    return changes


def effects(changes: list[Change], spec: PipelineSpec) -> list[Effect]:
    """What the changes cause, each once, in the order they would happen."""
    areas = {c.area for c in changes}
    out: list[Effect] = []
    views = [c.path.rsplit(".", 1)[1] for c in changes if c.area == "features" and c.kind != "removed"]
    if views:
        out.append(Effect(kind="backfill", detail=f"compute feature view(s) {', '.join(views)} again at "
                          "their new version over the training window (the offline store)"))
    if areas & {"features", "model"}:
        why = sorted({c.path for c in changes if c.area in ("features", "model")})
        out.append(Effect(kind="retraining", detail=f"a retraining run: {', '.join(why)[:300]}"))
    if "schema" in areas:
        out.append(Effect(kind="next_run", detail="the next batch is validated against the new schema"))
    if "evaluation" in areas:
        out.append(Effect(kind="next_run", detail="the next run's gate uses the new evaluation settings"))
    if "deploy" in areas:
        what = "the next rollout serves with the new deploy settings" if spec.deploy is not None \
            else "the deploy section is gone: nothing new is served"
        out.append(Effect(kind="rollout", detail=what))
    if "triggers" in areas:
        out.append(Effect(kind="watcher", detail="restart `platformctl watch` for the new triggers"))
    if "other" in areas:
        paths = sorted({c.path.split(".")[0] for c in changes if c.area == "other"})
        out.append(Effect(kind="next_run", detail=f"{', '.join(paths)}: from the next run"))
    return out


def plan(spec: PipelineSpec, store: MetadataStore) -> SpecPlan:
    new = snapshot(spec)
    found = recorded(store, spec.name)
    if found is None:
        changes = [Change(area="other", path=spec.name, kind="added",
                          detail="the pipeline never ran: its first run ingests, trains and gates")]
        return SpecPlan(pipeline=spec.name, baseline=None, changes=changes,
                        effects=[Effect(kind="retraining", detail="the first run")])
    run_id, old = found
    changes = diff(old, new)
    return SpecPlan(pipeline=spec.name, baseline=f"run {run_id}", changes=changes,
                    effects=effects(changes, spec))
