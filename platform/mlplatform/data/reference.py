"""What earlier runs recorded that validation compares against: the pipeline's inferred
schema, the last validated batch's statistics, and the drift reference `training` (the
statistics of the champion model's training data).

Against the previous batch, a drift that lasts is reported once: the second drifted day
looks like the first and shows none. Against the data the production model learned from,
it is reported on every batch until a model trained on the new data becomes champion,
which is what continuous training needs to know. So the training_set step computes
statistics of the rows it trains on (the raw columns of the validated batches in the
training window, by the validation's own per-block code) and records their URI on the
TrainingSet; the registered ModelVersion names its training set; and the validate step
follows champion -> model version -> training set -> statistics.

Without a champion, or when the champion's training set has no statistics (a model
trained before they were recorded) or they cannot be read, there is no training
reference and the validate step falls back to the previous batch, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml

from mlplatform import storage
from mlplatform.artifacts import InferredSchema, ModelVersion, Statistics, TrainingSet
from mlplatform.data.schema import soften
from mlplatform.data.stats import DatasetStats
from mlplatform.metadata.store import MetadataStore
from mlplatform.spec import SchemaSpec

ChampionOf = Callable[[str], "str | None"]


def training_stats_uri(storage_uri: str, pipeline: str, run_id: str) -> str:
    """Where the training_set step of a run stores its training data's statistics."""
    return storage.join(storage_uri, "stats", pipeline, "training", run_id)


@dataclass(frozen=True)
class TrainingReference:
    """The champion's training statistics, or None and why there are none."""

    stats: DatasetStats | None
    label: str


def _champions(store: MetadataStore, pipeline: str, champion_of: ChampionOf) -> list[ModelVersion]:
    """The recorded model versions that are champion now, of every model this pipeline registered
    (one per segment with `model.segment_column`)."""
    names = dict.fromkeys(mv.name for _, _, mv in store.outputs_of(ModelVersion, pipeline=pipeline))
    found = []
    for name in names:
        version = champion_of(name)
        if version is not None and (mv := store.find(ModelVersion, f"models:/{name}/{version}")):
            found.append(mv)
    return found


def _run_of(store: MetadataStore, pipeline: str, training_set: TrainingSet) -> str:
    for _, run, art in store.outputs_of(TrainingSet, pipeline=pipeline, step="training_set"):
        if art.id == training_set.id:
            return run
    return "unknown run"


def champion_training_reference(store: MetadataStore, pipeline: str,
                                champion_of: ChampionOf) -> TrainingReference:
    """The training statistics of the pipeline's champion. With one model per segment, all
    trained on the same training set of their run, the newest registered champion's."""
    champions = _champions(store, pipeline, champion_of)
    if not champions:
        return TrainingReference(None, "no champion yet")
    mv = max(champions, key=lambda m: m.id or 0)
    who = f"champion {mv.name} v{mv.version}"
    ts = store.get(TrainingSet, mv.training_set_id) if mv.training_set_id is not None else None
    if ts is None:
        return TrainingReference(None, f"{who} has no recorded training set")
    if ts.statistics is None:
        return TrainingReference(None, f"{who} has no recorded training statistics (trained before "
                                       "they were recorded)")
    try:
        fs, path = storage.resolve(ts.statistics)
        stats = DatasetStats.load(fs, path)
    except (OSError, ValueError) as exc:  # deleted, or not statistics: say so, never fail validation
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return TrainingReference(None, f"the training statistics of {who} at {ts.statistics} cannot be "
                                       f"read: {first}")
    return TrainingReference(stats, f"training data of {who} (run {_run_of(store, pipeline, ts)}, "
                                    f"{stats.rows} rows)")


def recorded_schema(store: MetadataStore, pipeline: str) -> SchemaSpec | None:
    """The schema this pipeline inferred and recorded on an earlier run, if any."""
    art = store.latest(InferredSchema, pipeline, step="validate")
    if art is None:
        return None
    fs, path = storage.resolve(art.uri)
    with fs.open_input_stream(path) as src:
        schema = SchemaSpec.model_validate(yaml.safe_load(src.read()))
    # Recorded before `soft` existed, its inferred bounds were hard; nobody wrote them.
    return soften(schema) if art.inferred else schema


def latest_stats(store: MetadataStore, pipeline: str,
                 exclude_run: str | None = None) -> tuple[DatasetStats, Statistics] | None:
    """Statistics of the last batch of the pipeline that passed validation."""
    art = store.latest(Statistics, pipeline, step="validate", exclude_run=exclude_run)
    if art is None:
        return None
    fs, path = storage.resolve(art.uri)
    return DatasetStats.load(fs, path), art
