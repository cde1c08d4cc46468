"""The `register` and `promote` steps through the real runner (run_pipeline with
`only=["register", "promote"]` on a run whose train and evaluate steps completed), on real
SQLite and MLflow, no Ray. A step killed at each point of its work and resumed leaves one
version per MLflow run and a consistent champion (record, history, alias); a champion that
moved after evaluation is not overwritten. "Killed" is an exception raised from the
function at that point: a crash cannot be caused for real in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlplatform.artifacts import ChampionChange
from mlplatform.metadata.store import MetadataStore
from mlplatform.models.registry import CHALLENGER, CHAMPION, ModelRegistry
from mlplatform.pipeline import run_pipeline
from mlplatform.services import Services
from tests.champion_helpers import (
    SPEC,
    evaluation,
    quick_home,
    record_trained_and_evaluated,
    registered_version,
    trained_model,
)

STEPS = ["register", "promote"]


class Killed(Exception):
    pass


@pytest.fixture
def services(tmp_path: Path) -> Services:
    return Services(quick_home(tmp_path / "home"))


def _summaries(store: MetadataStore, run_id: str) -> dict[str, Any]:
    detail = store.run(run_id)
    assert detail is not None
    return {s.step: s.summary for s in detail.steps if s.status == "COMPLETE"}


def _consistent(services: Services, name: str) -> str | None:
    """Record, history and alias agree; returns the champion."""
    reg, store = services.models, services.metadata
    record = store.champion(name)
    history = store.champion_history(name)
    for before, after in zip(history, history[1:], strict=False):
        assert after.from_version == before.to_version
    if record is None:
        assert history == [] and reg.alias(name, CHAMPION) is None
        return None
    assert history[-1].id == record.change.id and history[-1].to_version == record.version
    assert reg.alias(name, CHAMPION) == record.version
    return record.version


# Where a step dies: (what to patch, call the real one first?)
FAULTS = {
    "register: before the version is created": (ModelRegistry, "register", False),
    "register: after the version is created": (ModelRegistry, "register", True),
    "register: after the challenger alias": (ModelRegistry, "set_challenger", True),
    "promote: before the compare-and-set": (MetadataStore, "set_champion", False),
    "promote: after the record moved, before the alias": (MetadataStore, "set_champion", True),
    "promote: after the record and the alias moved": (ModelRegistry, "set_champion", True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_step_killed_at_each_point_and_resumed(services: Services, monkeypatch: pytest.MonkeyPatch,
                                                 fault: str) -> None:
    store, reg = services.metadata, services.models
    first = registered_version(services, "p", 0)
    reg.promote("p", first.version)  # v1 is champion
    trained = trained_model(services, "p", 1)
    record_trained_and_evaluated(services, "r2", [trained],
                                 [evaluation(trained, "r2", passed=True, champion_version="1")])

    owner, attr, after = FAULTS[fault]
    real = getattr(owner, attr)
    armed = {"on": True}

    def dying(*args: Any, **kwargs: Any) -> Any:
        if not armed["on"]:
            return real(*args, **kwargs)
        armed["on"] = False
        if after:
            real(*args, **kwargs)
        raise Killed(fault)

    monkeypatch.setattr(owner, attr, dying)
    crashed = run_pipeline(SPEC, services, run_id="r2", only=STEPS, log=lambda m: None)
    assert crashed.status == "FAILED" and "Killed" in crashed.message
    assert not armed["on"], "the fault point was never reached"

    resumed = run_pipeline(SPEC, services, run_id="r2", only=STEPS, log=lambda m: None)
    assert resumed.status == "SUCCEEDED", resumed.message

    mine = reg.client.search_model_versions(f"run_id = '{trained.mlflow_run_id}'")
    assert [str(mv.version) for mv in mine] == ["2"]  # one version per MLflow run, whatever the crash
    assert [v.version for v in reg.versions("p")] == ["1", "2"]
    assert _consistent(services, "p") == "2"
    assert [(c.from_version, c.to_version, c.run_id) for c in store.champion_history("p")] == [
        (None, "1", None), ("1", "2", "r2")]
    assert reg.alias("p", CHALLENGER) == "2"
    steps = _summaries(store, "r2")
    assert steps["register"]["p"]["version"] == "2" and steps["register"]["p"]["passed"] is True
    promoted = steps["promote"]["p"]
    assert (promoted["promoted"], promoted["champion"], promoted["previous_champion"]) == (True, "2", "1")
    changes = store.run_outputs("r2", ChampionChange)
    assert [(c.version, c.previous_version, c.run_id) for c in changes] == [("2", "1", "r2")]


def test_the_first_model_becomes_champion(services: Services) -> None:
    trained = trained_model(services, "p", 0)
    record_trained_and_evaluated(services, "r1", [trained],
                                 [evaluation(trained, "r1", passed=True, champion_version=None)])
    report = run_pipeline(SPEC, services, run_id="r1", only=STEPS, log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    assert _consistent(services, "p") == "1"
    assert "p v1: now champion (was (none))" in report.steps[-1].message
    [change] = services.metadata.champion_history("p")
    assert change.reason == "promoted by run r1: passed the gate against (none)"  # promote wrote it


def test_a_version_promoted_by_hand_before_the_step_resumed_is_already_champion(
        services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """The promote step died before its compare-and-set; meanwhile a person promoted this
    very version (`platformctl models promote`). Resumed, the step says it is already
    champion, by hand, and changes nothing: not "the champion changed ... stays challenger"."""
    reg, store = services.models, services.metadata
    reg.promote("p", registered_version(services, "p", 0).version)
    trained = trained_model(services, "p", 1)
    record_trained_and_evaluated(services, "r2", [trained],
                                 [evaluation(trained, "r2", passed=True, champion_version="1")])
    real = MetadataStore.set_champion

    def dying(*args: Any, **kwargs: Any) -> Any:
        raise Killed("promote: before the compare-and-set")

    monkeypatch.setattr(MetadataStore, "set_champion", dying)
    assert run_pipeline(SPEC, services, run_id="r2", only=STEPS, log=lambda m: None).status == "FAILED"
    monkeypatch.setattr(MetadataStore, "set_champion", real)
    by_hand, _ = reg.promote("p", "2", actor="alice@desk")
    resumed = run_pipeline(SPEC, services, run_id="r2", only=STEPS, log=lambda m: None)
    assert resumed.status == "SUCCEEDED", resumed.message
    promote = _summaries(store, "r2")["promote"]["p"]
    assert promote == {"version": "2", "promoted": False, "champion": "2", "previous_champion": "2",
                       "reason": f"already champion: v2 was made champion by hand (change {by_hand.id} by "
                                 "alice@desk) after this model was evaluated against v1; this step changed "
                                 "nothing"}
    assert "stays registered" not in resumed.steps[-1].message
    assert "p v2: already champion" in resumed.steps[-1].message
    assert store.run_outputs("r2", ChampionChange) == []  # the change is not this run's
    assert _consistent(services, "p") == "2"
    assert [(c.from_version, c.to_version, c.action) for c in store.champion_history("p")] == [
        (None, "1", "manual"), ("1", "2", "manual")]


def test_a_champion_that_moved_after_evaluation_is_not_overwritten(services: Services) -> None:
    """Two runs evaluated against v1; the other promoted first. This run's model is
    registered (challenger) but not promoted; the run succeeds and says why."""
    reg, store = services.models, services.metadata
    reg.promote("p", registered_version(services, "p", 0).version)
    mine = trained_model(services, "p", 1)
    record_trained_and_evaluated(services, "mine", [mine],
                                 [evaluation(mine, "mine", passed=True, champion_version="1")])
    theirs = trained_model(services, "p", 2)
    record_trained_and_evaluated(services, "theirs", [theirs],
                                 [evaluation(theirs, "theirs", passed=True, champion_version="1")])
    assert run_pipeline(SPEC, services, run_id="theirs", only=STEPS, log=lambda m: None).status == "SUCCEEDED"
    report = run_pipeline(SPEC, services, run_id="mine", only=STEPS, log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    promote = _summaries(store, "mine")["promote"]["p"]
    assert promote["promoted"] is False and promote["champion"] == "2" and promote["version"] == "3"
    assert "the champion changed from v1 to v2 after this model was evaluated" in promote["reason"]
    assert _consistent(services, "p") == "2"
    assert [(c.from_version, c.to_version) for c in store.champion_history("p")] == [(None, "1"), ("1", "2")]
    v3 = reg.version("p", "3")
    assert v3.tags["gate.decision"] == "passed" and CHALLENGER in v3.aliases and CHAMPION not in v3.aliases


def test_a_rejected_model_is_registered_and_the_run_ends_there(services: Services) -> None:
    reg, store = services.models, services.metadata
    reg.promote("p", registered_version(services, "p", 0).version)
    trained = trained_model(services, "p", 1)
    record_trained_and_evaluated(services, "r2", [trained],
                                 [evaluation(trained, "r2", passed=False, champion_version="1")])
    report = run_pipeline(SPEC, services, run_id="r2", only=STEPS, log=lambda m: None)
    assert report.status == "SUCCEEDED"
    assert [(s.step, s.status) for s in report.steps] == [("register", "COMPLETE"), ("promote", "SKIPPED")]
    assert "rejected by the gate, champion v1 stays" in report.message
    register = _summaries(store, "r2")["register"]["p"]
    assert register == {"version": "2", "passed": False, "reason": "rejected: roc_auc 0.5 < 0.6",
                        "created": True, "champion": "1", "previous_champion": "1"}
    assert reg.version("p", "2").tags["gate.decision"] == "rejected"
    assert _consistent(services, "p") == "1" and reg.alias("p", CHALLENGER) is None
