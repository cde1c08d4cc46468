"""The demo pipeline's `featurize` and `training_set` on the session's real Ray:
the training set of day N holds only values known at each row's time (checked by a
brute-force scan of the offline store), windows reach into earlier days, the online
vector from `platformctl features get` equals the offline value, and a broken
transformation stops the run before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from mlplatform import storage
from mlplatform.artifacts import ValidatedBatch
from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.features.store import FeatureStore
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import run_pipeline
from mlplatform.settings import load_settings
from mlplatform.spec_loader import load_spec
from tests.backends import store_env
from tests.conftest import platformctl

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]


def test_every_day_runs_through_training_set(demo_runs: dict) -> None:
    for r in demo_runs["reports"]:
        assert r.status == "SUCCEEDED", r.message
        assert [s.step for s in r.steps if s.status == "COMPLETE"][:4] == [
            "ingest", "validate", "featurize", "training_set"]


def test_training_set_of_day_3_has_no_future_values(demo_runs: dict) -> None:
    settings, spec = demo_runs["settings"], demo_runs["spec"]
    store = MetadataStore(settings.metadata_url)
    art = store.artifacts_of_run(demo_runs["reports"][2].run_id, "training_set")[0]
    fs, path = storage.resolve(art.uri)  # a local file, or an object in S3 (--backends cluster)
    train = pd.read_parquet(path, filesystem=fs)
    assert art.properties["rows"] == len(train) > 2500  # three days of label rows
    fstore = FeatureStore(spec, settings)
    checked = 0
    rng = np.random.default_rng(0)
    for name, view in fstore.views.items():
        audit = train[f"{name}__event_ts"]
        assert (audit.isna() | (audit <= train["event_ts"])).all()
        assert (audit.isna() | (audit >= train["event_ts"] - view.ttl)).all()
        offline = fstore.offline.read(view)
        # Brute force on a sample: scan the entity's offline rows for the newest one known.
        for i in rng.choice(len(train), 120, replace=False):
            row = train.iloc[i]
            seen = offline[(offline.customer_id == row.customer_id) & (offline.event_ts <= row.event_ts)
                           & (offline.event_ts >= row.event_ts - view.ttl)]
            want = seen.iloc[-1] if len(seen) and seen.event_ts.is_monotonic_increasing else (
                seen.sort_values("event_ts", kind="stable").iloc[-1] if len(seen) else None)
            for f in view.features:
                got = row[f]
                expected = None if want is None else want[f]
                assert (pd.isna(got) and pd.isna(expected)) or got == expected, (name, f, i)
            checked += 1
    assert checked == 240
    rfs, rpath = storage.resolve(art.properties["report"])
    with rfs.open_input_stream(rpath) as f:
        report = json.loads(f.read())
    assert {v["view"] for v in report["views"]} == {"customer_activity", "customer_profile"}
    assert report["view_versions"] == {n: v.version for n, v in fstore.views.items()}


def test_windows_reach_into_earlier_days(demo_runs: dict) -> None:
    """The 7-day aggregates of day 3, computed per batch on Ray with history, equal the
    same code run once over all validated rows."""
    settings, spec = demo_runs["settings"], demo_runs["spec"]
    store = MetadataStore(settings.metadata_url)
    batches = [a.uri for _, _, a in store.outputs_of(ValidatedBatch, pipeline="demo", step="validate")]
    raw = pd.concat([pads.dataset(u, format="parquet").to_table().to_pandas() for u in batches],
                    ignore_index=True)
    fstore = FeatureStore(spec, settings)
    view = fstore.views["customer_activity"]
    want = fstore.compute("customer_activity", raw)
    got = fstore.offline.read(view)
    key = ["customer_id", "event_ts"]
    cols = ["spend_30d_mean_7d", "spend_30d_max_7d", "support_tickets_90d_count_7d", "engagement_score"]
    merged = got[key + cols].merge(want[key + cols].drop_duplicates(key), on=key, suffixes=("", "_want"))
    assert len(merged) == len(got) == len(raw)
    day3 = merged[merged.event_ts >= pd.Timestamp("2026-01-03")]
    assert (day3["support_tickets_90d_count_7d"] > 1).any()  # some windows span several days
    for c in cols:
        np.testing.assert_allclose(merged[c].to_numpy(float), merged[f"{c}_want"].to_numpy(float),
                                   rtol=1e-12, err_msg=c)


def test_features_get_returns_the_offline_value(demo_runs: dict) -> None:
    settings, spec = demo_runs["settings"], demo_runs["spec"]
    fstore = FeatureStore(spec, settings)
    view = fstore.views["customer_activity"]
    offline = fstore.offline.read(view)
    entity = offline.sort_values("event_ts").customer_id.iloc[-1]
    at = offline.event_ts.max() + pd.Timedelta(hours=1)
    proc = platformctl("features", "get", "customer_activity", entity, "unknown-id", "--at",
                       at.isoformat(), "--json", env=demo_runs["env"])
    assert proc.returncode == 0, proc.stderr
    vectors = json.loads(proc.stdout)
    expected = fstore.get_training_set(pd.DataFrame({"customer_id": [entity], "event_ts": [at]}),
                                       ["customer_activity:*"]).df.iloc[0]
    assert vectors[0]["entity"] == entity
    for f in view.features:
        want = None if pd.isna(expected[f]) else expected[f]
        assert vectors[0]["values"][f] == want, f
    assert set(vectors[1]["statuses"].values()) == {"NOT_FOUND"}
    listed = platformctl("features", "list", "--json", env=demo_runs["env"])
    assert {v["view"] for v in json.loads(listed.stdout)} == {"customer_activity", "customer_profile"}


def test_a_raising_transformation_stops_the_run_and_writes_nothing(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    home = tmp_path / "home"
    env = {"PLATFORM_HOME": str(home), **store_env(home, "broken")}
    spec_file = tmp_path / "broken.yaml"
    text = (ROOT / "jobs" / "examples" / "demo.yaml").read_text().replace(
        "jobs.examples.demo_features.activity", "tests.integration.broken_features.explode")
    spec_file.write_text(text)
    spec = load_spec(spec_file, env=env)
    write_day(home / "demo" / "data", DemoDataConfig(rows_per_day=300), 1)
    report = run_pipeline(spec, load_settings(env=env), log=lambda m: None)
    assert report.status == "FAILED"
    assert ("transformation 'tests.integration.broken_features.explode' raised KeyError" in report.message)
    assert not (home / "storage" / "features").exists()


def test_ray_join_equals_the_local_join(demo_runs: dict) -> None:
    """The distributed path (Ray Data tasks over time ranges, for large inputs) gives the
    same training set as the in-process join."""
    settings, spec = demo_runs["settings"], demo_runs["spec"]
    fstore = FeatureStore(spec, settings)
    rows = pd.concat([fstore.offline.read(fstore.views["customer_profile"], columns=[])[
        ["customer_id", "event_ts"]]] * 2, ignore_index=True)
    rows["event_ts"] = rows["event_ts"] + pd.to_timedelta(
        np.random.default_rng(1).integers(-86400, 86400 * 9, len(rows)), unit="s")
    local = fstore.get_training_set(rows, engine="local")
    distributed = fstore.get_training_set(rows, engine="ray")
    assert distributed.report.engine == "ray" and local.report.engine == "local"
    pd.testing.assert_frame_equal(local.df, distributed.df)
    assert [v.model_dump() for v in local.report.views] == [v.model_dump() for v in distributed.report.views]
    assert sum(v.unmatched for v in local.report.views) > 0  # times up to 9 days later: some expire
