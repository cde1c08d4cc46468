"""`platformctl plan`'s comparison (mlplatform.spec_plan): each kind of edit a team makes to a
spec, made by hand to the demo spec's recorded snapshot, is reported where it was made, with
what it causes and nothing else."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from mlplatform.spec_loader import load_spec
from mlplatform.spec_plan import SpecSnapshot, diff, effects, snapshot

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    home = tmp_path_factory.mktemp("plan") / "home"
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env={**os.environ, "PLATFORM_HOME": str(home)})
    return spec, snapshot(spec)


def _edit(snap: SpecSnapshot, **view_versions: str) -> SpecSnapshot:
    new = copy.deepcopy(snap)
    new.view_versions.update(view_versions)
    return new


def test_the_same_spec_changes_nothing(demo) -> None:  # noqa: ANN001
    spec, snap = demo
    assert diff(snap, snapshot(spec)) == [] and effects([], spec) == []


def test_a_view_with_a_new_version_is_backfilled_and_retrained(demo) -> None:  # noqa: ANN001
    spec, snap = demo
    changes = diff(snap, _edit(snap, customer_activity="0123456789ab"))
    assert [(c.area, c.path, c.kind, c.before, c.after) for c in changes] == [
        ("features", "features.views.customer_activity", "changed", snap.view_versions["customer_activity"],
         "0123456789ab")]
    found = effects(changes, spec)
    assert [e.kind for e in found] == ["backfill", "retraining"]
    assert "customer_activity" in found[0].detail and "customer_profile" not in found[0].detail


def test_a_model_change_retrains_without_a_backfill(demo) -> None:  # noqa: ANN001
    spec, snap = demo
    new = copy.deepcopy(snap)
    new.spec["model"]["params"] = {**new.spec["model"].get("params", {}), "max_iter": 999}
    new.spec["model"]["search"]["num_samples"] = 9
    changes = diff(snap, new)
    assert {c.path for c in changes} == {"model.params.max_iter", "model.search.num_samples"}
    assert {c.area for c in changes} == {"model"}
    assert [e.kind for e in effects(changes, spec)] == ["retraining"]


def test_schema_columns_added_dropped_and_constraints_hard_or_soft(demo) -> None:  # noqa: ANN001
    spec, snap = demo
    old, new = copy.deepcopy(snap), copy.deepcopy(snap)
    old.spec["schema"] = {"columns": [
        {"name": "age", "type": "int", "min": 18, "max": 99, "soft": ["max"]},
        {"name": "plan", "type": "category", "domain": ["a", "b"]},
        {"name": "gone", "type": "float"}]}
    new.spec["schema"] = {"columns": [
        {"name": "age", "type": "int", "min": 21, "max": 120, "soft": ["max"]},
        {"name": "plan", "type": "category", "domain": ["a", "b", "c"], "soft": ["domain"]},
        {"name": "fresh", "type": "float"}]}
    by_path = {c.path: c for c in diff(old, new)}
    assert set(by_path) == {"schema.columns.age.min", "schema.columns.age.max", "schema.columns.plan.domain",
                            "schema.columns.plan.soft", "schema.columns.gone", "schema.columns.fresh"}
    assert "hard" in by_path["schema.columns.age.min"].detail
    assert "soft" in by_path["schema.columns.age.max"].detail
    assert "soft" in by_path["schema.columns.plan.domain"].detail  # soft in the new spec
    assert by_path["schema.columns.gone"].kind == "removed"
    assert by_path["schema.columns.fresh"].kind == "added"
    assert [e.kind for e in effects(list(by_path.values()), spec)] == ["next_run"]


def test_deploy_triggers_and_the_rest_say_what_they_cause(demo) -> None:  # noqa: ANN001
    spec, snap = demo
    new = copy.deepcopy(snap)
    new.spec["deploy"]["replicas"] = 3
    new.spec["triggers"] = {"schedule": {"every": "1d"}}
    new.spec["evaluation"]["min_improvement"] = 0.5
    new.spec["monitoring"]["live_drift"] = {"window": "2h"}
    changes = diff(snap, new)
    assert {(c.area, c.path.split(".")[0]) for c in changes} == {
        ("deploy", "deploy"), ("triggers", "triggers"), ("evaluation", "evaluation"), ("other", "monitoring")}
    assert [e.kind for e in effects(changes, spec)] == ["next_run", "rollout", "watcher", "next_run"]
