"""The offline store: date partitions, pruned reads, idempotent rewrites, the served log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.errors import InputError
from mlplatform.features.definitions import resolve_views
from mlplatform.features.offline_store import OfflineStore
from mlplatform.spec import PipelineSpec

T0 = pd.Timestamp("2026-01-01")


def _view():  # noqa: ANN202
    spec = PipelineSpec.model_validate({
        "name": "off", "source": {"path": "/x", "entity_column": "e", "timestamp_column": "ts"},
        "features": {"views": [{"name": "v", "features": ["x", "s"], "ttl": "1d"}]}})
    return resolve_views(spec)["v"]


def _rows(days: list[int], value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"e": [f"k{d}" for d in days],
                         "ts": [T0 + pd.Timedelta(days=d, hours=1) for d in days],
                         "x": [value + d for d in days], "s": [f"s{d}" for d in days]}
                        ).astype({"ts": "datetime64[us]"})


def test_partitions_by_date_and_prunes_reads(tmp_path: Path) -> None:
    store, view = OfflineStore(str(tmp_path), "off"), _view()
    result = store.write(view, _rows([0, 1, 2, 3]), "w1")
    assert result.rows == 4 and result.dates == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert all(Path(f).exists() and "/views/v/date=" in f for f in result.files)
    got = store.read(view, start=dt.datetime(2026, 1, 2), end=dt.datetime(2026, 1, 3, 12))
    assert sorted(got["e"]) == ["k1", "k2"]
    assert got["x"].tolist() == [2.0, 3.0] and got["s"].tolist() == ["s1", "s2"]


def test_rewriting_a_write_replaces_it(tmp_path: Path) -> None:
    store, view = OfflineStore(str(tmp_path), "off"), _view()
    store.write(view, _rows([0, 1]), "w1")
    store.write(view, _rows([0, 1], value=10.0), "w1")  # a retried step
    store.write(view, _rows([1]), "w2")
    assert sorted(store.writes("v")) == ["w1", "w2"]
    got = store.read(view)
    assert len(got) == 3 and sorted(got["x"]) == [2.0, 10.0, 11.0]
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_bad_write_leaves_nothing(tmp_path: Path) -> None:
    store, view = OfflineStore(str(tmp_path), "off"), _view()
    with pytest.raises(InputError, match=r"lack column\(s\) \['s'\]"):
        store.write(view, _rows([0]).drop(columns=["s"]), "w1")
    assert store.writes("v") == {} and store.read(view).empty


def test_served_vectors_round_trip(tmp_path: Path) -> None:
    store = OfflineStore(str(tmp_path), "off")
    records = pd.DataFrame({"request_id": ["r1", "r2"], "entity": ["a", "b"],
                            "event_ts": [T0 + pd.Timedelta(hours=2), T0 + pd.Timedelta(hours=1)],
                            "x": [1.5, None], "s": ["p", "q"]})
    store.log_served("churn", records)
    store.log_served("churn", records.assign(request_id=["r3", "r4"]))
    got = store.read_served("churn")
    assert got["request_id"].tolist() == ["r2", "r4", "r1", "r3"]
    assert got.loc[got.request_id == "r1", "x"].item() == 1.5
    assert pd.isna(got.loc[got.request_id == "r2", "x"].item())
    with pytest.raises(InputError, match="column 'event_ts' is missing"):
        store.log_served("churn", records.drop(columns=["event_ts"]))
    with pytest.raises(InputError, match="every record needs an event_ts"):
        store.log_served("churn", records.assign(event_ts=[T0, None]))
    assert len(store.read_served("churn")) == 4


def test_uncommitted_files_are_invisible_and_zones_become_utc(tmp_path: Path) -> None:
    """A write that died after some of its files (no manifest) is not read; zoned times
    are stored as UTC and partitioned by their UTC date."""
    store, view = OfflineStore(str(tmp_path), "off"), _view()
    rows = _rows([0, 1])
    rows["ts"] = rows["ts"].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")
    result = store.write(view, rows, "w1")
    assert result.dates == ["2026-01-01", "2026-01-02"]
    orphan = Path(result.files[0]).with_name("part-w2.parquet")
    orphan.write_bytes(Path(result.files[0]).read_bytes())  # files of a write that never committed
    assert sorted(store.writes("v")) == ["w1"]
    got = store.read(view)
    assert len(got) == 2 and str(got["ts"].dtype) == "datetime64[us]"
    assert got["ts"].min() == T0 + pd.Timedelta(hours=1)
