"""The runner's contract: one execution per step, stop at the first failure, resume
after the last completed step. Real SQLite; the steps are small real functions."""

from pathlib import Path

import pytest

from mlplatform import pipeline
from mlplatform.artifacts import ContractError, RejectedBatch, Snapshot, ValidatedBatch
from mlplatform.errors import InputError, PlatformError
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import StepContext, StepResult, run_pipeline, step, step_graph
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec

SPEC = PipelineSpec.model_validate(
    {"name": "p", "source": {"path": "/d", "entity_column": "id", "timestamp_column": "t"}})


class Steps:
    """Declares steps into an empty graph; the loop's order comes from consumes/produces."""

    CHAIN = {"ingest": ((), (Snapshot,)), "validate": ((Snapshot,), (ValidatedBatch, RejectedBatch)),
             "featurize": ((ValidatedBatch,), ())}

    def update(self, **fns) -> None:  # noqa: ANN003
        for name, fn in fns.items():
            consumes, produces = self.CHAIN[name]
            step(name, consumes=consumes, produces=produces)(fn)


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> Steps:
    monkeypatch.setattr(pipeline, "_STEPS", {})
    monkeypatch.setattr(pipeline, "_DISCOVERED", True)
    return Steps()


@pytest.fixture
def settings(tmp_path: Path):  # noqa: ANN201
    return load_settings(env={"PLATFORM_HOME": str(tmp_path)})


def test_failure_stops_the_run_and_resume_skips_completed(steps: Steps, settings) -> None:  # noqa: ANN001
    calls: list[str] = []
    broken = {"validate": True}

    def ingest(ctx: StepContext) -> StepResult:
        calls.append("ingest")
        return StepResult(outputs=[Snapshot(uri="/snap", content_hash="h", rows=3, columns=["a"],
                                            files=["/d/f.parquet"])], message="1 file")

    def validate(ctx: StepContext) -> StepResult:
        calls.append("validate")
        assert [(a.uri, a.rows) for a in ctx.upstream(Snapshot)] == [("/snap", 3)]
        if broken["validate"]:
            raise InputError("column 'age': wrong type")
        return StepResult()

    def featurize(ctx: StepContext) -> StepResult:
        calls.append("featurize")
        return StepResult()

    steps.update(ingest=ingest, validate=validate, featurize=featurize)
    report = run_pipeline(SPEC, settings, run_id="r1", log=lambda m: None)
    assert report.status == "FAILED"
    assert "validate" in report.message and "column 'age': wrong type" in report.message
    assert calls == ["ingest", "validate"]
    store = MetadataStore(settings.metadata_url)
    detail = store.run("r1")
    assert detail is not None and detail.status == "FAILED"
    assert [(s.step, s.status) for s in detail.steps] == [("ingest", "COMPLETE"),
                                                          ("validate", "FAILED")]
    assert detail.steps[1].error == "column 'age': wrong type"

    broken["validate"] = False
    again = run_pipeline(SPEC, settings, run_id="r1", log=lambda m: None)
    assert again.status == "SUCCEEDED"
    assert calls == ["ingest", "validate", "validate", "featurize"]
    assert [s.status for s in again.steps] == ["RESUMED", "COMPLETE", "COMPLETE"]
    assert store.run("r1").status == "SUCCEEDED"  # type: ignore[union-attr]


def test_stop_run_ends_successfully_and_skips_the_rest(steps: Steps, settings) -> None:  # noqa: ANN001
    steps.update(ingest=lambda ctx: StepResult(stop_run=True, message="nothing new"),
                 validate=lambda ctx: pytest.fail("must not run"))
    report = run_pipeline(SPEC, settings, run_id="r", log=lambda m: None)
    assert report.status == "SUCCEEDED" and report.message == "nothing new"
    assert [s.status for s in report.steps] == ["COMPLETE", "SKIPPED"]
    resumed = run_pipeline(SPEC, settings, run_id="r", log=lambda m: None)
    assert [s.status for s in resumed.steps] == ["RESUMED", "SKIPPED"]


def test_unexpected_exception_is_recorded_with_its_traceback(steps: Steps, settings) -> None:  # noqa: ANN001
    def bad(ctx: StepContext) -> StepResult:
        return {}["missing"]  # type: ignore[return-value]

    steps.update(ingest=bad)
    lines: list[str] = []
    report = run_pipeline(SPEC, settings, run_id="r", log=lines.append)
    assert report.status == "FAILED" and "KeyError" in report.message
    detail = MetadataStore(settings.metadata_url).run("r")
    assert detail is not None and "Traceback" in (detail.steps[0].error or "")


