"""Row-wise feature transformations of the demo pipeline (referenced by import path from
demo.yaml). The same function runs in the featurize step's Ray Data tasks and at
serving time, so training and serving see the same values."""

from __future__ import annotations

import numpy as np
import pandas as pd


def activity(df: pd.DataFrame) -> pd.DataFrame:
    """How engaged a customer is at this event."""
    sessions = df["sessions_7d"].astype("float64")
    minutes = df["avg_session_min"].astype("float64").fillna(0.0)
    df["engagement_score"] = (np.log1p(sessions) * np.log1p(minutes)
                              / (1.0 + df["days_since_last_login"].astype("float64")))
    df["spend_per_session"] = df["spend_30d"].astype("float64") / sessions.clip(lower=1.0)
    return df
