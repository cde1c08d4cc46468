"""The model registry on MLflow, with the platform's own integrity check.

MLflow holds runs, model versions and the `champion` / `challenger` aliases; the
platform's metadata store holds each model artifact's sha256, and every load compares
the downloaded files against it, so a model changed behind the registry's back (a
tampered or half-copied artifact) is refused instead of served. Models are saved with
cloudpickle (the preprocessing uses a module-level function skops would not trust); the
hash check is what makes loading a pickle safe here.

Who is champion is not MLflow's to say: it is a row of the metadata store changed by
compare-and-set (mlplatform.metadata.champion). MLflow's `champion` alias mirrors the row:
it is set after each change commits, outside any metadata transaction (a slow tracking
server must not hold the store's write lock), then the row is read again and the alias set
again until the row stayed put across the write, so two changes can never leave the alias
on the older one (mirror_champion). A reader that finds it disagreeing with a change older
than a grace period repairs it, saying so; a younger change is still being mirrored. A home
from before the record (alias, no row) adopts the alias on first read, with the previous
release's history tag as its history.

MLflow runs its own Alembic migrations the first time a process opens a fresh SQLite
tracking database; several processes doing that at once fail with "duplicate column"
(shared/REFERENCES.md). The first open is serialised across processes by a file lock next
to the database (`<db>.lock`); a tracking server needs nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from mlplatform import storage
from mlplatform.artifacts import ModelVersion, TrainedModel
from mlplatform.errors import InputError, PlatformError
from mlplatform.metadata.champion import Action, Champion, ChampionConflict, ChampionEvent
from mlplatform.metadata.schema import utcnow
from mlplatform.metadata.store import MetadataStore
from mlplatform.models import mlflow_schema
from mlplatform.redact import redact_url
from mlplatform.settings import (
    MLFLOW_SET_MARK,
    Settings,
    apply_store_env,
    db_connect_args,
    setting_name,
    with_db_driver,
)

CHAMPION, CHALLENGER = "champion", "challenger"
_IGNORED = {"registered_model_meta"}  # MLflow adds it to a registered model's download
_READY: set[str] = set()
_LOCK = threading.Lock()
log = logging.getLogger(__name__)
ADOPTED = "adopted from the MLflow alias 'champion' (no champion record yet: a home from before it)"
# The previous release's champion history: a JSON list of versions, oldest first, current last.
HISTORY_TAG = "mlplatform.champion_history"
IMPORTED = f"imported from the MLflow tag {HISTORY_TAG} (a home from before the champion record)"
MIRROR_ATTEMPTS = 20  # alias writes per mirror while changes keep landing (see mirror_champion)
ALIAS_WRITE_TRIES = 5  # failed MLflow alias writes per mirror before the error is raised
MIRROR_GRACE_S = 60.0  # a change younger than this may still be being mirrored by its maker


class ModelVersionInfo(BaseModel):
    name: str
    version: str
    run_id: str | None
    aliases: list[str] = Field(default_factory=list)
    created_at: str
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    sha256: str | None = None


def dir_sha256(folder: str | Path) -> str:
    """One digest over every file's relative path and bytes (MLflow's own bookkeeping aside)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _IGNORED):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _file_uri(location: str) -> str:
    return location if "://" in location else Path(location).resolve().as_uri()


