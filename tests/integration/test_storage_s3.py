"""The storage URI on a real S3-compatible server (moto, tests/s3_server.py), on the session's
real Ray: ingest and validate publish their snapshot, validated rows and quarantine in the
bucket, each behind its manifest, and nothing of them under the local PLATFORM_HOME; a Tune
search checkpoints into the bucket and the final fit loads its model from there.

The session's Ray workers were started before the S3 server and hold no AWS variable: what
they write reaches the bucket through the filesystem the driver resolved (endpoint and keys
inside it, see mlplatform.storage), which is what a multi-node cluster needs too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform import manifest
from mlplatform.artifacts import Quarantine, Snapshot, ValidatedBatch
from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import run_pipeline
from mlplatform.settings import Settings, load_settings
from mlplatform.spec import PipelineSpec
from mlplatform.training.search import TuneStorage, final_fit, run_search
from mlplatform.training.trainer import tune_root
from tests.s3_server import S3Env, moto_s3

pytestmark = pytest.mark.ray
AGE_MAX = 60  # a hard bound some demo rows break: they go to quarantine


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Env]:
    with moto_s3("platform-it") as env, env.environment():
        yield env


def _settings(s3: S3Env, home: Path) -> Settings:
    return load_settings(env={"PLATFORM_HOME": str(home), "PLATFORM_STORAGE_URI": s3.uri})


def _spec(data: Path) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "s3p",
        "source": {"path": str(data), "entity_column": "customer_id", "timestamp_column": "event_ts",
                   "label_column": "churned"},
        "schema": {"strict": False, "columns": [{"name": "customer_id", "type": "string"},
                               {"name": "age", "type": "float", "max": AGE_MAX}]},
        "validation": {"max_invalid_fraction": 0.9}})


def _key(s3: S3Env, uri: str) -> str:
    """The bucket key prefix of an s3:// URI."""
    assert uri.startswith(f"s3://{s3.bucket}/"), uri
    return uri.removeprefix(f"s3://{s3.bucket}/").partition("?")[0].rstrip("/") + "/"


def _rows(s3: S3Env, uri: str) -> pd.DataFrame:
    """The committed rows at `uri`, read through boto3 from the manifest's list of files."""
    prefix = _key(s3, uri)
    listed = json.loads(s3.get(prefix + manifest.MANIFEST))
    frames = [pq.read_table(pa.BufferReader(s3.get(prefix + f["name"]))).to_pandas() for f in listed["files"]]
    return pd.concat(frames, ignore_index=True)


def test_ingest_and_validate_publish_to_s3_only(ray_connected, s3: S3Env, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=2, rows_per_day=300, seed=3))
    home = tmp_path / "home"
    settings = _settings(s3, home)
    report = run_pipeline(_spec(data), settings, log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    store = MetadataStore(settings.metadata_url)
    (snap,) = [a for _, _, a in store.outputs_of(Snapshot, pipeline="s3p", step="ingest")]
    (valid,) = [a for _, _, a in store.outputs_of(ValidatedBatch, pipeline="s3p", step="validate")]
    (quarantine,) = [a for _, _, a in store.outputs_of(Quarantine, pipeline="s3p", step="validate")]

    original = pd.concat([pd.read_parquet(f.path) for f in files], ignore_index=True)
    bad = int((original["age"] > AGE_MAX).sum())
    assert 0 < bad < len(original)
    snapshot = _rows(s3, snap.uri)
    assert sorted(snapshot["customer_id"]) == sorted(original["customer_id"])
    kept, set_aside = _rows(s3, valid.uri), _rows(s3, quarantine.uri)
    assert (len(kept), len(set_aside)) == (len(original) - bad, bad) == (valid.rows, quarantine.rows)
    assert (set_aside["age"] > AGE_MAX).all() and (kept["age"] <= AGE_MAX).all()
    # Every object in those folders is named by its manifest: nothing else (no tmp folder, no
    # leftover) is there. (Ray's writer leaves an empty folder marker, `prefix/`: not a file.)
    for uri in (snap.uri, valid.uri, quarantine.uri):
        prefix = _key(s3, uri)
        listed = {f["name"] for f in json.loads(s3.get(prefix + manifest.MANIFEST))["files"]}
        stored = {k.removeprefix(prefix) for k in s3.keys(prefix) if not k.endswith("/")}
        assert stored == listed | {manifest.MANIFEST}
    assert s3.keys(f"{s3.prefix}/stats/s3p/") and s3.keys(f"{s3.prefix}/reports/s3p/")
    # Nothing of the data reached the local home (only the metadata database lives there).
    local = [p.relative_to(home) for p in home.rglob("*") if p.is_file()]
    assert not [p for p in local if p.suffix in (".parquet", ".json", ".html")
                or p.parts[0] in ("storage", "snapshots", "validated", "quarantine")], local


def test_a_search_checkpoints_in_s3_and_the_final_fit_loads_from_it(ray_connected, s3: S3Env,  # noqa: ANN001
                                                                    tmp_path: Path) -> None:
    from tests.integration.test_search import _data, _model

    root = tune_root(_settings(s3, tmp_path / "home"), "tuned")
    assert isinstance(root, TuneStorage) and root.filesystem is not None
    model = _model(num_samples=2, scheduler="asha", max_iterations=20, report_every=10, grace_period=1)
    data = _data(600)
    result = run_search(model, data, storage_path=root, name="s3-search")
    assert len(result.trials) == 2 and all(t.score is not None for t in result.trials)
    keys = s3.keys(f"{s3.prefix}/tune/tuned/s3-search/")
    trials_with_checkpoints = {k.split("/")[4] for k in keys if "/checkpoint_" in k}
    assert len(trials_with_checkpoints) == 2, keys
    models = final_fit(model, {"": data}, result.best_config, storage_path=root, name="s3-fit")
    assert models[""].score(data.X_val, data.y_val) > 0.6
    assert [k for k in s3.keys(f"{s3.prefix}/tune/tuned/s3-fit/") if "/checkpoint_" in k]
    assert not (tmp_path / "home" / "storage").exists()
