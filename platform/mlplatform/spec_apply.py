"""`platformctl apply`: a change of the spec or its code becomes what the plan says it causes.

Continuous delivery of pipeline code, as `terraform apply` follows `terraform plan`: the plan
(mlplatform.spec_plan) against the newest recorded spec decides.

- Nothing changed: nothing is done (re-applying is idempotent).
- A retraining is due (a feature view's code or definition, the model section): one run is
  submitted whose cause is `code_change`, its detail the git commit and the changed paths.
  It retrains on the data the pipeline validated already (a feature view with a new version
  has that data's features computed again first); a pipeline that never validated a batch
  gets a full run. That run records the spec it ran, so the next plan compares with it; the
  model then meets the gate and the rollout like any other.
- Other changes (evaluation, deploy, schema, triggers, ...) take effect from the next run:
  the spec is recorded as applied (a run of no steps holding the snapshot, the commit and the
  changes), so `plan` stops reporting them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from mlplatform.artifacts import ValidatedBatch
from mlplatform.metadata.store import MetadataStore
from mlplatform.run_ids import new_run_id
from mlplatform.spec import PipelineSpec
from mlplatform.spec_plan import SNAPSHOT_KEY, SpecPlan, snapshot

CAUSE = "code_change"


class CodeVersion(BaseModel):
    """The commit of the spec's folder when it is in a git work tree (None otherwise)."""

    git_commit: str | None = None
    dirty: bool = False

    def describe(self) -> str:
        if self.git_commit is None:
            return "not a git work tree"
        return f"git {self.git_commit[:12]}" + (" with uncommitted changes" if self.dirty else "")


class ApplyAction(BaseModel):
    """What `apply` does for a plan, decided before anything is submitted."""

    action: Literal["none", "record", "retrain", "full_run"]
    refeaturize: bool = False
    detail: str = ""


def code_version(folder: Path) -> CodeVersion:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=15)
        except (OSError, subprocess.TimeoutExpired):  # no git on this machine: no version to name
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return CodeVersion()
    return CodeVersion(git_commit=commit, dirty=bool(git("status", "--porcelain", "--", ".")))


def decide(plan: SpecPlan, store: MetadataStore) -> ApplyAction:
    if not plan.changed:
        return ApplyAction(action="none", detail="no changes against " + (plan.baseline or "nothing"))
    kinds = {e.kind for e in plan.effects}
    paths = ", ".join(sorted({c.path for c in plan.changes}))[:400]
    if "retraining" not in kinds:
        return ApplyAction(action="record", detail=f"recorded; from the next run: {paths}")
    if plan.baseline is None or not store.outputs_of(ValidatedBatch, pipeline=plan.pipeline, step="validate"):
        return ApplyAction(action="full_run", detail=f"a full run (no validated data to retrain on): {paths}")
    return ApplyAction(action="retrain", refeaturize="backfill" in kinds,
                       detail=f"a retraining run on the validated data: {paths}")


def cause_detail(plan: SpecPlan, code: CodeVersion) -> str:
    paths = ", ".join(sorted({c.path for c in plan.changes}))
    return f"{code.describe()}: {paths}"[:500]


def record_applied(store: MetadataStore, spec: PipelineSpec, plan: SpecPlan, code: CodeVersion) -> str:
    """The spec as applied, for changes that need no run now: a run of no steps holding the
    snapshot `plan` compares with next time. Returns its run id."""
    run_id = new_run_id(spec.name)
    store.start_run(spec.name, run_id, {
        "cause": CAUSE, "cause_detail": cause_detail(plan, code), "steps": [], "applied": True,
        "code_version": code.model_dump(), SNAPSHOT_KEY: snapshot(spec).model_dump(mode="json")})
    store.finish_run(run_id, "SUCCEEDED", f"applied {len(plan.changes)} change(s), no run needed now")
    return run_id
