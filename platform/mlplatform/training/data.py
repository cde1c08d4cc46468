"""Training sets as model inputs: load (hash-checked), split by time, check the label.

The holdout of a run is the newest `evaluation.test_fraction` of its training set, so the
challenger and the champion are scored on rows neither has seen, and a reproduction
splits the recorded snapshot in exactly the same place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mlplatform import storage
from mlplatform.errors import InputError, PlatformError


@dataclass
class SplitData:
    """What a search trial sees: training rows and, for a holdout search, validation rows."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_val: pd.DataFrame | None = None
    y_val: np.ndarray | None = None


@dataclass
class Columns:
    features: list[str]
    label: str
    timestamp: str | None
    entity: str | None


def load_frame(uri: str, expected_sha256: str | None = None) -> pd.DataFrame:
    """A training set; with `expected_sha256`, refuse one whose bytes changed since it was recorded."""
    fs, path = storage.resolve(uri)
    if expected_sha256 is not None:
        got = storage.sha256_file(fs, path)
        if got != expected_sha256:
            raise PlatformError(f"training set {uri} changed since it was recorded (sha256 {got[:12]} "
                                f"!= {expected_sha256[:12]}): refusing to train on it")
    return pq.read_table(path, filesystem=fs).to_pandas()


def split(df: pd.DataFrame, cols: Columns, fraction: float, how: str = "time",
          seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): by time, the newest `fraction` of rows is the test set."""
    if len(df) < 4:
        raise InputError(f"training set has {len(df)} row(s): too few to split into train and test")
    if how == "time" and cols.timestamp:
        order = [c for c in (cols.timestamp, cols.entity) if c]
        df = df.sort_values(order, kind="stable").reset_index(drop=True)
        cut = len(df) - max(1, math.ceil(len(df) * fraction))
        return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)
    from sklearn.model_selection import train_test_split  # a second of every import otherwise

    train, test = train_test_split(df, test_size=fraction, random_state=seed)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def xy(df: pd.DataFrame, cols: Columns) -> tuple[pd.DataFrame, np.ndarray]:
    missing = [c for c in [*cols.features, cols.label] if c not in df.columns]
    if missing:
        raise PlatformError(f"training set lacks column(s) {missing}")
    y = df[cols.label].to_numpy()
    if pd.isna(y).any():
        keep = ~pd.isna(y)
        df, y = df[keep], y[keep]
    return df[cols.features].reset_index(drop=True), y


def check_labels(y: np.ndarray, task: str, where: str = "training set") -> None:
    if len(y) == 0:
        raise InputError(f"{where} has no labelled rows")
    if task == "classification":
        classes = np.unique(y)
        if len(classes) < 2:
            only = classes[0].item() if isinstance(classes[0], np.generic) else classes[0]
            raise InputError(f"{where}: the label has a single class ({only!r}) in {len(y)} rows; "
                             "a classifier needs at least two")


def search_split(X: pd.DataFrame, y: np.ndarray, fraction: float) -> SplitData:
    """The newest `fraction` of the (time-ordered) training rows validates the trials."""
    cut = len(X) - max(1, math.ceil(len(X) * fraction))
    return SplitData(X.iloc[:cut].reset_index(drop=True), y[:cut],
                     X.iloc[cut:].reset_index(drop=True), y[cut:])
