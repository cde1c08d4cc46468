import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from mlplatform.cli.app import app
from mlplatform.data.synthetic import (
    CATEGORICAL,
    LABEL,
    NUMERIC,
    DemoDataConfig,
    generate_day,
    write_demo_data,
)


def test_deterministic_for_a_seed(tmp_path) -> None:  # noqa: ANN001
    cfg = DemoDataConfig(days=2, rows_per_day=300, seed=3)
    a = write_demo_data(tmp_path / "a", cfg)
    b = write_demo_data(tmp_path / "b", cfg)
    for fa, fb in zip(a, b, strict=True):
        assert open(fa.path, "rb").read() == open(fb.path, "rb").read()
    other = generate_day(DemoDataConfig(rows_per_day=300, seed=4), 1)
    assert not other.equals(pd.read_parquet(a[0].path))


def test_columns_missing_values_and_a_learnable_noisy_label() -> None:
    cfg = DemoDataConfig(rows_per_day=6000, seed=1)
    df = generate_day(cfg, 1)
    assert len(NUMERIC) >= 8 and len(CATEGORICAL) >= 3
    for col in NUMERIC:
        assert pd.api.types.is_float_dtype(df[col]), col
    for col in CATEGORICAL:
        assert df[col].nunique() >= 3, col
    assert df[["income", "credit_score", "device"]].isna().mean().gt(0).all()
    assert df["event_ts"].is_monotonic_increasing
    assert (df["event_ts"].dt.date == cfg.start).all()
    X = df[NUMERIC].fillna(df[NUMERIC].median())
    X = pd.concat([X, pd.get_dummies(df[CATEGORICAL])], axis=1).to_numpy(float)
    train, test = slice(0, 4000), slice(4000, None)
    model = LogisticRegression(max_iter=2000).fit(X[train] / X[train].std(0).clip(1e-9),
                                                 df[LABEL][train])
    auc = roc_auc_score(df[LABEL][test], model.predict_proba(X[test] / X[train].std(0).clip(1e-9))[:, 1])
    assert 0.62 < auc < 0.95, auc  # learnable, but noisy


def test_drift_day_moves_features_and_label_relation() -> None:
    cfg = DemoDataConfig(rows_per_day=5000, seed=2, drift_day=3)
    before, after = generate_day(cfg, 2), generate_day(cfg, 3)
    assert after["income"].mean() > 1.15 * before["income"].mean()
    assert after["device"].value_counts(normalize=True)["mobile"] < 0.45
    assert after["days_since_last_login"].median() > 1.5 * before["days_since_last_login"].median()
    corr = lambda d: np.corrcoef(d["spend_30d"], d[LABEL])[0, 1]  # noqa: E731
    assert corr(after) - corr(before) > 0.1


def test_break_day_breaks_the_schema() -> None:
    cfg = DemoDataConfig(rows_per_day=2000, seed=2, break_day=2)
    ok, broken = generate_day(cfg, 1), generate_day(cfg, 2)
    assert "credit_score" in ok and "creditScore" in broken and "credit_score" not in broken
    assert broken["age"].dtype == object or pd.api.types.is_string_dtype(broken["age"])
    assert (broken["country"] == "XX").mean() > 0.1
    assert broken["sessions_7d"].isna().mean() > 0.5 and ok["sessions_7d"].isna().mean() == 0


def test_demo_data_cli(tmp_path) -> None:  # noqa: ANN001
    runner = CliRunner()
    result = runner.invoke(app, ["demo-data", str(tmp_path / "d"), "--days", "3",
                                 "--rows-per-day", "50", "--drift-day", "2", "--json"])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "d").glob("*.parquet"))
    assert [f.name for f in files] == ["events_2026-01-01.parquet", "events_2026-01-02.parquet",
                                       "events_2026-01-03.parquet"]
    bad = runner.invoke(app, ["demo-data", str(tmp_path / "e"), "--days", "0"])
    assert bad.exit_code == 2 and "--days 0" in bad.output
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
