"""A feature transformation that fails, for the featurize step's error path."""

import pandas as pd


def explode(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(score=df["no_such_column"] * 2)
