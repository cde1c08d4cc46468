"""The baseline of benchmarks/pipeline.py: the same pipeline as one plain Python script, no
cluster, no stores. What a data scientist would write instead of the platform, doing the same
work on the same files:

- ingest: `pandas.read_parquet` of the day's file.
- validate: a schema inferred from the previous day's file by the platform's rules (types,
  nullability with a null limit of twice the observed share + 1%, numeric ranges from the
  p0.1..p99.9 span with a 25% margin, domains of strings with at most 50 values), checked on the
  day as pandas operations (missing / extra columns, types, null fractions, out-of-range and
  unseen values counted); statistics per column (count, nulls, mean, std, min, max, quantiles,
  a histogram on the reference's bins, top categories); drift against the previous day:
  `scipy.stats.ks_2samp` for numbers, a chi-square test for categories, p < 0.05, and the
  dataset drift share of the spec.
- featurize: the spec's feature views: the same transformation function (imported by its path)
  and the same windowed aggregations (pandas time-based rolling per entity, t - w < ts <= t).
  Every feature row is its label row's own event, so the point-in-time join of the platform is
  the identity here and is not done.
- training_set: label rows, sorted by (time, entity); the newest test_fraction is the holdout,
  the newest validation_fraction of the rest validates the search (as the platform splits).
- train: the platform's preprocessing (median imputation + scaling of numbers, a missing marker +
  one-hot encoding of the rest) and the spec's estimator in a scikit-learn Pipeline;
  `RandomizedSearchCV(n_iter=num_samples, cv=PredefinedSplit(validation), refit=False)` over the
  spec's space (scipy.stats distributions), then the final fit with the best configuration.
- evaluate: the holdout metrics and the primary metric per slice.
- register: `joblib.dump` of the model, with its sha256.

Run by pipeline.py as a child (`python _plain_pipeline.py --spec S --current F --previous F
--out-dir D`); it reports each stage's seconds on stdout (`@@result`, _harness.run_worker). The
imports are at the top, so its `started` phase marks the end of the interpreter's start-up.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import yaml
from scipy import stats
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, PredefinedSplit, RandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

try:
    import _harness as h
except ImportError:  # imported as benchmarks._plain_pipeline
    from benchmarks import _harness as h

JsonDict = dict[str, Any]
MAX_DOMAIN, RANGE_MARGIN, P_VALUE = 50, 0.25, 0.05
SCORING = {"roc_auc": "roc_auc", "log_loss": "neg_log_loss", "accuracy": "accuracy", "f1": "f1",
           "rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"}
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Stages:
    """Seconds per stage, each also announced as a phase (for the parent's memory windows)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        h.emit_phase(f"{name} start")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        h.emit_phase(f"{name} end")


# --- validate ---------------------------------------------------------------------------


def kind(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_numeric_dtype(s):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "timestamp"
    return "string"


def infer_rules(ref: pd.DataFrame, keys: set[str]) -> dict[str, JsonDict]:
    """The reference's schema, by the platform's inference rules (mlplatform.data.schema)."""
    rules: dict[str, JsonDict] = {}
    for col in ref.columns:
        s = ref[col]
        nulls = float(s.isna().mean())
        rule: JsonDict = {"kind": kind(s), "max_null": min(1.0, round(nulls * 2 + 0.01, 3)) if nulls else 0.0}
        values = s.dropna()
        if rule["kind"] == "string" and col not in keys and 0 < values.nunique() <= MAX_DOMAIN:
            rule["domain"] = set(values.astype(str).unique())
        elif rule["kind"] == "number" and len(values):
            lo, hi = values.quantile([0.001, 0.999]).to_list()
            span = (hi - lo) or abs(hi) or 1.0
            low, high = lo - RANGE_MARGIN * span, hi + RANGE_MARGIN * span
            rule["min"] = 0.0 if values.min() >= 0 and low < 0 else low
            rule["max"] = high
        rules[col] = rule
    return rules


def column_stats(s: pd.Series, ref: pd.Series | None) -> JsonDict:
    out: JsonDict = {"count": int(s.notna().sum()), "nulls": int(s.isna().sum())}
    k = kind(s)
    if k == "number":
        v = s.dropna().astype("float64")
        if len(v):
            out.update(mean=float(v.mean()), std=float(v.std()), min=float(v.min()), max=float(v.max()),
                       quantiles=v.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).round(6).to_list())
            bins = np.histogram_bin_edges(ref.dropna().astype("float64"), bins=10) if ref is not None \
                else 10
            out["histogram"] = np.histogram(v.clip(bins[0], bins[-1]) if ref is not None else v,
                                            bins=bins)[0].tolist()
    elif k in ("string", "bool"):
        out["top"] = s.astype(str).where(s.notna()).value_counts().head(20).to_dict()
    return out


def drift(cur: pd.Series, ref: pd.Series) -> tuple[str, float]:
    """(test, p-value) of one feature against the reference."""
    if kind(ref) == "number":
        a, b = ref.dropna().astype("float64"), cur.dropna().astype("float64")
        if len(a) == 0 or len(b) == 0:
            return "ks", 1.0
        return "ks", float(stats.ks_2samp(a, b).pvalue)
    counts = pd.concat([ref.astype(str).where(ref.notna()).value_counts().rename("ref"),
                        cur.astype(str).where(cur.notna()).value_counts().rename("cur")], axis=1).fillna(0)
    if len(counts) < 2:
        return "chisquare", 1.0
    return "chisquare", float(stats.chi2_contingency(counts.to_numpy().T)[1])


def validate(df: pd.DataFrame, ref: pd.DataFrame, cfg: JsonDict) -> JsonDict:
    keys = {cfg["entity"], cfg["timestamp"]}
    rules = infer_rules(ref, keys)
    breaks = [f"missing column {c}" for c in rules if c not in df.columns]
    breaks += [f"extra column {c}" for c in df.columns if c not in rules]
    failures, shifts = [], {}
    for col, rule in rules.items():
        if col not in df.columns:
            continue
        s = df[col]
        if kind(s) != rule["kind"] and s.notna().any():
            breaks.append(f"{col}: {kind(s)}, expected {rule['kind']}")
            continue
        nulls = float(s.isna().mean())
        if nulls > rule["max_null"]:
            failures.append(f"{col}: {nulls:.3f} null > {rule['max_null']}")
        if "min" in rule:
            v = s.dropna()
            out = int(((v < rule["min"]) | (v > rule["max"])).sum())
            if out:
                shifts[col] = out
        if "domain" in rule:
            unseen = int((~s.dropna().astype(str).isin(rule["domain"])).sum())
            if unseen:
                shifts[col] = unseen
    statistics = {c: column_stats(df[c], ref[c] if c in ref.columns else None) for c in df.columns}
    features = [c for c in df.columns if c not in keys | {cfg["label"]} and c in ref.columns]
    tests = {c: drift(df[c], ref[c]) for c in features}
    drifted = sorted(c for c, (_, p) in tests.items() if p < P_VALUE)
    share = len(drifted) / max(1, len(features))
    return {"rows": len(df), "schema_breaks": breaks, "dataset_failures": failures, "shifts": shifts,
            "statistics_columns": len(statistics), "drifted": drifted, "drift_share": round(share, 3),
            "dataset_drift": share >= cfg["drift_share"]}


# --- featurize --------------------------------------------------------------------------


def load_function(path: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def featurize(df: pd.DataFrame, cfg: JsonDict) -> dict[str, pd.DataFrame]:
    """Each view's feature columns, aligned with `df`'s rows."""
    ent, ts = cfg["entity"], cfg["timestamp"]
    order = df.sort_values([ent, ts], kind="stable").index
    out: dict[str, pd.DataFrame] = {}
    for view in cfg["views"]:
        v = load_function(view["transformation"])(df.copy()) if view.get("transformation") else df
        cols: dict[str, pd.Series] = {c: v[c] for c in view.get("features", [])}
        for agg in view.get("aggregations", []):
            col = v[agg["column"]]
            rolled = [f for f in agg["functions"] if f != "last"]
            numeric = [f for f in rolled if f != "count"]
            values = col.astype("float64") if numeric else col.notna().astype("float64").where(col.notna())
            frame = pd.DataFrame({ent: df[ent].loc[order].to_numpy(), ts: df[ts].loc[order].to_numpy(),
                                  "v": values.loc[order].to_numpy()})
            for window in agg["windows"]:
                seconds = int(window[:-1]) * SECONDS[window[-1]]
                result = (frame.groupby(ent, sort=False).rolling(f"{seconds}s", on=ts, closed="right")["v"]
                          .agg(rolled))
                for fn in rolled:  # groups in order of first appearance = frame order (sorted by entity)
                    s = pd.Series(result[fn].to_numpy(), index=order).reindex(df.index)
                    cols[f"{agg['column']}_{fn}_{window}"] = s.fillna(0.0) if fn == "count" else s
        out[view["name"]] = pd.DataFrame(cols, index=df.index)
    return out


def service_columns(cfg: JsonDict, views: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = []
    for ref in cfg["service"]:
        view, _, feature = ref.partition(":")
        parts.append(views[view] if feature == "*" else views[view][[feature]])
    return pd.concat(parts, axis=1)


# --- train and evaluate -----------------------------------------------------------------


def is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def model_pipeline(cfg: JsonDict, X: pd.DataFrame) -> Pipeline:
    numeric = [c for c in X.columns if is_numeric(X[c])]
    other = [c for c in X.columns if c not in numeric]
    pre = ColumnTransformer(
        [("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
          numeric),
         ("categorical", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                                   ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
          other)], remainder="drop", verbose_feature_names_out=False)
    module, _, name = cfg["estimator"].rpartition(".")
    est_cls = getattr(importlib.import_module(module), name)
    est = est_cls(**{**cfg["params"], "random_state": cfg["seed"]})
    return Pipeline([("preprocess", pre), ("model", est)])


def distribution(d: JsonDict) -> Any:
    t = d["type"]
    if t == "loguniform":
        return stats.loguniform(d["low"], d["high"])
    if t == "uniform":
        return stats.uniform(d["low"], d["high"] - d["low"])
    if t == "randint":
        return stats.randint(int(d["low"]), int(d["high"]))  # high excluded, as in Ray Tune
    if t in ("choice", "grid"):
        return list(d["values"])
    raise ValueError(f"search space type {t!r} is not supported by the plain baseline")


def holdout_metrics(task: str, model: Pipeline, X: pd.DataFrame, y: np.ndarray) -> JsonDict:
    if task == "regression":
        p = model.predict(X)
        return {"rmse": float(np.sqrt(skm.mean_squared_error(y, p))),
                "mae": float(skm.mean_absolute_error(y, p)), "r2": float(skm.r2_score(y, p))}
    proba = model.predict_proba(X)
    pred = model.classes_[proba.argmax(axis=1)]
    out = {"accuracy": float(skm.accuracy_score(y, pred)),
           "log_loss": float(skm.log_loss(y, proba, labels=model.classes_))}
    if len(np.unique(y)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y, proba[:, 1]))
        out["f1"] = float(skm.f1_score(y, pred, pos_label=model.classes_[1]))
    return out


# --- the script -------------------------------------------------------------------------


def config(raw: JsonDict) -> JsonDict:
    """What the script needs from the spec (the same file the platform runs)."""
    src, model, ev = raw["source"], raw["model"], raw.get("evaluation", {})
    feats = raw["features"]
    service = next(s for s in feats["services"] if s["name"] == model["feature_service"])
    search = model["search"]
    return {"entity": src["entity_column"], "timestamp": src["timestamp_column"],
            "label": src["label_column"], "views": feats["views"], "service": service["features"],
            "task": model.get("task", "classification"),
            "estimator": model["estimator"], "params": model.get("params", {}), "seed": model.get("seed", 0),
            "metric": model["metric"], "space": search["space"], "trials": search.get("num_samples", 8),
            "validation_fraction": search.get("validation_fraction", 0.2),
            "test_fraction": ev.get("test_fraction", 0.2), "slices": ev.get("slices", []),
            "drift_share": raw.get("validation", {}).get("drift", {}).get("dataset_drift_share", 0.5)}


def as_object(X: pd.DataFrame) -> pd.DataFrame:
    """Non-numeric columns as objects with NaN for missing (what the platform's preprocessing does
    first: scikit-learn's imputer and encoder refuse pandas' string dtypes with pd.NA)."""
    X = X.copy()
    for c in X.columns:
        if not is_numeric(X[c]):
            X[c] = X[c].astype(object).where(X[c].notna(), np.nan)
    return X


def run(args: argparse.Namespace) -> JsonDict:
    cfg = config(yaml.safe_load(Path(args.spec).read_text()))
    stage = Stages()
    with stage("ingest"):
        df = pd.read_parquet(args.current)
    with stage("validate"):
        report = validate(df, pd.read_parquet(args.previous), cfg)
    with stage("featurize"):
        views = featurize(df, cfg)
    with stage("training_set"):
        ent, ts, label = cfg["entity"], cfg["timestamp"], cfg["label"]
        X_all = service_columns(cfg, views)
        data = pd.concat([df[[ent, ts, label]], X_all], axis=1)
        data = data[data[label].notna()].sort_values([ts, ent], kind="stable").reset_index(drop=True)
        cut = len(data) - max(1, math.ceil(len(data) * cfg["test_fraction"]))
        train, test = data.iloc[:cut], data.iloc[cut:].reset_index(drop=True)
        X, y = as_object(train[X_all.columns]), train[label].to_numpy()
        Xt, yt = as_object(test[X_all.columns]), test[label].to_numpy()
        vcut = len(X) - max(1, math.ceil(len(X) * cfg["validation_fraction"]))
        folds = np.r_[np.full(vcut, -1), np.zeros(len(X) - vcut, dtype=int)]
    with stage("train"):
        pipe = model_pipeline(cfg, X)
        if args.configs:  # the platform's own trials: the same configurations, one grid point each
            trials = json.loads(Path(args.configs).read_text())
            grid = [{f"model__{k}": [v] for k, v in c.items()} for c in trials]
            search = GridSearchCV(pipe, grid, scoring=SCORING[cfg["metric"]], cv=PredefinedSplit(folds),
                                  n_jobs=args.n_jobs, refit=False)
        else:
            space = {f"model__{k}": distribution(d) for k, d in cfg["space"].items()}
            search = RandomizedSearchCV(pipe, space, n_iter=cfg["trials"], scoring=SCORING[cfg["metric"]],
                                        cv=PredefinedSplit(folds), n_jobs=args.n_jobs, refit=False,
                                        random_state=cfg["seed"])
        search.fit(X, y)
        best = search.best_params_
        model = clone(pipe).set_params(**best).fit(X, y)
    with stage("evaluate"):
        holdout = holdout_metrics(cfg["task"], model, Xt, yt)
        slices: JsonDict = {}
        for col in cfg["slices"]:
            keys = test[col].astype(str).where(test[col].notna(), "null")
            for value, idx in test.groupby(keys).groups.items():
                m = holdout_metrics(cfg["task"], model, Xt.loc[idx], yt[idx])
                slices[f"{col}={value}"] = {"rows": len(idx), cfg["metric"]: m.get(cfg["metric"])}
    with stage("register"):
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "model.joblib"
        joblib.dump(model, path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        meta = {"sha256": sha, "holdout": holdout, "best": best}
        (out / "model.json").write_text(json.dumps(meta, default=str))
    return {"status": "ok", "stages": stage.seconds, "rows": len(df), "train_rows": len(X),
            "test_rows": len(Xt),
            "features": list(X_all.columns), "metric": cfg["metric"], "holdout": holdout,
            "best": {k.removeprefix("model__"): v for k, v in best.items()},
            "trial_scores": [float(s) for s in search.cv_results_["mean_test_score"]],
            "validation": report, "slices": slices, "model_sha256": sha, "n_jobs": args.n_jobs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The plain-script baseline of the pipeline benchmark.")
    p.add_argument("--spec", required=True)
    p.add_argument("--current", required=True, help="the day's Parquet file")
    p.add_argument("--previous", required=True, help="the previous day's file: schema and drift reference")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--n-jobs", type=int, default=1, help="RandomizedSearchCV's n_jobs")
    p.add_argument("--configs", default=None, help="JSON list of the trials' configurations to try "
                   "(the platform's); default: RandomizedSearchCV's own draws")
    args = p.parse_args(argv)
    return h.run_worker(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
