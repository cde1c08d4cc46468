"""One Ray Serve application per pipeline: an HTTP ingress whose replicas route each
request to a live model version and host the versions themselves (see
mlplatform.serving.plan.ingress_options for why the models live here), mirror traffic to
a shadow version, and log every prediction.

Routes, under the application's prefix `/<pipeline>`:
  POST /predict              the platform's JSON: rows, columns, or entity ids (online features)
  POST /invocations, GET /ping, GET /health    MLflow's scoring server formats
  GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}][/ready]
  POST /v2/models/{name}[/versions/{v}]/infer  the Open Inference Protocol (KServe V2)
  POST /feedback             observed outcomes, joined later to the predictions
  GET  /status               this replica's live versions, weights and counters

The request path is kept light: bodies are parsed by hand against the version's input
contract (serve.protocols) rather than by a pydantic model per request; the pydantic
models only document the routes in the OpenAPI schema.
"""


import asyncio
import collections
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.responses import Response
from ray import serve

from mlplatform.data.reference import recorded_schema
from mlplatform.services import Services
from mlplatform.serving.plan import PURPOSE_HEADER, VERSION_HEADER, ServingConfig
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec
from serve import bodies as b
from serve import protocols as p
from serve.api import ERRORS, LIMITS, api, body_doc
from serve.hosting import HostedVersion, Prediction, RowTransforms, load_version
from serve.limits import Kind, Limits, answers, read_json
from serve.metrics import ServeMetrics, metered
from serve.predlog import BatchedLog, feedback_writer, known_request_ids, prediction_writer
from serve.responses import json_response, scalar
from serve.routing import Router
from serve.shadow import ShadowMirror

log = logging.getLogger("mlplatform.serve")

_RECENT_IDS = 200_000  # request ids a replica remembers, to accept feedback without a lookup
_SHADOW_BACKLOG = 64  # shadow batches waiting; beyond that a copy is dropped, never the response


@dataclass
class _Table:
    """Everything a request reads, replaced as one object by reconfigure: a request keeps
    the table it started with, so a change of weights or versions never breaks one."""

    config: ServingConfig
    router: Router | None
    hosted: dict[str, HostedVersion]
    failed: dict[str, str] = field(default_factory=dict)


def _datatype(hosted: HostedVersion) -> p.Datatype:
    classes = getattr(hosted.model, "classes_", None)
    sample = np.asarray(classes) if classes is not None else np.zeros(1)
    if sample.dtype.kind in "iu":
        return "INT64"
    if sample.dtype.kind == "b":
        return "BOOL"
    if sample.dtype.kind == "f":
        return "FP64"
    return "BYTES"


def _version_order(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 30, v)


