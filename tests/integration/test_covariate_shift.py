"""A covariate shift under an inferred schema, on the session's real Ray: a price-regression
pipeline with no schema in its spec infers one from day 1; days 2 and 3 bring larger items
(sizes and prices up to 5x day 1's, the same types). The inferred ranges are soft, so the
runs go on: the shift is reported and alerted as drift, nothing is quarantined, and the
model retrains on the new items and registers a version every day."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform.artifacts import InferredSchema
from mlplatform.metadata.store import MetadataStore
from mlplatform.models.registry import ModelRegistry
from mlplatform.pipeline import RunReport, run_pipeline
from mlplatform.settings import load_settings
from mlplatform.spec import SchemaSpec
from mlplatform.spec_loader import load_spec
from tests.conftest import cli

pytestmark = pytest.mark.ray

ROWS = 300
SPEC = """\
name: prices
source:
  path: {data}
  entity_column: item_id
  timestamp_column: sold_at
  label_column: price
validation:
  drift: {{reference: previous_batch}}
features:
  views:
    - name: item
      ttl: 2d
      features: [size, weight, shop]
  services:
    - name: pricing
      features: ["item:*"]
model:
  task: regression
  feature_service: pricing
  estimator: sklearn.linear_model.Ridge
  metric: rmse
"""


def _write_day(folder: Path, day: int, scale: float) -> pd.DataFrame:
    """One day of sales; `scale` multiplies item sizes (and so prices): the covariate shift."""
    rng = np.random.default_rng(day)
    size = rng.uniform(1, 10, ROWS) * scale
    shop = rng.choice(["north", "south"], ROWS)
    weight = size * 0.5 + rng.normal(0, 0.3, ROWS)
    df = pd.DataFrame({
        "item_id": [f"d{day}-{i:04d}" for i in range(ROWS)],
        "sold_at": pd.Timestamp(f"2026-03-0{day}") + pd.to_timedelta(np.sort(rng.uniform(0, 86_000, ROWS)),
                                                                     unit="s"),
        "size": size, "weight": weight, "shop": shop,
        "price": 8 * size + 2 * weight + np.where(shop == "north", 5.0, 0.0) + rng.normal(0, 1, ROWS),
    })
    folder.mkdir(parents=True, exist_ok=True)
    df.to_parquet(folder / f"sales_{day}.parquet", index=False)
    return df


def _steps(store: MetadataStore, report: RunReport) -> dict[str, dict]:
    detail = store.run(report.run_id)
    assert detail is not None
    return {s.step: {"status": s.status, **s.summary} for s in detail.steps}


@pytest.fixture(scope="module")
def shifted_runs(ray_connected, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    root = tmp_path_factory.mktemp("shift")
    env = {"PLATFORM_HOME": str(root / "home")}
    (root / "prices.yaml").write_text(SPEC.format(data=root / "data"))
    spec = load_spec(root / "prices.yaml", env=env)
    assert spec.schema_ is None  # the schema is inferred from day 1
    settings = load_settings(env=env)
    days, reports, logs = [], [], []
    for day, scale in ((1, 1.0), (2, 5.0), (3, 5.0)):
        days.append(_write_day(root / "data", day, scale))
        reports.append(run_pipeline(spec, settings, log=logs.append))
    return {"root": root, "env": env, "settings": settings, "days": days, "reports": reports, "logs": logs}


def test_the_inferred_schema_is_soft_and_day_one_passes(shifted_runs: dict) -> None:
    first = shifted_runs["reports"][0]
    assert first.status == "SUCCEEDED", first.message
    art = MetadataStore(shifted_runs["settings"].metadata_url).latest(InferredSchema, "prices")
    assert art is not None and art.inferred
    recorded = Path(art.uri)
    schema = SchemaSpec.model_validate(yaml.safe_load(recorded.read_text()))
    size = next(c for c in schema.columns if c.name == "size")
    assert size.soft == ["min", "max"] and size.max is not None and size.max < 15
    assert "delete to enforce" in recorded.read_text()


def test_a_shift_to_larger_items_is_drift_not_invalid_data(shifted_runs: dict) -> None:
    store = MetadataStore(shifted_runs["settings"].metadata_url)
    for day, report in enumerate(shifted_runs["reports"][1:], start=2):
        assert report.status == "SUCCEEDED", (day, report.message, shifted_runs["logs"][-30:])
        steps = _steps(store, report)
        validate = steps["validate"]
        assert validate["status"] == "COMPLETE"
        assert validate["rows_quarantined"] == 0 and validate["rows_valid"] == ROWS
        if day == 2:  # against day 1: outside the inferred ranges and drifted
            assert {"size", "price", "weight"} <= set(validate["shifted_columns"])
            size = validate["shift"]["size"]
            assert size["fraction"] > 0.5 and size["seen_max"] > 40 and size["constraint"] == "range"
            assert "size" in validate["drifted_features"]
            assert validate["retrain_trigger"] is True
            report_json = json.loads(Path(validate["report"]).with_suffix(".json").read_text())
            assert report_json["rows_quarantined"] == 0 and "size" in report_json["shifted_columns"]
            assert "Shift on" in Path(validate["report"]).read_text()
        # The shifted rows are valid rows: the model trains on them and a version is registered.
        assert steps["train"]["status"] == "COMPLETE" and steps["register"]["status"] == "COMPLETE"
    alerts = [a for a in store.alerts("prices", 50) if a.run_id == shifted_runs["reports"][1].run_id]
    assert [a.kind for a in alerts] == ["drift"]
    assert "shift on" in alerts[0].message and "size" in alerts[0].message
    versions = ModelRegistry(shifted_runs["settings"]).versions("prices")
    assert [v.version for v in versions] == ["1", "2", "3"]


def test_manual_validate_uses_the_recorded_schema_and_reports_the_shift(shifted_runs: dict) -> None:
    day3 = shifted_runs["root"] / "data" / "sales_3.parquet"
    spec = shifted_runs["root"] / "prices.yaml"
    r = cli("validate", str(spec), "--batch", str(day3), "--out", str(shifted_runs["root"] / "manual"),
            env=shifted_runs["env"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "inferred and recorded" in r.stdout
    assert "shift on" in r.stdout and "size" in r.stdout and "the batch passes" in r.stdout
    assert "0 would be quarantined" in r.stdout