def test_only_and_unknown_steps(steps: Steps, settings) -> None:  # noqa: ANN001
    ran: list[str] = []
    steps.update(ingest=lambda ctx: ran.append("ingest") or StepResult(),
                 validate=lambda ctx: ran.append("validate") or StepResult())
    run_pipeline(SPEC, settings, only=["validate"], log=lambda m: None)
    assert ran == ["validate"]
    with pytest.raises(InputError, match="--step train"):
        run_pipeline(SPEC, settings, only=["train"], log=lambda m: None)


def test_run_id_of_another_pipeline_is_refused(steps: Steps, settings) -> None:  # noqa: ANN001
    steps.update(ingest=lambda ctx: StepResult())
    run_pipeline(SPEC, settings, run_id="shared", log=lambda m: None)
    other = SPEC.model_copy(update={"name": "q"})
    with pytest.raises(InputError, match="belongs to another pipeline"):
        run_pipeline(other, settings, run_id="shared", log=lambda m: None)


def test_order_comes_from_declarations_not_from_registration(steps: Steps) -> None:
    noop = lambda ctx: StepResult()  # noqa: E731
    step("featurize", consumes=(ValidatedBatch,))(noop)
    step("validate", consumes=(Snapshot,), produces=(ValidatedBatch,))(noop)
    step("ingest", produces=(Snapshot,))(noop)
    step("report", after=("ingest",))(noop)
    names = [d.name for d in step_graph()]
    assert names.index("ingest") < names.index("validate") < names.index("featurize")
    assert names.index("ingest") < names.index("report")


def test_a_cycle_is_refused(steps: Steps) -> None:
    noop = lambda ctx: StepResult()  # noqa: E731
    step("a", consumes=(Snapshot,), produces=(ValidatedBatch,))(noop)
    step("b", consumes=(ValidatedBatch,), produces=(Snapshot,))(noop)
    with pytest.raises(PlatformError, match="cycle"):
        step_graph()


def test_an_undeclared_output_fails_the_step(steps: Steps, settings) -> None:  # noqa: ANN001
    step("ingest")(lambda ctx: StepResult(outputs=[Snapshot(uri="/s", rows=1, columns=[], files=[])]))
    report = run_pipeline(SPEC, settings, run_id="r", log=lambda m: None)
    assert report.status == "FAILED" and "dataset_snapshot" in report.message


def test_upstream_sees_only_completed_executions(steps: Steps, settings) -> None:  # noqa: ANN001
    """A failed validate keeps its outputs recorded (the rejected batch), but they never feed
    the next step; a later successful attempt's outputs do."""
    seen: list[list[str]] = []
    attempt = {"n": 0}

    def validate(ctx: StepContext) -> StepResult:
        attempt["n"] += 1
        if attempt["n"] == 1:
            return StepResult(outputs=[ValidatedBatch(uri="/bad", rows=1, snapshot="s")], fail="no")
        return StepResult(outputs=[ValidatedBatch(uri="/good", rows=1, snapshot="s")])

    steps.update(ingest=lambda ctx: StepResult(), validate=validate,
                 featurize=lambda ctx: seen.append([a.uri for a in ctx.upstream(ValidatedBatch)])
                 or StepResult())
    assert run_pipeline(SPEC, settings, run_id="r", log=lambda m: None).status == "FAILED"
    assert run_pipeline(SPEC, settings, run_id="r", log=lambda m: None).status == "SUCCEEDED"
    assert seen == [["/good"]]


def test_a_record_that_breaks_the_contract_names_run_step_and_field(steps: Steps, settings) -> None:  # noqa: ANN001
    """An old run's properties that no longer fit: a clear error, never a KeyError."""
    steps.update(ingest=lambda ctx: StepResult(
        outputs=[Snapshot(uri="/snap", rows=3, columns=["a"], files=["f"])]))
    run_pipeline(SPEC, settings, run_id="old", log=lambda m: None)
    store = MetadataStore(settings.metadata_url)
    art = store.artifacts_of_run("old", "ingest")[0]
    with store.session() as s:  # what an older release might have written
        from mlplatform.metadata.store import ArtifactRow

        s.get(ArtifactRow, art.id).properties = {"columns": ["a"], "files": ["f"]}
    with pytest.raises(ContractError, match=r"run old, step ingest.*rows"):
        store.run_outputs("old", Snapshot)
