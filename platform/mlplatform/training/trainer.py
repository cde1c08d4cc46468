"""Training a pipeline's model(s) from a recorded training set: the code behind the `train`
step, `platformctl tune` and `platformctl models reproduce`.

The split is a function of the training set and the spec only (newest rows are the
holdout), so the evaluate step and a reproduction see exactly the rows training left out.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlplatform import storage
from mlplatform.artifacts import TrainingSet
from mlplatform.errors import InputError
from mlplatform.evaluation.metrics import evaluate_model
from mlplatform.metadata.store import MetadataStore
from mlplatform.runtime.placement import Placement, place
from mlplatform.settings import Settings
from mlplatform.spec import EvaluationSpec, ModelSpec, PipelineSpec
from mlplatform.training.data import Columns, SplitData, check_labels, load_frame, search_split, split, xy
from mlplatform.training.estimators import check_model
from mlplatform.training.search import SearchResult, TrialRecord, TuneStorage, final_fit, run_search

ALL = ""  # the segment key of an unsegmented model


@dataclass
class Prepared:
    """A training set split for training and evaluation, per segment."""

    cols: Columns
    train: dict[str, tuple[pd.DataFrame, np.ndarray]]
    test: dict[str, tuple[pd.DataFrame, np.ndarray, pd.DataFrame]]
    training_set: TrainingSet
    rows: int = 0
    all_train: tuple[pd.DataFrame, np.ndarray] | None = None  # every segment, in time order


class FitResult(BaseModel):
    """One model of a run: what the registry and a reproduction need."""

    model_config = {"arbitrary_types_allowed": True}
    name: str
    segment: str | None
    config: dict[str, Any]
    holdout: dict[str, float]
    search: SearchResult | None = None
    duration_s: float
    model: Any = None


def model_name(spec: PipelineSpec, segment: str | None) -> str:
    if not segment:
        return spec.name
    return f"{spec.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', segment)}"


def code_version() -> str:
    """The git commit of the platform code when it runs from a checkout, else its version."""
    from mlplatform import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        if sha.returncode == 0 and sha.stdout.strip():
            return sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"mlplatform-{__version__}"


def schema_of(X: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in X.dtypes.items()}


def schema_hash(X: pd.DataFrame) -> str:
    return hashlib.sha256(json.dumps(schema_of(X), sort_keys=True).encode()).hexdigest()[:16]


def columns_of(art: TrainingSet) -> Columns:
    if not art.label:
        raise InputError("source.label_column is not set: a model needs a label to train on")
    return Columns(features=list(art.features), label=art.label, timestamp=art.timestamp, entity=art.entity)


def prepare(model: ModelSpec, ev: EvaluationSpec, art: TrainingSet) -> Prepared:
    """Load the training set (hash-checked), split it, check labels, cut segments."""
    cols = columns_of(art)
    df = load_frame(art.uri, art.content_hash)
    # Rows whose label has not arrived yet teach nothing and judge nothing.
    df = df[df[cols.label].notna()].reset_index(drop=True)
    missing = [c for c in ev.slices if c not in df.columns]
    if missing:
        raise InputError(f"evaluation.slices {missing}: not columns of the training set "
                         f"(features: {cols.features})")
    seg_col = model.segment_column
    if seg_col and seg_col not in df.columns:
        raise InputError(f"model.segment_column {seg_col!r} is not a column of the training set "
                         f"(features: {cols.features})")
    train_df, test_df = split(df, cols, ev.test_fraction, ev.split, model.seed)
    prepared = Prepared(cols=cols, train={}, test={}, training_set=art, rows=len(df),
                        all_train=xy(train_df, cols))
    segments = sorted(train_df[seg_col].dropna().astype(str).unique()) if seg_col else [ALL]
    for seg in segments:
        tr = train_df if not seg_col else train_df[train_df[seg_col].astype(str) == seg]
        te = test_df if not seg_col else test_df[test_df[seg_col].astype(str) == seg]
        X, y = xy(tr.reset_index(drop=True), cols)
        where = "the training rows" + (f" of segment {seg_col}={seg!r}" if seg_col else "")
        check_labels(y, model.task, where)
        Xt, yt = xy(te.reset_index(drop=True), cols)
        prepared.train[seg] = (X, y)
        prepared.test[seg] = (Xt, yt, te.reset_index(drop=True))
    return prepared


def tune_root(settings: Settings, pipeline: str) -> TuneStorage:
    """Where Tune and Train keep a pipeline's experiments (and checkpoints): under the storage
    URI, so that on a multi-node cluster every trial checkpoints to, and the final fit loads
    its model from, shared storage (S3), never a node's local disk. Locally, a folder under
    the home."""
    root = storage.join(settings.storage_uri, "tune", pipeline)
    if "://" not in root:
        Path(root).mkdir(parents=True, exist_ok=True)
        return TuneStorage(path=str(Path(root).resolve()))
    fs, path = storage.resolve(root)
    return TuneStorage(path=path, filesystem=fs)


def search_data(model: ModelSpec, prepared: Prepared) -> SplitData:
    """What the search sees: every segment's training rows in time order (one search serves
    all segments), the newest `validation_fraction` validating unless CV is asked for."""
    assert model.search is not None and prepared.all_train is not None
    X, y = prepared.all_train
    return SplitData(X, y) if model.search.cv_folds else search_split(X, y, model.search.validation_fraction)


def newest_training_set(store: MetadataStore, pipeline: str) -> TrainingSet | None:
    return store.latest(TrainingSet, pipeline, step="training_set")


def placement_for(spec: PipelineSpec, prepared: Prepared, settings: Settings) -> Placement:
    """Where training runs: in this process for a small training set (random or grid search,
    the final fit), on the cluster for a big one or for what only Ray implements."""
    from mlplatform.training.local_search import needs_tune

    return place(spec.execution, "train", prepared.rows, setting=settings.placement,
                 cluster_only=needs_tune(spec.model))


def train(spec: PipelineSpec, settings: Settings, prepared: Prepared, *, name: str,
          log: Callable[[str], None] = print, search: bool = True,
          placement: Placement | None = None) -> list[FitResult]:
    """Search (once, on all segments' rows) and fit the final model(s), on the cluster or, for
    a small training set, in this process (`placement`, default `placement_for`)."""
    from mlplatform.training import local_search

    model = spec.model
    check_model(model, settings.estimator_modules)
    where = placement or placement_for(spec, prepared, settings)
    log(f"training on {prepared.rows} rows {where.line()}")
    if not where.local:
        from mlplatform.runtime.connect import connect

        connect(settings)
    root = tune_root(settings, spec.name) if not where.local else None
    result: SearchResult | None = None
    config: dict[str, Any] = {}
    t0 = time.perf_counter()
    if search and model.search:
        data = search_data(model, prepared)
        n = model.search.num_samples
        log(f"searching {len(model.search.space)} parameter(s), {n} trial(s), {model.search.algorithm}"
            f"{' + ASHA' if model.search.scheduler == 'asha' else ''} on {len(data.X_train)} rows")

        def on_trial(t: TrialRecord) -> None:
            log(f"trial {t.trial_id}: {model.metric}={t.score if t.score is None else round(t.score, 4)} "
                f"{json.dumps(t.config, default=str)}")

        if root is None:
            result = local_search.run_search_local(model, data, modules=settings.estimator_modules,
                                                   on_trial=on_trial)
        else:
            result = run_search(model, data, storage_path=root, name=f"{name}-search",
                                modules=settings.estimator_modules, on_trial=on_trial)
        config = result.best_config
        log(f"best {model.metric}={result.best_score:.4f} with {json.dumps(config, default=str)} "
            f"({len(result.trials)} trials in {result.wall_s:.1f}s)")
    retries = model.search.max_failures if model.search else 1
    datas = {seg: SplitData(X, y) for seg, (X, y) in prepared.train.items()}
    if root is None:
        models = local_search.final_fit_local(model, datas, config, modules=settings.estimator_modules)
    elif model.num_workers:  # data-parallel xgboost on Ray Train, one segment after another
        from mlplatform.training.distributed import fit_distributed

        models = {seg: fit_distributed(model, X, y, config, storage_path=root,
                                       name=f"{name}-xgb{'-' + seg if seg else ''}",
                                       modules=settings.estimator_modules, max_failures=retries)
                  for seg, (X, y) in prepared.train.items()}
    else:  # one Tune trial per segment, in parallel
        models = final_fit(model, datas, config, storage_path=root, name=f"{name}-fit",
                           modules=settings.estimator_modules, max_failures=retries)
    duration = time.perf_counter() - t0
    out = []
    for seg, fitted in models.items():
        Xt, yt, _ = prepared.test[seg]
        holdout = evaluate_model(model.task, fitted, Xt, yt) if len(yt) else {}
        out.append(FitResult(name=model_name(spec, seg or None), segment=seg or None, config=config,
                                holdout=holdout, search=result, duration_s=duration, model=fitted))
    return out