@serve.deployment(name="ingress")
@serve.ingress(api)
class PipelineServer:
    def __init__(self, spec: dict[str, Any]):
        self.spec = PipelineSpec.model_validate(spec)
        assert self.spec.deploy is not None, "deployed without a deploy section"
        self.deploy = self.spec.deploy
        LIMITS.limits = Limits.of(self.deploy)  # the middleware's (one ingress per replica process)
        self.settings = load_settings()
        self.services = Services(self.settings)
        self.schema = recorded_schema(self.services.metadata, self.spec.name)
        self.transforms = RowTransforms(self.spec, self.schema)
        self.entity = self.spec.source.entity_column
        self.service = self.spec.model.feature_service or "all_features"
        self.table: _Table | None = None
        self.replica = uuid.uuid4().hex[:8]
        self.counts: collections.Counter[str] = collections.Counter()
        self.recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.shadow = ShadowMirror(backlog=_SHADOW_BACKLOG)
        storage = self.settings.storage_uri
        self.predlog = (BatchedLog(prediction_writer(storage, self.spec.name, self.service))
                        if self.deploy.log_predictions else None)
        self.feedbacklog = BatchedLog(feedback_writer(storage, self.spec.name))
        self._features: Any = None
        self.metrics = ServeMetrics(self.spec.name)

    def __del__(self) -> None:
        # Serve calls this on a graceful shutdown (a redeploy, `serve down`): flush the logs.
        for sink in (getattr(self, "predlog", None), getattr(self, "feedbacklog", None)):
            if sink is not None:
                sink.close()
        shadow = getattr(self, "shadow", None)
        if shadow is not None:
            shadow.close()
        if getattr(self, "predlog", None) is not None:  # shadow answers finished during the close above
            self.predlog.close()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply new weights / versions in place: load what is new (off the event loop, so the
        replica keeps answering), then swap the routing table in one assignment."""
        config = ServingConfig.model_validate(user_config)
        current = self.table.hosted if self.table else {}
        hosted: dict[str, HostedVersion] = {}
        failed: dict[str, str] = {}
        for slot in config.versions:
            have = current.get(slot.version)
            if have is not None and have.sha256 == slot.sha256:
                hosted[slot.version] = have
                continue
            try:
                hosted[slot.version] = await asyncio.to_thread(
                    load_version, self.services.models, self.spec, self.schema, config.model_name,
                    slot.version, slot.sha256)
            except Exception as exc:  # recorded, shown by /status; the version gets no traffic
                failed[slot.version] = f"{type(exc).__name__}: {exc}"
                log.error("%s v%s failed to load: %s", config.model_name, slot.version, exc)
        serving = {v: w for v, w in config.weights.items() if v not in failed}
        if sum(config.weights.values()) == 100 and sum(serving.values()) != 100:
            # A weighted version this replica cannot load: it must not take the traffic share.
            raise RuntimeError(f"cannot serve {config.model_name}: weighted version(s) failed to load: "
                               f"{failed}")
        shadow = config.shadow if config.shadow in hosted else None
        router = (Router(serving, shadow=shadow, shadow_fraction=config.shadow_fraction)
                  if sum(serving.values()) == 100 else None)
        self.table = _Table(config=config, router=router, hosted=hosted, failed=failed)

    # -- request plumbing ------------------------------------------------------------

    async def _body(self, request: Request, kind: Kind) -> Any:
        return await read_json(request, kind, self.deploy.max_rows)

    def _live(self) -> _Table:
        table = self.table
        if table is None:
            raise p.RequestError(f"pipeline {self.spec.name!r} has no live model version", 503)
        return table

    def _choose(self, table: _Table, key: str | None) -> str:
        if table.router is None:  # versions staged at weight 0 only answer pinned requests
            raise p.RequestError(f"pipeline {self.spec.name!r} has no version taking traffic yet", 503)
        return table.router.choose(key)

    def _pinned(self, table: _Table, version: str | None) -> HostedVersion | None:
        if not version:
            return None
        version = version.removeprefix("v")
        hosted = table.hosted.get(version)
        if hosted is None:
            raise p.RequestError(f"model {table.config.model_name!r} has no live version {version!r}; "
                                 f"live: {sorted(table.hosted)}", 404)
        return hosted

    def _remember(self, ids: list[str]) -> None:
        recent = self.recent
        for rid in ids:
            recent[rid] = None
        while len(recent) > _RECENT_IDS:
            recent.popitem(last=False)

    def _record(self, table: _Table, hosted: HostedVersion, variant: str, frame: pd.DataFrame,
                pred: Prediction, ids: list[str], entities: list[str | None], latency_ms: float) -> None:
        self.counts[variant] += len(ids)
        self.metrics.answered(hosted.version, variant, pred, latency_ms)
        if self.predlog is None:
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        scores = pred.score()
        records = frame.to_dict("records")
        for i, rec in enumerate(records):
            rec.update(request_id=ids[i], event_ts=now, pipeline=self.spec.name, version=hosted.version,
                       variant=variant, entity=entities[i], output=str(scalar(pred.outputs[i])),
                       score=None if scores is None else float(scores[i]), latency_ms=latency_ms)
        self.predlog.append(records)

    def _failed(self, hosted: HostedVersion, variant: str, ids: list[str], entities: list[str | None],
                t0: float, exc: Exception) -> None:
        """A request the model raised on: one error row per request id (no output), which the
        rollout's success-rate guardrail counts per version; the 500 follows."""
        self.counts[variant] += len(ids)
        latency = (time.perf_counter() - t0) * 1000
        self.metrics.model_error(hosted.version, variant, exc, latency)
        if self.predlog is None:
            return
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        text = f"{type(exc).__name__}: {exc}"[:300]
        self.predlog.append([{"request_id": rid, "event_ts": now, "pipeline": self.spec.name,
                              "version": hosted.version, "variant": variant, "entity": entities[i],
                              "output": None, "score": None, "latency_ms": latency, "error": text}
                             for i, rid in enumerate(ids)])

    def _answer(self, hosted: HostedVersion, variant: str, frame: pd.DataFrame, ids: list[str],
                entities: list[str | None], t0: float, *, plain: bool = False) -> Any:
        try:
            return hosted.predict_plain(frame) if plain else hosted.predict(frame)
        except Exception as exc:
            self._failed(hosted, variant, ids, entities, t0, exc)
            raise

    def _mirror(self, table: _Table, key: str | None, frame: pd.DataFrame, ids: list[str],
                entities: list[str | None]) -> None:
        """Send a copy to the shadow version off the response path: a worker thread answers it,
        its answer goes only to the log, and a full backlog drops the copy, not the request."""
        if table.router is None or table.config.shadow is None:
            return
        shadow = table.router.shadow_for(key)
        hosted = table.hosted.get(shadow) if shadow else None
        if hosted is None:
            return
        def run() -> None:
            t0 = time.perf_counter()
            pred = self._answer(hosted, "shadow", frame, ids, entities, t0)
            latency = (time.perf_counter() - t0) * 1000
            self._record(table, hosted, "shadow", frame, pred, ids, entities, latency)

        self.shadow.offer(run, what=f"shadow v{hosted.version}")

    def _groups(self, table: _Table, pinned: HostedVersion | None,
                keys: list[str | None]) -> dict[str, list[int]]:
        """Rows per version: sticky by entity key (each row its own), else one random draw."""
        if pinned is not None:
            return {pinned.version: list(range(len(keys)))}
        if len(keys) == 1 or all(k is None for k in keys):
            return {self._choose(table, keys[0]): list(range(len(keys)))}
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(self._choose(table, k), []).append(i)
        return groups

    def _online_frame(self, hosted: HostedVersion, entities: list[str],
                      at: dt.datetime | None) -> pd.DataFrame:
        from mlplatform.features.store import PRESENT, FeatureStore

        if self._features is None:
            self._features = FeatureStore(self.spec, self.settings)
        vectors = self._features.get_online_features(entities, self.service, at=at)
        names = hosted.contract.names
        if self.deploy.missing_entity == "error":
            for vec in vectors:
                bad = {s for f, s in vec.statuses.items() if s != PRESENT and s != "NULL_VALUE"}
                if bad:
                    when = f" at {at.isoformat()}" if at else " now"
                    raise p.RequestError(f"entity {vec.entity!r} has no fresh online features{when} "
                                         f"({', '.join(sorted(bad))}); materialize it, or set "
                                         "deploy.missing_entity: nulls", 404, field="entities")
        columns = {n: [vec.values.get(n) for vec in vectors] for n in names}
        # Online values went through the same transformations at featurize time; nulls (missing
        # or stale entities with missing_entity: nulls) are the model's imputer's to fill.
        loose = p.InputContract(columns=tuple(p.Column(c.name, c.datatype, True)
                                              for c in hosted.contract.columns),
                                strict=False, max_rows=hosted.contract.max_rows)
        return p.to_frame(columns, loose)

    # -- the platform's route ------------------------------------------------------------

    @api.post("/predict", summary="Predict for rows, columns or entity ids",
              response_model=p.PredictResponse, responses=ERRORS, openapi_extra=body_doc(p.PredictRequest))
    @answers
    @metered
    async def predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        table = self._live()
        pinned = self._pinned(table, request.headers.get(VERSION_HEADER))
        body = await self._body(request, "predict")
        keys = b.entity_keys(body, self.entity)
        at = b.as_of(body)
        groups = self._groups(table, pinned, keys)
        results: list[dict[str, Any] | None] = [None] * len(keys)
        for version, rows in groups.items():
            hosted = table.hosted[version]
            sub = b.subset(body, rows) if len(groups) > 1 else body
            if "entities" in sub:
                frame = self._online_frame(hosted, [str(e) for e in sub["entities"]], at)
            else:
                sub = self.transforms.complete(sub, hosted.contract, self.entity)
                frame = p.parse_predict(sub, hosted.contract, self.entity).frame
            variant = table.config.variant(version) if pinned is None else (
                "validation" if request.headers.get(PURPOSE_HEADER) == "infra-validation" else "pinned")
            ids = [uuid.uuid4().hex for _ in rows]
            ents = [keys[i] for i in rows]
            pred = self._answer(hosted, variant, frame, ids, ents, t0)
            scores = pred.score()
            for j, i in enumerate(rows):
                results[i] = {
                    "request_id": ids[j], "version": version, "variant": variant,
                    "prediction": scalar(pred.outputs[j]),
                    "probabilities": (None if pred.probabilities is None else
                                      {str(scalar(c)): float(pred.probabilities[j, k])
                                       for k, c in enumerate(pred.classes or [])}),
                    "score": None if scores is None else float(scores[j]),
                }
            latency = (time.perf_counter() - t0) * 1000
            self._remember(ids)
            self._record(table, hosted, variant, frame, pred, ids, ents, latency)
            if pinned is None:
                self._mirror(table, ents[0], frame, ids, ents)
        return json_response({"predictions": results})


    # -- MLflow scoring server --------------------------------------------------------------

    @api.get("/ping", summary="MLflow scoring server health")
    @answers
    async def ping(self) -> Response:
        return json_response({"status": "ok"} if self.table and self.table.router else {"status": "no model"},
                     200 if self.table and self.table.router else 503)

    @api.get("/health", summary="MLflow scoring server health")
    @answers
    async def health(self) -> Response:
        return await self.ping()

    @api.post("/invocations", summary="MLflow scoring formats", response_model=p.MlflowResponse,
              responses=ERRORS, openapi_extra=body_doc(p.MlflowRequest))
    @answers
    @metered
    async def invocations(self, request: Request) -> Response:
        t0 = time.perf_counter()
        table = self._live()
        pinned = self._pinned(table, request.headers.get(VERSION_HEADER))
        body = await self._body(request, "mlflow")
        version = pinned.version if pinned else self._choose(table, None)
        hosted = table.hosted[version]
        frame = p.parse_mlflow(body, hosted.contract)
        ids = [uuid.uuid4().hex for _ in range(len(frame))]
        variant = "pinned" if pinned else table.config.variant(version)
        outputs = self._answer(hosted, variant, frame, ids, [None] * len(ids), t0, plain=True)
        self._remember(ids)
        pred = Prediction(outputs, None, None)
        self._record(table, hosted, variant, frame, pred, ids, [None] * len(ids),
                     (time.perf_counter() - t0) * 1000)
        return json_response({"predictions": [scalar(v) for v in outputs]},
                     headers={"x-request-ids": ",".join(ids[:100]), "x-model-version": version})

    # -- Open Inference Protocol (KServe V2) ----------------------------------------------

    @api.get("/v2", summary="Server metadata")
    @answers
    async def v2_server(self) -> Response:
        return json_response({"name": "mlplatform", "version": "1", "extensions": []})

    @api.get("/v2/health/live", summary="Liveness")
    @answers
    async def v2_live(self) -> Response:
        return json_response({"live": True})

    @api.get("/v2/health/ready", summary="Readiness: a version is live")
    @answers
    async def v2_ready(self) -> Response:
        ready = bool(self.table and self.table.router)
        return json_response({"ready": ready}, 200 if ready else 503)

    def _model(self, name: str, version: str | None) -> tuple[_Table, HostedVersion | None]:
        table = self._live()
        if name != table.config.model_name:
            raise p.RequestError(f"unknown model {name!r}; this endpoint serves "
                                 f"{table.config.model_name!r}", 404)
        return table, self._pinned(table, version)

    def _metadata(self, name: str, version: str | None) -> Response:
        table, pinned = self._model(name, version)
        default = table.config.champion if table.config.champion in table.hosted else None
        if pinned is None and default is None and not table.hosted:
            raise p.RequestError(f"model {name!r} has no live version", 503)
        hosted = pinned or table.hosted[default or sorted(table.hosted, key=_version_order)[-1]]
        outputs: list[tuple[str, p.Datatype]] = [("predict", _datatype(hosted))]
        if hosted.task == "classification" and hasattr(hosted.model, "predict_proba"):
            outputs.append(("predict_proba", "FP64"))
        versions = [pinned.version] if pinned else sorted(table.hosted, key=_version_order)
        return json_response(p.v2_model_metadata(name, versions, hosted.contract, outputs))

    @api.get("/v2/models/{name}", summary="Model metadata", response_model=p.V2ModelMetadata,
             responses=ERRORS)
    @answers
    async def v2_model(self, name: str) -> Response:
        return self._metadata(name, None)

    @api.get("/v2/models/{name}/versions/{version}", summary="Model version metadata",
             response_model=p.V2ModelMetadata, responses=ERRORS)
    @answers
    async def v2_model_version(self, name: str, version: str) -> Response:
        return self._metadata(name, version)

    @api.get("/v2/models/{name}/ready", summary="Model readiness")
    @answers
    async def v2_model_ready(self, name: str) -> Response:
        self._model(name, None)
        return json_response({"name": name, "ready": True})

    @api.get("/v2/models/{name}/versions/{version}/ready", summary="Model version readiness")
    @answers
    async def v2_model_version_ready(self, name: str, version: str) -> Response:
        self._model(name, version)
        return json_response({"name": name, "version": version.removeprefix("v"), "ready": True})

    @metered
    async def _infer(self, request: Request, name: str, version: str | None) -> Response:
        t0 = time.perf_counter()
        table, pinned = self._model(name, version)
        body = await self._body(request, "v2")
        chosen = pinned.version if pinned else self._choose(table, None)
        hosted = table.hosted[chosen]
        frame, given_id = p.parse_v2(body, hosted.contract)
        ids = [uuid.uuid4().hex for _ in range(len(frame))]
        variant = "pinned" if pinned else table.config.variant(chosen)
        pred = self._answer(hosted, variant, frame, ids, [None] * len(ids), t0)
        self._remember(ids)
        self._record(table, hosted, variant, frame, pred, ids, [None] * len(ids),
                     (time.perf_counter() - t0) * 1000)
        outputs = {"predict": pred.outputs}
        if pred.probabilities is not None:
            outputs["predict_proba"] = pred.probabilities.astype("float64")
        out = p.v2_infer_response(name, chosen, given_id or ids[0], outputs)
        out["parameters"] = {"variant": variant, "request_ids": ids}
        return json_response(out)

    @api.post("/v2/models/{name}/infer", summary="Inference (Open Inference Protocol)",
              response_model=p.V2InferResponse, responses=ERRORS, openapi_extra=body_doc(p.V2InferRequest))
    @answers
    async def v2_infer(self, name: str, request: Request) -> Response:
        return await self._infer(request, name, None)

    @api.post("/v2/models/{name}/versions/{version}/infer", summary="Inference on one version",
              response_model=p.V2InferResponse, responses=ERRORS, openapi_extra=body_doc(p.V2InferRequest))
    @answers
    async def v2_infer_version(self, name: str, version: str, request: Request) -> Response:
        return await self._infer(request, name, version)

    # -- feedback and status ----------------------------------------------------------------

    @api.post("/feedback", summary="Observed outcomes for earlier predictions",
              response_model=p.FeedbackResponse, responses=ERRORS,
              openapi_extra=body_doc(p.FeedbackRequest))
    @answers
    async def feedback(self, request: Request) -> Response:
        body = await self._body(request, "feedback")
        items = b.parse_feedback(body, self.deploy.max_rows)
        ids = [i["request_id"] for i in items]
        unknown = [rid for rid in ids if rid not in self.recent]
        if unknown:
            if self.predlog is not None:
                await asyncio.to_thread(self.predlog.flush)
            found = await asyncio.to_thread(known_request_ids, self.settings.storage_uri,
                                            self.spec.name, self.service, unknown)
            unknown = [rid for rid in unknown if rid not in found]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise p.RequestError(f"unknown request id(s) {shown}{' ...' if len(unknown) > 5 else ''}: "
                                 "no prediction was logged with them (predictions reach the log "
                                 "within a second; retry later if one was just made)", 404,
                                 field="request_id")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self.feedbacklog.append([{"request_id": i["request_id"], "label": i["label"], "event_ts": now}
                                 for i in items])
        return json_response({"accepted": len(items)})

    @api.get("/status", summary="This replica's live versions, weights and counters")
    @answers
    async def status(self) -> Response:
        table = self.table
        if table is None:
            return json_response({"pipeline": self.spec.name, "ready": False}, 503)
        cfg = table.config
        return json_response({
            "pipeline": self.spec.name, "model_name": cfg.model_name, "ready": table.router is not None,
            "generation": cfg.generation, "champion": cfg.champion, "shadow": cfg.shadow,
            "replica": self.replica,
            "versions": [{"version": s.version, "weight": s.weight, "variant": cfg.variant(s.version),
                          "loaded": s.version in table.hosted, "error": table.failed.get(s.version)}
                         for s in cfg.versions],
            "shadow_copies": {"done": self.shadow.done, "dropped": self.shadow.dropped,
                              "errors": self.shadow.errors, "pending": self.shadow.pending},
            "counts": dict(self.counts),
            "logged": 0 if self.predlog is None else self.predlog.written,
            "log_pending": 0 if self.predlog is None else self.predlog.pending,
        })


def build(args: dict[str, Any]) -> Any:
    """The application builder Serve imports (`serve.app:build`) with the config's args."""
    return PipelineServer.bind(args["spec"])
