"""The runner's contract: one execution per step, stop at the first failure, resume
after the last completed step. Real SQLite; the steps are small real functions."""

from pathlib import Path

import pytest

from mlplatform import pipeline
from mlplatform.errors import InputError
from mlplatform.pipeline import ArtifactOut, StepContext, StepResult, run_pipeline
from mlplatform.registry.metadata import MetadataStore
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec

SPEC = PipelineSpec.model_validate(
    {"name": "p", "source": {"path": "/d", "entity_column": "id", "timestamp_column": "t"}})


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> dict:
    registry: dict = {}
    monkeypatch.setattr(pipeline, "_STEPS", registry)
    monkeypatch.setattr(pipeline, "BUILTIN_STEP_MODULES", ())
    return registry


@pytest.fixture
def settings(tmp_path: Path):  # noqa: ANN201
    return load_settings(env={"PLATFORM_HOME": str(tmp_path)})


def test_failure_stops_the_run_and_resume_skips_completed(steps: dict, settings) -> None:  # noqa: ANN001
    calls: list[str] = []
    broken = {"validate": True}

    def ingest(ctx: StepContext) -> StepResult:
        calls.append("ingest")
        return StepResult(outputs=[ArtifactOut(uri="/snap", kind="dataset_snapshot",
                                               content_hash="h")], message="1 file")

    def validate(ctx: StepContext) -> StepResult:
        calls.append("validate")
        assert [a.uri for a in ctx.upstream("ingest")] == ["/snap"]
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


def test_stop_run_ends_successfully_and_skips_the_rest(steps: dict, settings) -> None:  # noqa: ANN001
    steps.update(ingest=lambda ctx: StepResult(stop_run=True, message="nothing new"),
                 validate=lambda ctx: pytest.fail("must not run"))
    report = run_pipeline(SPEC, settings, run_id="r", log=lambda m: None)
    assert report.status == "SUCCEEDED" and report.message == "nothing new"
    assert [s.status for s in report.steps] == ["COMPLETE", "SKIPPED"]
    resumed = run_pipeline(SPEC, settings, run_id="r", log=lambda m: None)
    assert [s.status for s in resumed.steps] == ["RESUMED", "SKIPPED"]


def test_unexpected_exception_is_recorded_with_its_traceback(steps: dict, settings) -> None:  # noqa: ANN001
    def bad(ctx: StepContext) -> StepResult:
        return {}["missing"]  # type: ignore[return-value]

    steps.update(ingest=bad)
    lines: list[str] = []
    report = run_pipeline(SPEC, settings, run_id="r", log=lines.append)
    assert report.status == "FAILED" and "KeyError" in report.message
    detail = MetadataStore(settings.metadata_url).run("r")
    assert detail is not None and "Traceback" in (detail.steps[0].error or "")


def test_only_and_unknown_steps(steps: dict, settings) -> None:  # noqa: ANN001
    ran: list[str] = []
    steps.update(ingest=lambda ctx: ran.append("ingest") or StepResult(),
                 validate=lambda ctx: ran.append("validate") or StepResult())
    run_pipeline(SPEC, settings, only=["validate"], log=lambda m: None)
    assert ran == ["validate"]
    with pytest.raises(InputError, match="--step train"):
        run_pipeline(SPEC, settings, only=["train"], log=lambda m: None)


def test_run_id_of_another_pipeline_is_refused(steps: dict, settings) -> None:  # noqa: ANN001
    steps.update(ingest=lambda ctx: StepResult())
    run_pipeline(SPEC, settings, run_id="shared", log=lambda m: None)
    other = SPEC.model_copy(update={"name": "q"})
    with pytest.raises(InputError, match="belongs to another pipeline"):
        run_pipeline(other, settings, run_id="shared", log=lambda m: None)
