"""One implementation, two executors (mlplatform.runtime.placement): the same days of demo
data run once with every data step in the job's own process and once on the session's Ray
(Ray Data, Tune) give the same validated rows, feature rows, training set and model; each step
records where it ran; a grid search scores every configuration the same way on both."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform import storage
from mlplatform.artifacts import TrainingSet, ValidatedBatch
from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.features.store import FeatureStore
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import run_pipeline
from mlplatform.settings import load_settings
from mlplatform.spec import ExecutionSpec, ModelSpec
from mlplatform.spec_loader import load_spec
from mlplatform.training.data import SplitData
from mlplatform.training.local_search import run_search_local
from mlplatform.training.search import run_search
from tests.backends import store_env

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
PLACED = ("ingest", "validate", "featurize", "training_set", "train")


def _run_days(ray_connected: dict, home: Path, placement: str) -> dict:
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           **{k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")},
           **store_env(home, f"placement_{placement}")}
    settings = load_settings(env=env)
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env=env)
    spec.deploy = None  # the data and training steps are the subject here
    spec.model.search = None  # fixed parameters: the same model whatever fits it
    spec.execution = ExecutionSpec(placement=placement)  # type: ignore[arg-type]
    cfg = DemoDataConfig(days=2, rows_per_day=600, entities=200, seed=5)
    reports = []
    for day in (1, 2):
        write_day(home / "demo" / "data", cfg, day)
        reports.append(run_pipeline(spec, settings, log=lambda m: None))
    return {"settings": settings, "spec": spec, "reports": reports}


@pytest.fixture(scope="module")
def both(ray_connected, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    root = tmp_path_factory.mktemp("placement")
    return {p: _run_days(ray_connected, root / p, p) for p in ("local", "cluster")}


def _summaries(run: dict, day: int) -> dict[str, dict]:
    store = MetadataStore(run["settings"].metadata_url)
    detail = store.run(run["reports"][day].run_id)
    assert detail is not None
    return {s.step: s.summary for s in detail.steps}


def test_each_step_records_where_it_ran(both: dict) -> None:
    for placement, run in both.items():
        for r in run["reports"]:
            assert r.status == "SUCCEEDED", r.message
        steps = _summaries(run, 1)
        for name in PLACED:
            assert steps[name]["execution"]["placement"] == placement, (name, steps[name])
            assert steps[name]["execution"]["reason"] == f"execution.placement: {placement}"


def test_validation_counts_agree(both: dict) -> None:
    for day in (0, 1):
        local, cluster = (_summaries(both[p], day)["validate"] for p in ("local", "cluster"))
        for key in ("rows_in", "rows_valid", "rows_quarantined", "failures", "shifted_columns"):
            assert local[key] == cluster[key], (day, key)


def _frame(settings, uri: str) -> pd.DataFrame:  # noqa: ANN001
    fs, path = storage.resolve(uri)
    return pd.read_parquet(path, filesystem=fs)


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows in key order, and each categorical's categories sorted: a Parquet column's
    dictionary lists values in the order they were first written, which follows how the rows
    were split into blocks (on the cluster, which task finished first). The values must match;
    the training sets, compared exactly below, show that the order never reaches a model."""
    out = df.sort_values(keys, kind="stable").reset_index(drop=True)
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            out[col] = out[col].cat.reorder_categories(sorted(out[col].cat.categories, key=str))
    return out


def test_validated_rows_feature_rows_and_training_sets_are_the_same(both: dict) -> None:
    got: dict[str, dict] = {}
    for placement, run in both.items():
        settings, store = run["settings"], MetadataStore(run["settings"].metadata_url)
        batches = [a for _, _, a in store.outputs_of(ValidatedBatch, pipeline="demo", step="validate")]
        valid = pd.concat([_valid_rows(b.uri) for b in batches], ignore_index=True)
        fstore = FeatureStore(run["spec"], settings)
        views = {name: fstore.offline.read(view) for name, view in fstore.views.items()}
        ts = store.latest(TrainingSet, "demo", step="training_set")
        assert ts is not None
        got[placement] = {"valid": _sorted(valid, ["event_ts", "customer_id"]), "views": views,
                          "training": _frame(settings, ts.uri), "ts": ts}
    local, cluster = got["local"], got["cluster"]
    assert len(local["valid"]) == 1200 - _quarantined(both["local"])
    pd.testing.assert_frame_equal(local["valid"], cluster["valid"], check_like=True)
    for name, frame in local["views"].items():
        keys = ["event_ts", "customer_id"]
        pd.testing.assert_frame_equal(_sorted(frame, keys), _sorted(cluster["views"][name], keys),
                                      check_like=True)
    pd.testing.assert_frame_equal(local["training"], cluster["training"])
    assert local["ts"].content_hash == cluster["ts"].content_hash


def _valid_rows(uri: str) -> pd.DataFrame:
    from mlplatform import manifest

    fs, files = manifest.committed_files(uri)
    return pd.concat([pd.read_parquet(f, filesystem=fs) for f in files], ignore_index=True)


def _quarantined(run: dict) -> int:
    return sum(_summaries(run, d)["validate"]["rows_quarantined"] for d in (0, 1))


def test_the_same_model_comes_out(both: dict) -> None:
    holdouts = {}
    for placement, run in both.items():
        train = _summaries(run, 1)["train"]
        holdouts[placement] = train["models"][0]["holdout"]
    assert holdouts["local"] == holdouts["cluster"]
    assert holdouts["local"]["roc_auc"] > 0.6


@pytest.mark.parametrize("search", [
    {"algorithm": "grid", "space": {"C": {"type": "grid", "values": [0.001, 0.1, 10.0]}}},
    {"algorithm": "random", "num_samples": 4, "space": {
        "C": {"type": "loguniform", "low": 0.001, "high": 10.0},
        "class_weight": {"type": "choice", "values": [None, "balanced"]},
        "tol": {"type": "grid", "values": [0.001, 0.01]}}},
], ids=["grid", "random"])
def test_a_search_tries_the_same_configurations_and_scores_them_alike(
        ray_connected, tmp_path: Path, search: dict) -> None:  # noqa: ANN001
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=900), "b": rng.normal(size=900)})
    y = (X["a"] + 0.5 * X["b"] + rng.normal(scale=0.8, size=900) > 0).astype(int).to_numpy()
    data = SplitData(X.iloc[:700], y[:700], X.iloc[700:], y[700:])
    model = ModelSpec.model_validate({"estimator": "sklearn.linear_model.LogisticRegression",
                                      "metric": "roc_auc", "seed": 1, "search": search})
    here = run_search_local(model, data)
    there = run_search(model, data, storage_path=str(tmp_path), name="same")

    def by_config(trials: list) -> dict:  # noqa: ANN001
        return {tuple(sorted((k, str(v)) for k, v in t.config.items())): t.score for t in trials}

    assert by_config(here.trials) == pytest.approx(by_config(there.trials), abs=1e-12)
    assert len(here.trials) == (3 if search["algorithm"] == "grid" else 8)
    assert len(set(by_config(here.trials).values())) > 1  # the configurations really differ
    assert here.best_config == there.best_config and here.best_score == pytest.approx(there.best_score)
