"""Training, the gate and the registry on the session's demo runs (tests/integration/conftest.py):
three days, the third with shuffled labels. Every day registers a version with its lineage;
the noisy day's challenger is rejected and the champion stays; MLflow shows it all; a version
reproduces exactly; a tampered artifact is refused."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest
from mlflow import MlflowClient

from mlplatform import storage
from mlplatform.artifacts import ModelVersion
from mlplatform.errors import PlatformError
from mlplatform.metadata.store import MetadataStore
from mlplatform.models.registry import CHAMPION, ModelRegistry
from tests.conftest import cli
from tests.integration.conftest import NOISE_DAY

pytestmark = pytest.mark.ray


def _summaries(demo_runs: dict, day: int) -> dict:
    store = MetadataStore(demo_runs["settings"].metadata_url)
    detail = store.run(demo_runs["reports"][day - 1].run_id)
    assert detail is not None
    return {s.step: s.summary for s in detail.steps}


def _register_summary(demo_runs: dict, day: int) -> dict:
    return _summaries(demo_runs, day)["register"]["demo"]


def _champion_after(demo_runs: dict, day: int) -> str | None:
    """Who was champion when the day's run ended: promote's summary, or (a rejected model
    ends the run after register) the champion register saw, which stayed."""
    steps = _summaries(demo_runs, day)
    return (steps.get("promote") or steps["register"])["demo"]["champion"]


def test_every_day_trains_evaluates_and_registers_a_version(demo_runs: dict) -> None:
    for day, r in enumerate(demo_runs["reports"], start=1):
        assert r.status == "SUCCEEDED", r.message
        done = [s.step for s in r.steps if s.status == "COMPLETE"]
        trained = done[done.index("train"):]
        if day == NOISE_DAY:  # rejected: the run ends after register
            assert trained == ["train", "evaluate", "register"], done
            assert [s.status for s in r.steps if s.step in ("promote", "rollout")] == ["SKIPPED"] * 2
        else:
            assert trained == ["train", "evaluate", "register", "promote", "rollout"], done
    reg = ModelRegistry(demo_runs["settings"])
    versions = reg.versions("demo")
    assert [v.version for v in versions] == ["1", "2", "3"]
    first = versions[0]
    assert first.tags["gate.decision"] == "passed" and "first model" in first.tags["gate.reason"]
    for day, v in enumerate(versions, start=1):
        summary = _register_summary(demo_runs, day)
        assert summary["version"] == v.version
        assert v.tags["gate.decision"] == ("passed" if summary["passed"] else "rejected")


def test_the_noisy_day_is_rejected_and_the_champion_stays(demo_runs: dict) -> None:
    before = _champion_after(demo_runs, NOISE_DAY - 1)
    assert before is not None
    noisy = _register_summary(demo_runs, NOISE_DAY)
    assert noisy["passed"] is False
    assert noisy["previous_champion"] == before and noisy["champion"] == before
    reg = ModelRegistry(demo_runs["settings"])
    assert reg.champion("demo") == before == reg.alias("demo", CHAMPION)
    v = reg.version("demo", noisy["version"])
    assert v.tags["gate.decision"] == "rejected"
    assert "min_value 0.6" in v.tags["gate.reason"]  # the noisy holdout scores near chance
    assert v.metrics["eval_roc_auc"] < 0.6 and "champion_roc_auc" in v.metrics
    assert CHAMPION not in v.aliases
    report = demo_runs["reports"][NOISE_DAY - 1]
    assert "rejected by the gate" in report.message


def test_each_promotion_is_a_change_in_the_champion_history(demo_runs: dict) -> None:
    """The days' promote steps moved the champion record by compare-and-set, one history row
    each, naming the run; MLflow's alias mirrors the record."""
    promoted = []
    for day, report in enumerate(demo_runs["reports"], start=1):
        steps = _summaries(demo_runs, day)
        if "promote" in steps:
            p = steps["promote"]["demo"]
            assert p["promoted"] is True and p["version"] == steps["register"]["demo"]["version"]
            promoted.append((p["previous_champion"], p["version"], report.run_id))
    assert promoted and promoted[0][0] is None
    store = MetadataStore(demo_runs["settings"].metadata_url)
    history = [(c.from_version, c.to_version, c.run_id) for c in store.champion_history("demo")
               if c.action == "promote"]
    assert history[:len(promoted)] == promoted