def pip_requirements(model: Any) -> list[str]:
    """What the saved model needs to load: MLflow's own list for scikit-learn models (scikit-learn,
    cloudpickle) plus the pinned package of every step that comes from elsewhere (xgboost,
    lightgbm). Given explicitly because MLflow otherwise infers it by loading the model in a
    subprocess that records its imports: 2.7-3.0 s per model on 2 cores (issue 15's profile),
    more than the whole fit of a small model."""
    import importlib.metadata

    import mlflow.sklearn

    out = list(mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=True))
    seen = {"sklearn", "numpy", "scipy", "pandas", "mlplatform", "builtins"}
    steps = getattr(model, "named_steps", {}).values() if hasattr(model, "named_steps") else [model]
    for step in steps:
        root = type(step).__module__.split(".", 1)[0]
        if root in seen:
            continue
        seen.add(root)
        try:
            out.append(f"{root}=={importlib.metadata.version(root)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class ModelRegistry:
    """MLflow tracking + registry for one platform installation."""

    mirror_grace_s: float = MIRROR_GRACE_S

    def __init__(self, settings: Settings, store: MetadataStore | None = None):
        import mlflow
        from mlflow import MlflowClient

        # Download progress bars are noise in job logs and CLI output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Connect timeouts and MLflow's S3 endpoint (MLFLOW_S3_ENDPOINT_URL) for s3:// artifacts.
        apply_store_env(settings)
        self.settings = settings
        self.uri = with_db_driver(settings.mlflow_tracking_uri)
        self.store = store or MetadataStore(settings.metadata_url)
        self._ensure_db()
        mlflow.set_tracking_uri(self.uri)
        os.environ[MLFLOW_SET_MARK] = os.environ.get("MLFLOW_TRACKING_URI", self.uri)
        self.client = MlflowClient(self.uri)

    def _ensure_db(self) -> None:
        """Open the tracking database once per process; the first open of a fresh SQLite
        database (MLflow creates and migrates its tables) one process at a time."""
        with _LOCK:
            if self.uri in _READY:
                return
            from mlflow import MlflowClient

            _reachable(self.uri)

            def open_store() -> None:
                client = MlflowClient(self.uri)
                client.search_experiments(max_results=1)
                client.search_registered_models(max_results=1)

            try:
                with _first_open_lock(self.uri) as creating:
                    if creating is None:
                        open_store()
                    elif mlflow_schema.seed(creating):  # a copy of a database MLflow migrated before
                        try:
                            open_store()
                        except Exception:  # the copy is not left behind: the next open creates it afresh
                            mlflow_schema.forget()
                            creating.unlink(missing_ok=True)
                            raise
                    else:
                        open_store()
                        mlflow_schema.keep(creating)
            except Exception as exc:  # noqa: BLE001 - the store is unusable: say which and why
                raise PlatformError(f"MLflow tracking store {self.uri} cannot be opened: {exc}") from None
            _READY.add(self.uri)

    # -- runs -------------------------------------------------------------------------

    def experiment_id(self, pipeline: str) -> str:
        exp = self.client.get_experiment_by_name(pipeline)
        if exp is not None:
            return exp.experiment_id
        location = storage.join(self.settings.storage_uri, "mlflow", pipeline)
        try:
            return self.client.create_experiment(pipeline, artifact_location=_file_uri(location))
        except Exception:  # another writer created it between the two calls
            exp = self.client.get_experiment_by_name(pipeline)
            if exp is None:
                raise
            return exp.experiment_id

    def start_run(self, pipeline: str, name: str, tags: dict[str, str],
                  parent_run_id: str | None = None) -> str:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        return self.client.create_run(self.experiment_id(pipeline), run_name=name, tags=all_tags).info.run_id

    def log(self, run_id: str, *, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None, tags: dict[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()
                     if v is not None and v == v],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()])

    def log_json(self, run_id: str, obj: Any, path: str) -> None:
        self.client.log_dict(run_id, obj, path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def log_model(self, run_id: str, model: Any, sample: Any) -> str:
        """Save `model` into the run (artifact path `model`); return the sha256 of its files."""
        import mlflow.sklearn
        from mlflow.models import infer_signature

        with tempfile.TemporaryDirectory(prefix="mlp-model-") as tmp:
            local = os.path.join(tmp, "model")
            signature = infer_signature(sample, model.predict(sample))
            mlflow.sklearn.save_model(model, local, serialization_format="cloudpickle",
                                      signature=signature, pip_requirements=pip_requirements(model))
            sha = dir_sha256(local)
            self.client.log_artifacts(run_id, local, "model")
        return sha

    def load_run_model(self, run_id: str, sha256: str) -> Any:
        return self._load_verified(f"runs:/{run_id}/model", sha256, f"run {run_id}")

    # -- the registry -----------------------------------------------------------------

    def find_version(self, name: str, run_id: str) -> str | None:
        """The version of `name` registered from MLflow run `run_id`, if any (the oldest)."""
        found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        return str(min(int(mv.version) for mv in found)) if found else None

    def register(self, name: str, run_id: str, tags: dict[str, str]) -> tuple[str, bool]:
        """Register the model of MLflow run `run_id` as a version of `name`: (version, created).

        Idempotent: a run already registered (a retried step) gets its version back and
        no second one is created.
        """
        from mlflow.exceptions import MlflowException

        existing = self.find_version(name, run_id)
        if existing is not None:
            return existing, False
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, description="Registered by mlplatform.")
            except MlflowException:
                pass  # created by a concurrent writer
        mv = self.client.create_model_version(name, f"runs:/{run_id}/model", run_id, tags=tags)
        return str(mv.version), True

    def alias(self, name: str, alias: str) -> str | None:
        """What MLflow's alias points at. For the champion, ask `champion()`: the alias only
        mirrors the record."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_challenger(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHALLENGER, str(version))

    def clear_challenger(self, name: str, version: str) -> None:
        """Remove the `challenger` alias if it still points at `version` (a later model may hold it)."""
        if self.alias(name, CHALLENGER) == str(version):
            self.client.delete_registered_model_alias(name, CHALLENGER)

    def tag_version(self, name: str, version: str, tags: dict[str, str]) -> None:
        """Tags on a model version (a rollout's decision and its numbers, for the MLflow UI)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value)[:5000])

    # -- the champion: a record changed by compare-and-set, mirrored into MLflow --------

    def champion_record(self, name: str) -> Champion | None:
        """The champion record of `name`: adopted from MLflow's alias (and the previous
        release's history tag) when a home from before the record has none; the alias
        repaired, with a warning, when it disagrees with a change older than
        `mirror_grace_s`.

        A younger change is left alone: the process that made it mirrors it right after its
        commit, so a disagreement then is a mirror in progress, not damage, and repairing it
        would warn about nothing. Should that process have died before mirroring, the first
        read after the grace repairs the alias. The record is what comes back either way:
        it, not the alias, is who is champion."""
        record = self.store.champion(name)
        alias = self.alias(name, CHAMPION)
        if record is None:
            if alias is None:
                return None
            self._adopt(name, alias)
            record = self.store.champion(name)
            if record is None:
                return None
        if alias != record.version:
            if not self._settled(record):
                log.debug("model %s: champion v%s (change %d, %.1f s old) is being mirrored into the "
                          "MLflow alias, which still says %s", name, record.version, record.change.id,
                          self._age_s(record), f"v{alias}" if alias else "no version")
                return record
            self.mirror_champion(name, repair=True)
            return self.store.champion(name)
        return record

    def _adopt(self, name: str, alias: str) -> None:
        """Record a home from before the champion record: the alias is the champion, and the
        previous release's history (the registered model's `mlplatform.champion_history`
        tag, versions oldest first) becomes its history, so `models rollback` still goes
        where it went before the upgrade. Another process adopting or promoting first wins."""
        chain = self._legacy_chain(name, alias)
        try:
            self.store.adopt_champion(name, chain)
        except ChampionConflict:
            return  # another process adopted or promoted first: its record stands
        earlier = len(chain) - 1
        imported = f" and {earlier} earlier champion(s) from the MLflow tag {HISTORY_TAG}" if earlier else ""
        log.warning("model %s: no champion record; adopted v%s from the MLflow alias 'champion'%s",
                    name, alias, imported)

    def _legacy_chain(self, name: str, alias: str) -> list[tuple[str, str]]:
        """(version, reason) per champion, oldest first, ending at `alias`: the history tag's
        versions (a repeat of the one before is no change and is dropped), then the alias's
        version unless the tag already ends there; the alias wins over a tag that disagrees,
        as it is what served. A tag that is not a JSON list of versions is reported and left
        out: the alias alone is adopted, as it would be with no tag."""
        from mlflow.exceptions import MlflowException

        try:
            raw = (self.client.get_registered_model(name).tags or {}).get(HISTORY_TAG)
        except MlflowException:
            raw = None
        versions: list[str] = []
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(v, str | int) and not isinstance(v, bool)
                                                for v in parsed):
                versions = [str(v) for v in parsed]
            else:
                log.warning("model %s: the MLflow tag %s is not a JSON list of versions (%.200r): "
                            "its history is not imported", name, HISTORY_TAG, raw)
        imported: list[str] = []
        for version in versions:
            if not imported or imported[-1] != version:
                imported.append(version)
        if imported and imported[-1] == alias:
            imported.pop()
        chain = [(version, IMPORTED) for version in imported]
        chain.append((alias, ADOPTED + (f"; the champions before it {IMPORTED}" if chain else "")))
        return chain

    def _age_s(self, record: Champion) -> float:
        return (utcnow() - record.changed_at).total_seconds()

    def _settled(self, record: Champion) -> bool:
        """The change is older than any mirror still running: a disagreeing alias is damage."""
        return self._age_s(record) >= self.mirror_grace_s

    def champion(self, name: str) -> str | None:
        """The champion version of `name` (the record's), or None."""
        record = self.champion_record(name)
        return record.version if record else None

    def champion_history(self, name: str) -> list[ChampionEvent]:
        return self.store.champion_history(name)

    def mirror_champion(self, name: str, *, repair: bool = False) -> str | None:
        """Point MLflow's `champion` alias at the record's champion; returns the champion.

        No metadata transaction is open during the MLflow call: on SQLite the store's
        transactions hold the whole database's write lock, and a slow tracking server would
        stall every metadata write in the meantime (the others failing at the busy timeout).
        Without the lock, a mirror of an older change can land after a newer one's, so
        after its write each mirror reads the row again and, when it moved, mirrors again,
        until the row stayed put across a write. Then the alias cannot end on an older
        version: the last write of all was followed by its writer's read of the row; if
        that read saw the final row, the write was of it (or the writer would have written
        again); if not, the final change committed after that read, and its own mirror read
        the alias after the last write and fixed it (or found it right).

        `repair`: a reader found the alias disagreeing with a settled change (not one just
        made): say so."""
        from mlflow.exceptions import MlflowException

        record = self.store.champion(name)
        failed = 0
        for _ in range(MIRROR_ATTEMPTS):
            if record is None:
                return None
            alias = self.alias(name, CHAMPION)
            if alias != record.version:
                try:
                    self.client.set_registered_model_alias(name, CHAMPION, record.version)
                except MlflowException:
                    # MLflow writes an alias by read-then-insert: two processes creating it at
                    # once, the second fails on its unique key (or, on SQLite, finds the tracking
                    # database busy). A failed write changed nothing; the alias may now be
                    # right, else writing again updates the row the other one made.
                    failed += 1
                    if failed >= ALIAS_WRITE_TRIES:
                        raise
                    time.sleep(0.05 * failed)
                    record = self.store.champion(name)
                    continue
                if repair and self._settled(record):
                    log.warning("model %s: MLflow alias 'champion' pointed at %s but the champion "
                                "record says v%s (change %d, %s): alias repaired", name,
                                f"v{alias}" if alias else "no version", record.version, record.change.id,
                                record.change.reason)
            after = self.store.champion(name)
            if after is not None and after.version == record.version:
                return record.version
            record = after
        # Changes kept landing during each write: the last of them mirrors itself, and a
        # read after the grace repairs the alias should that process have died.
        log.warning("model %s: the champion changed during each of %d MLflow alias writes; the alias "
                    "is left to the latest change's own mirror", name, MIRROR_ATTEMPTS)
        return record.version if record else None

    def set_champion(self, name: str, version: str, *, expected: str | None, action: Action,
                     reason: str, run_id: str | None = None, actor: str | None = None) -> ChampionEvent:
        """Compare-and-set the champion record (ChampionConflict when it is not `expected`),
        then, its transaction committed, mirror it into MLflow's alias. Idempotent for a
        retried change (same run_id)."""
        change = self.store.set_champion(name, str(version), expected=expected, action=action,
                                         reason=reason, run_id=run_id, actor=actor)
        self.mirror_champion(name)
        return change

    def promote(self, name: str, version: str, *, reason: str = "promoted by hand",
                actor: str | None = None) -> tuple[ChampionEvent, str | None]:
        """Make a version champion by hand: (the change, the champion it replaced).

        The version's files are checked against their sha256 first; the champion read just
        before is what the compare-and-set expects, so a change that lands in between wins
        and this one fails with ChampionConflict instead of silently replacing it.
        """
        self.version(name, version)
        self.load(name, version)  # refuse a tampered or unrecorded artifact before it serves
        expected = self.champion(name)
        change = self.set_champion(name, version, expected=expected, action="manual", reason=reason,
                                   actor=actor)
        return change, expected

    def rollback(self, name: str, *, actor: str | None = None) -> ChampionEvent:
        """Give the champion back to the version that held it before the current one (the
        `from_version` of the change that made the current one champion), by compare-and-set,
        recorded as a change of its own. Twice in a row returns to where it started."""
        if name not in self.names():
            raise InputError(f"model {name!r} is not registered; registered models: {self.names() or 'none'}")
        record = self.champion_record(name)
        if record is None or record.previous is None:
            history = [f"{c.from_version or '-'}->{c.to_version}" for c in self.champion_history(name)]
            raise InputError(f"model {name!r} has no earlier champion to roll back to "
                             f"(champion history: {', '.join(history) or 'empty'})")
        target = record.previous
        self.load(name, target)  # refuse a tampered target before it serves
        return self.set_champion(name, target, expected=record.version, action="rollback",
                                 reason=f"rollback from v{record.version} (change {record.change.id})",
                                 actor=actor)

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def version(self, name: str, version: str) -> ModelVersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            known = [v.version for v in self.versions(name)] if name in self.names() else []
            raise InputError(f"model {name!r} version {version!r} does not exist"
                             + (f"; versions are {known}" if known else
                                f"; registered models are {self.names()}")) from None
        return self._info(mv)

    def versions(self, name: str) -> list[ModelVersionInfo]:
        found = self.client.search_model_versions(f"name = '{name}'")
        # search_model_versions leaves aliases out; the registered model has them all.
        aliases: dict[str, list[str]] = {}
        for alias, version in (self.client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        infos = [self._info(mv) for mv in found]
        for info in infos:
            info.aliases = sorted(set(info.aliases) | set(aliases.get(info.version, [])))
        return sorted(infos, key=lambda v: int(v.version))

    def _info(self, mv: Any) -> ModelVersionInfo:
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if mv.run_id:
            run = self.client.get_run(mv.run_id)
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        art = self.store.find(ModelVersion, f"models:/{mv.name}/{mv.version}")
        return ModelVersionInfo(
            name=mv.name, version=str(mv.version), run_id=mv.run_id, aliases=list(mv.aliases or []),
            created_at=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(),
            tags=dict(mv.tags or {}), metrics=metrics, params=params,
            sha256=art.content_hash if art else None)

    def load(self, name: str, version: str) -> Any:
        """A registered version, after checking its files against the recorded sha256."""
        return self.load_with_inputs(name, version)[0]

    def load_with_inputs(self, name: str, version: str) -> tuple[Any, list[dict[str, Any]], str]:
        """The verified model, its signature's input columns ({name, type, required}) and its
        sha256: what serving needs to check a request before the model sees it."""
        art: ModelVersion | TrainedModel | None = self.store.find(ModelVersion, f"models:/{name}/{version}")
        if art is None:  # registered, but the step died before recording it: the train-time record
            run_id = self.client.get_model_version(name, str(version)).run_id
            art = self.store.find(TrainedModel, f"runs:/{run_id}/model")
        if art is None or not art.content_hash:
            raise PlatformError(f"model {name} v{version}: no sha256 recorded in the metadata store; "
                                "refusing to load an artifact the platform did not register")
        model, inputs = self._load_verified(f"models:/{name}/{version}", art.content_hash,
                                            f"{name} v{version}", with_inputs=True)
        return model, inputs, art.content_hash

    def _load_verified(self, uri: str, sha256: str, what: str, *, with_inputs: bool = False) -> Any:
        import mlflow.artifacts
        import mlflow.sklearn

        with tempfile.TemporaryDirectory(prefix="mlp-load-") as tmp:
            local = mlflow.artifacts.download_artifacts(uri, dst_path=tmp, tracking_uri=self.uri)
            got = dir_sha256(local)
            if got != sha256:
                raise PlatformError(f"model {what}: artifact sha256 {got[:16]} does not match the "
                                    f"recorded {sha256[:16]}; the files at {uri} were changed after "
                                    "registration: refusing to load them")
            model = mlflow.sklearn.load_model(local)
            if not with_inputs:
                return model
            from mlflow.models import Model

            signature = Model.load(local).signature
            inputs = signature.inputs.to_dict() if signature is not None else []
            return model, inputs


def _reachable(uri: str) -> None:
    """A database tracking store (PostgreSQL, MySQL) answers within the connect timeout:
    MLflow's own engine retries a failed connection for minutes with backoff, which would
    hang a command or a step instead of naming the store that is down."""
    if "://" not in uri or uri.startswith(("sqlite:", "http:", "https:", "file:", "databricks")):
        return
    import sqlalchemy
    from sqlalchemy.exc import DBAPIError

    from mlplatform.metadata.store import db_error_reason

    try:
        engine = sqlalchemy.create_engine(uri, connect_args=db_connect_args(uri),
                                          poolclass=sqlalchemy.NullPool)
    except ModuleNotFoundError as exc:
        raise InputError(f"{setting_name('mlflow_tracking_uri')} {redact_url(uri)}: its database driver "
                         f"is not installed ({exc.name})",
                         hint="pip install 'mlplatform[cluster]' for PostgreSQL") from None
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        raise PlatformError(f"{setting_name('mlflow_tracking_uri')} {redact_url(uri)}: cannot connect: "
                            f"{db_error_reason(exc)}") from None
    finally:
        engine.dispose()


@contextmanager
def _first_open_lock(uri: str) -> Iterator[Path | None]:
    """For a SQLite tracking database, hold `<db>.lock` (next to it) exclusively while MLflow
    opens a database it has not created yet (its first open creates and migrates the
    tables); an initialised one needs no lock. Nothing for a tracking server. Yields the
    database's path when this process creates it (under the exclusive lock), else None."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield None
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as handle:  # never deleted: a deleted lock file can be locked twice
        fcntl.flock(handle, fcntl.LOCK_SH)  # waits while another process creates the database
        if _mlflow_db_created(db):
            fcntl.flock(handle, fcntl.LOCK_UN)
            yield None
            return
        fcntl.flock(handle, fcntl.LOCK_EX)  # not atomic with the shared one: look again
        try:
            yield None if _mlflow_db_created(db) else db
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mlflow_db_created(db: Path) -> bool:
    """MLflow finished creating this database (its Alembic revision is recorded); only
    meaningful under the lock, which a process creating it holds exclusively."""
    return mlflow_schema.revision(db) is not None
