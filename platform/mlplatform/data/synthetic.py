"""A synthetic customer-event stream for demos, tests and benchmarks.

No data set can be downloaded here, and a demo needs data that behaves like the
real thing: entities that recur with stable traits, skewed numeric features,
categorical features, missing values, and a label a model can learn but not
perfectly. `drift_day` shifts some distributions and the label relation from that
day on; `break_day` writes one day with schema breaks and `noise_day` one whose labels are
shuffled, so that every part of the platform (validation, drift, retraining, the model
gate) has something real to react to.
Deterministic for a seed: day d depends only on (seed, d).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR"]
COUNTRY_P = [0.38, 0.14, 0.13, 0.1, 0.15, 0.1]
DEVICES = ["mobile", "desktop", "tablet"]
DEVICE_P = [0.58, 0.34, 0.08]
PLANS = ["free", "basic", "premium"]
PLAN_P = [0.55, 0.3, 0.15]

NUMERIC = ["age", "income", "tenure_days", "sessions_7d", "avg_session_min",
           "days_since_last_login", "support_tickets_90d", "spend_30d", "discount_rate",
           "credit_score"]
CATEGORICAL = ["country", "device", "plan"]
ENTITY, TIMESTAMP, LABEL = "customer_id", "event_ts", "churned"


class DemoDataConfig(BaseModel):
    days: int = Field(7, ge=1, le=3650)
    rows_per_day: int = Field(2000, ge=1, le=50_000_000)
    seed: int = 7
    entities: int = Field(5000, ge=1)
    start: dt.date = dt.date(2026, 1, 1)
    drift_day: int | None = Field(None, ge=1, description="1-based day from which data drifts.")
    break_day: int | None = Field(None, ge=1, description="1-based day written with schema breaks.")
    noise_day: int | None = Field(None, ge=1, description="1-based day whose labels are shuffled: "
                                  "the same churn rate, no relation to the features.")


class DayFile(BaseModel):
    day: int
    date: dt.date
    path: str
    rows: int
    drifted: bool
    broken: bool
    noisy: bool = False


def _entities(cfg: DemoDataConfig) -> pd.DataFrame:
    """Traits that stay with a customer across days."""
    rng = np.random.default_rng([cfg.seed, 0])
    n = cfg.entities
    return pd.DataFrame({
        ENTITY: [f"c{i:06d}" for i in range(n)],
        "age": np.clip(rng.normal(41, 13, n), 18, 90).round(),
        "income": rng.lognormal(10.8, 0.55, n).round(2),
        "signup_offset": rng.exponential(700, n),
        "country": rng.choice(COUNTRIES, n, p=COUNTRY_P),
        "plan": rng.choice(PLANS, n, p=PLAN_P),
        "credit_score": np.clip(rng.normal(680, 70, n), 300, 850).round(),
        "engagement": rng.normal(0, 1, n),
    })


def generate_day(cfg: DemoDataConfig, day: int, base: pd.DataFrame | None = None) -> pd.DataFrame:
    """Day `day` (1-based) of the stream as a DataFrame."""
    base = _entities(cfg) if base is None else base
    rng = np.random.default_rng([cfg.seed, day])
    n = cfg.rows_per_day
    drifted = cfg.drift_day is not None and day >= cfg.drift_day
    idx = rng.integers(0, len(base), n)
    ent = base.iloc[idx].reset_index(drop=True)
    date = cfg.start + dt.timedelta(days=day - 1)
    seconds = np.sort(rng.uniform(0, 86400, n))
    ts = pd.Timestamp(date) + pd.to_timedelta(seconds, unit="s")
    eng = ent["engagement"].to_numpy() + rng.normal(0, 0.5, n)
    device_p = [0.35, 0.45, 0.2] if drifted else DEVICE_P
    df = pd.DataFrame({
        ENTITY: ent[ENTITY].to_numpy(),
        TIMESTAMP: ts.astype("datetime64[us]"),
        "age": ent["age"].to_numpy(),
        "income": ent["income"].to_numpy() * (1.25 if drifted else 1.0),
        "tenure_days": (ent["signup_offset"].to_numpy() + day).round(),
        "sessions_7d": rng.poisson(np.exp(1.6 + 0.45 * eng)).astype("float64"),
        "avg_session_min": rng.lognormal(2.2 + 0.2 * eng, 0.6).round(2),
        "days_since_last_login": rng.exponential(
            np.exp(1.3 - 0.6 * eng) * (2.0 if drifted else 1.0)).round(1),
        "support_tickets_90d": rng.poisson(0.4 + 0.5 * np.clip(-eng, 0, None)).astype("float64"),
        "spend_30d": rng.gamma(2.0, 20 + 15 * np.clip(eng + 1, 0, None)).round(2),
        "discount_rate": rng.beta(1.2, 8, n).round(3),
        "credit_score": ent["credit_score"].to_numpy(),
        "country": ent["country"].to_numpy(),
        "device": rng.choice(DEVICES, n, p=device_p),
        "plan": ent["plan"].to_numpy(),
    })
    # Churn: fewer sessions, long absences and tickets raise it; premium plans lower it.
    plan_effect = df["plan"].map({"free": 0.5, "basic": 0.0, "premium": -0.7}).to_numpy()
    logit = (-1.2 - 0.35 * (df["sessions_7d"] - 5) / 3 + 0.25 * df["days_since_last_login"] / 3
             + 0.45 * df["support_tickets_90d"] + plan_effect - 0.4 * df["discount_rate"] * 10
             + rng.normal(0, 0.9, n))
    if drifted:  # the relation itself moves: price sensitivity starts to matter
        logit = logit + 0.8 * (df["spend_30d"] / 60 - 1) - 0.25 * (df["sessions_7d"] - 5) / 3
    df[LABEL] = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype("int8")
    if cfg.noise_day is not None and day == cfg.noise_day:  # heavy label noise: a bad day of labels
        df[LABEL] = rng.permutation(df[LABEL].to_numpy())
    # Missing values, as real pipelines see them.
    for col, frac in (("income", 0.04), ("credit_score", 0.06), ("avg_session_min", 0.02)):
        df.loc[rng.uniform(size=n) < frac, col] = np.nan
    df["device"] = df["device"].where(rng.uniform(size=n) >= 0.01, None)
    if cfg.break_day is not None and day == cfg.break_day:
        df = _break(df, rng)
    return df


def _break(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Every kind of schema break at once: rename, wrong dtype, unseen category, null burst."""
    df = df.rename(columns={"credit_score": "creditScore"})
    df["age"] = df["age"].map(lambda v: f"{v:.0f} years")
    df.loc[rng.uniform(size=len(df)) < 0.2, "country"] = "XX"
    df.loc[rng.uniform(size=len(df)) < 0.6, "sessions_7d"] = np.nan
    return df


def write_day(out: str | Path, cfg: DemoDataConfig, day: int,
              base: pd.DataFrame | None = None) -> DayFile:
    """Day `day` as one Parquet file named by its date, written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = generate_day(cfg, day, base)
    date = cfg.start + dt.timedelta(days=day - 1)
    path = out / f"events_{date.isoformat()}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    tmp.replace(path)
    return DayFile(day=day, date=date, path=str(path), rows=len(df),
                   drifted=cfg.drift_day is not None and day >= cfg.drift_day,
                   broken=cfg.break_day == day, noisy=cfg.noise_day == day)


def write_demo_data(out: str | Path, cfg: DemoDataConfig,
                    on_day: Callable[[DayFile], None] | None = None) -> list[DayFile]:
    """One Parquet file per day."""
    base = _entities(cfg)
    files = []
    for day in range(1, cfg.days + 1):
        files.append(write_day(out, cfg, day, base))
        if on_day:
            on_day(files[-1])
    return files