def test_versions_metrics_aliases_and_trials_in_mlflow(demo_runs: dict) -> None:
    settings = demo_runs["settings"]
    client = MlflowClient(settings.mlflow_tracking_uri)
    model = client.get_registered_model("demo")
    assert set(model.aliases) >= {"champion", "challenger"}
    champion = client.get_model_version_by_alias("demo", "champion")
    run = client.get_run(champion.run_id)
    assert 0.6 <= run.data.metrics["holdout_roc_auc"] <= 1
    assert {"learning_rate", "max_leaf_nodes", "seed", "estimator"} <= set(run.data.params)
    tags = run.data.tags
    assert len(tags["data.training_set_sha256"]) == 64
    assert tags["data.snapshots"] and tags["schema.hash"] and tags["feature_service.version"]
    assert tags["code.version"] and tags["seed"] == "0"
    assert run.data.metrics["training_duration_s"] > 0
    trials = client.search_runs([run.info.experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{champion.run_id}'")
    assert len(trials) == demo_runs["spec"].model.search.num_samples
    assert all("roc_auc" in t.data.metrics and "learning_rate" in t.data.params for t in trials)


def test_lineage_runs_both_ways(demo_runs: dict) -> None:
    store = MetadataStore(demo_runs["settings"].metadata_url)
    version = store.find_artifact("models:/demo/2", ModelVersion.kind)
    assert version is not None
    up = store.lineage(version.id, "upstream", stop_at=frozenset({ModelVersion.kind}))
    kinds = {n.artifact.kind for n in up}
    assert {"model", "evaluation", "training_set", "validated_snapshot", "dataset_snapshot"} <= kinds
    snapshot = next(n.artifact for n in up if n.artifact.kind == "validated_snapshot")
    down = store.lineage(snapshot.id, "downstream", stop_at=frozenset({ModelVersion.kind}))
    assert "models:/demo/2" in {n.artifact.uri for n in down}
    shown = cli("models", "show", "demo", "2", "--json", env=demo_runs["env"])
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert any(n["artifact"]["kind"] == "training_set" for n in detail["upstream"])


def test_reproduce_gives_identical_metrics(demo_runs: dict) -> None:
    proc = cli("models", "reproduce", "demo", "2", "--json", env=demo_runs["env"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["identical"] is True and result["max_abs_diff"] == 0.0
    assert {m["metric"] for m in result["metrics"]} >= {"roc_auc", "log_loss", "accuracy", "f1"}
    assert all(m["diff"] == 0.0 for m in result["metrics"])


def test_models_cli_lists_compares_promotes_and_rolls_back(demo_runs: dict) -> None:
    env = demo_runs["env"]
    listed = json.loads(cli("models", "list", "demo", "--json", env=env).stdout)
    assert [v["version"] for v in listed] == ["1", "2", "3"]
    compared = cli("models", "compare", "demo", "1", "2", "--json", env=env)
    assert compared.returncode == 0, compared.stderr
    assert "holdout_roc_auc" in json.loads(compared.stdout)["metrics"]
    reg = ModelRegistry(demo_runs["settings"])
    champion = reg.alias("demo", CHAMPION)
    promoted = cli("models", "promote", "demo", "1", "--json", env=env)
    assert promoted.returncode == 0, promoted.stderr
    assert reg.alias("demo", CHAMPION) == "1"
    back = cli("models", "rollback", "demo", "--json", env=env)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["version"] == champion == reg.alias("demo", CHAMPION)
    missing = cli("models", "show", "demo", "99", env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_tampered_artifact_is_refused(demo_runs: dict) -> None:
    settings, env = demo_runs["settings"], demo_runs["env"]
    client = MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version("demo", str(NOISE_DAY))
    # The artifact store: a local folder, or S3 with --backends cluster.
    fs, root = storage.resolve(client.get_run(version.run_id).info.artifact_uri)
    files = fs.get_file_info(pafs.FileSelector(f"{root}/model"))
    target = next(f.path for f in files if f.path.endswith((".pkl", ".skops")))
    with fs.open_input_stream(target) as f:
        original = f.read()
    try:
        with fs.open_output_stream(target) as f:
            f.write(original + b"\0")
        with pytest.raises(PlatformError, match="does not match the recorded"):
            ModelRegistry(settings).load("demo", str(NOISE_DAY))
        proc = cli("models", "promote", "demo", str(NOISE_DAY), env=env)
        assert proc.returncode == 1 and "refusing to load" in proc.stderr
        assert ModelRegistry(settings).alias("demo", CHAMPION) != str(NOISE_DAY)
    finally:
        with fs.open_output_stream(target) as f:
            f.write(original)
    assert ModelRegistry(settings).load("demo", str(NOISE_DAY)) is not None


def test_one_model_per_segment_each_registered_and_gated(demo_runs: dict) -> None:
    """Manual mode (only train -> evaluate -> register -> promote, on the newest training set) with
    `segment_column`: one model per plan, fitted in parallel, each a registered model."""
    from mlplatform.pipeline import run_pipeline
    from mlplatform.spec import PipelineSpec

    raw = demo_runs["spec"].model_dump(mode="json", by_alias=True)
    raw["model"].update(segment_column="plan", search=None)
    raw.pop("deploy", None)  # serving per-segment models is refused until it is built
    spec = PipelineSpec.model_validate(raw)
    report = run_pipeline(spec, demo_runs["settings"], only=["train", "evaluate", "register", "promote"],
                          log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    store = MetadataStore(demo_runs["settings"].metadata_url)
    detail = store.run(report.run_id)
    steps = {s.step: s.summary for s in detail.steps}
    assert set(steps["register"]) - {"message", "stop_run"} == {"demo-basic", "demo-free", "demo-premium"}
    reg = ModelRegistry(demo_runs["settings"])
    for name in ("demo-basic", "demo-free", "demo-premium"):
        [version] = reg.versions(name)
        assert version.tags["gate.decision"] in ("passed", "rejected")
        passed = version.tags["gate.decision"] == "passed"
        assert reg.champion(name) == (version.version if passed else None)  # a first model: promoted
        if passed:  # promote runs when any segment passed (and says what it did with each)
            assert steps["promote"][name]["promoted"] is True
        run = MlflowClient(demo_runs["settings"].mlflow_tracking_uri).get_run(version.run_id)
        assert run.data.tags["mlplatform.segment"] == name.removeprefix("demo-")
        assert steps["evaluate"][name]["reason"]
    if not any(steps["register"][n]["passed"] for n in ("demo-basic", "demo-free", "demo-premium")):
        assert [s.status for s in report.steps if s.step == "promote"] == ["SKIPPED"]
    assert [v.version for v in reg.versions("demo")] == ["1", "2", "3"]  # untouched
