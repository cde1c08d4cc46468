"""The online store on real SQLite and a real Redis server: newest-wins upserts, TTL on
read, incremental materialisation, and training-serving consistency (the online vector
equals the offline point-in-time value, for random entities and times)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.data.synthetic import DemoDataConfig, generate_day
from mlplatform.features.definitions import FeatureRef
from mlplatform.features.store import FeatureStore
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_loader import load_spec
from tests.backends import store_env

ROOT = Path(__file__).resolve().parents[2]
T0 = pd.Timestamp("2026-01-01")


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'online.db'}"
    import redis

    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return url


def _store(spec: PipelineSpec, tmp_path: Path, url: str) -> FeatureStore:
    home = tmp_path / "home"
    return FeatureStore(spec, load_settings(env={"PLATFORM_HOME": str(home), **store_env(home, "online")}),
                        online_url=url)


def _late_spec() -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "late", "source": {"path": "/x", "entity_column": "e", "timestamp_column": "ts"},
        "features": {"views": [{"name": "v", "features": ["x", "tag"], "ttl": "6h",
                                "created_timestamp_column": "created"}]}})


def _late_rows(n: int, seed: int) -> pd.DataFrame:
    """Events over 3 days; each becomes known 0-12 h after it happened (late backfills)."""
    rng = np.random.default_rng(seed)
    ts = T0 + pd.to_timedelta(rng.uniform(0, 3 * 86400, n), unit="s")
    return pd.DataFrame({
        "e": rng.choice([f"k{i}" for i in range(40)], n),
        "ts": ts.astype("datetime64[us]"),
        "created": (ts + pd.to_timedelta(rng.choice([0, 0, 600, 5 * 3600, 12 * 3600], n), unit="s")
                    ).astype("datetime64[us]"),
        "x": np.where(rng.uniform(size=n) < 0.1, np.nan, rng.normal(size=n)),
        "tag": rng.choice(["a", "b", None], n),
    })


def test_newer_rows_win_and_ttl_is_enforced_on_read(backend: str, tmp_path: Path) -> None:
    fstore = _store(_late_spec(), tmp_path, backend)
    rows = pd.DataFrame({"e": ["a", "a", "b"],
                         "ts": [T0 + pd.Timedelta(hours=h) for h in (5, 1, 2)],
                         "created": [T0 + pd.Timedelta(hours=h) for h in (5, 1, 2)],
                         "x": [5.0, 1.0, None], "tag": ["new", "old", "b"]}
                        ).astype({"ts": "datetime64[us]", "created": "datetime64[us]"})
    fstore.write("v", rows.iloc[[0, 2]], "w1")
    fstore.write("v", rows.iloc[[1]], "w2")  # an older value of 'a', materialised later
    reports = fstore.materialize()
    assert (reports[0].writes, reports[0].rows_read) == (2, 3)
    at = (T0 + pd.Timedelta(hours=6)).to_pydatetime()
    a, b, z = fstore.get_online_features(["a", "b", "zz"], ["v:x", "v:tag"], at=at)
    assert a.values == {"x": 5.0, "tag": "new"} and a.statuses == {"x": "PRESENT", "tag": "PRESENT"}
    assert b.values == {"x": None, "tag": "b"} and b.statuses["x"] == "NULL_VALUE"
    assert z.statuses == {"x": "NOT_FOUND", "tag": "NOT_FOUND"}
    later = (T0 + pd.Timedelta(hours=9)).to_pydatetime()  # b (2h) is now older than the 6h TTL
    _, b_late, _ = fstore.get_online_features(["a", "b", "zz"], ["v:x"], at=later)
    assert b_late.values == {"x": None} and b_late.statuses == {"x": "OUTSIDE_MAX_AGE"}
    # Incremental: nothing new, nothing read; a new write is picked up alone.
    assert fstore.materialize()[0].rows_read == 0
    fstore.write("v", rows.iloc[[0]].assign(x=7.0), "w3")  # same time and created: a correction
    rep = fstore.materialize()[0]
    assert (rep.writes, rep.rows_read) == (1, 1)
    assert fstore.get_online_features(["a"], ["v:x"], at=at)[0].values == {"x": 7.0}
    fstore.close()


def _plain(value: object) -> object:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_consistent(fstore: FeatureStore, refs: list[str], entities: list[str], at: pd.Timestamp,
                      ts_col: str, entity_col: str) -> int:
    """Online vectors at `at` == the offline point-in-time join at `at`; returns how many
    values were present (so the caller can check the comparison was not vacuous)."""
    online = fstore.get_online_features(entities, refs, at=at.to_pydatetime())
    rows = pd.DataFrame({entity_col: entities, ts_col: [at] * len(entities)})
    offline = fstore.get_training_set(rows, refs, timestamp_column=ts_col).df
    present = 0
    for i, vec in enumerate(online):
        for feature, value in vec.values.items():
            want = _plain(offline[feature].iloc[i])
            assert value == want, (vec.entity, feature, at, value, want, vec.statuses[feature])
            present += value is not None
    return present


def test_online_equals_offline_point_in_time_with_late_data(backend: str, tmp_path: Path) -> None:
    spec = _late_spec()
    fstore = _store(spec, tmp_path, backend)
    data = _late_rows(600, seed=3)
    fstore.write("v", data.iloc[:300], "w1")
    fstore.write("v", data.iloc[300:], "w2")
    rng = np.random.default_rng(11)
    present = 0
    for i in range(8):
        at = (T0 + pd.Timedelta(seconds=float(rng.uniform(3600, 3.5 * 86400)))).floor("us")
        fstore.close()
        url = backend if backend.startswith("redis") else f"sqlite:///{tmp_path / f'online-{i}.db'}"
        if url.startswith("redis"):
            import redis

            redis.Redis.from_url(url).flushdb()
        fstore = _store(spec, tmp_path, url)
        fstore.materialize(until=at.to_pydatetime())
        entities = [*rng.choice([f"k{j}" for j in range(40)], 25, replace=False), "unknown"]
        present += _check_consistent(fstore, ["v:x", "v:tag"], entities, at, "ts", "e")
    assert present > 50
    fstore.close()


def test_demo_features_online_equal_offline(backend: str, tmp_path: Path) -> None:
    """The demo's own views (transformation + windowed aggregations): the same code feeds
    both stores, and the values survive the trip through each backend unchanged."""
    spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env={"PLATFORM_HOME": str(tmp_path)})
    fstore = _store(spec, tmp_path, backend)
    cfg = DemoDataConfig(rows_per_day=400, entities=150)
    raw = pd.concat([generate_day(cfg, d) for d in (1, 2, 3)], ignore_index=True)
    for name in fstore.views:
        fstore.write(name, fstore.compute(name, raw), "days-1-3")
    at = pd.Timestamp("2026-01-03 18:00")
    fstore.materialize(until=at.to_pydatetime())
    refs = [str(FeatureRef(view=v, feature="*")) for v in fstore.views]
    entities = sorted(raw["customer_id"].unique())[:60]
    assert _check_consistent(fstore, refs, entities, at, "event_ts", "customer_id") > 500
    fstore.close()


def test_bad_online_urls_are_clear() -> None:
    from mlplatform.errors import InputError, PlatformError
    from mlplatform.features.online_store import open_online_store

    with pytest.raises(InputError, match="expected sqlite:///PATH or redis://HOST:PORT/DB"):
        open_online_store("mysql://x")
    with pytest.raises(PlatformError, match="cannot reach Redis"):
        open_online_store("redis://127.0.0.1:1/0")


def test_int_ids_widened_by_a_null_are_served_by_their_int_key(backend: str, tmp_path: Path) -> None:
    spec = PipelineSpec.model_validate({
        "name": "ids", "source": {"path": "/x", "entity_column": "e", "timestamp_column": "ts"},
        "features": {"views": [{"name": "v", "features": ["x"], "ttl": "1d"}]}})
    fstore = _store(spec, tmp_path, backend)
    rows = pd.DataFrame({"e": [1, 2, None], "ts": [T0, T0, T0], "x": [1.0, 2.0, 3.0]})  # e: float64
    fstore.write("v", rows, "w1")
    fstore.materialize()
    got = fstore.get_online_features([1, "2"], ["v:x"], at=(T0 + pd.Timedelta(hours=1)).to_pydatetime())
    assert [g.values["x"] for g in got] == [1.0, 2.0]
    fstore.close()
