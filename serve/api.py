"""The ingress's FastAPI app: its errors in the platform's shape, its request limits
(serve.limits, in front of every route) and its OpenAPI document, which adds the request
bodies the routes parse by hand (for speed) and FastAPI therefore cannot see."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import protocols as p
from serve.limits import LimitsBox, RequestLimits
from serve.responses import error

api = FastAPI(
    title="mlplatform model server",
    description="A pipeline's live model versions behind one HTTP ingress: the platform's JSON, "
    "the Open Inference Protocol (KServe V2) and MLflow's scoring formats. Errors are "
    '`{"error": "..."}` with a 4xx status naming what was wrong.',
    version="1",
)
# The replica's limits: set by the ingress from its spec's `deploy` section.
LIMITS = LimitsBox()
api.add_middleware(RequestLimits, box=LIMITS)


@api.exception_handler(StarletteHTTPException)
async def _httperror(request: Request, exc: StarletteHTTPException) -> Response:
    return error(f"{exc.detail}: {request.method} {request.url.path}", exc.status_code)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": p.ErrorResponse, "description": "A malformed request or an invalid row."},
    404: {"model": p.ErrorResponse, "description": "Unknown model, version or entity."},
    408: {"model": p.ErrorResponse, "description": "The body did not arrive within "
          "deploy.body_timeout_s."},
    413: {"model": p.ErrorResponse, "description": "Body or batch over the configured limit "
          "(deploy.max_body_kb, deploy.max_rows)."},
    415: {"model": p.ErrorResponse, "description": "Not application/json."},
    429: {"model": p.ErrorResponse, "description": "This client has deploy.max_inflight_per_client "
          "requests in flight in the replica already (Retry-After)."},
    503: {"model": p.ErrorResponse, "description": "Overloaded (Retry-After) or no version live."},
}


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


_BODY_MODELS: list[type[BaseModel]] = [p.PredictRequest, p.V2InferRequest, p.MlflowRequest,
                                       p.FeedbackRequest]


def _openapi() -> dict[str, Any]:
    """FastAPI's schema plus the request bodies, which the routes parse by hand (for speed)
    and so FastAPI cannot see."""
    if api.openapi_schema:
        return api.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=api.title, version=api.version, description=api.description,
                         routes=api.routes)
    _, defs = models_json_schema([(m, "validation") for m in _BODY_MODELS],
                                 ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    api.openapi_schema = schema
    return schema


api.openapi = _openapi  # type: ignore[method-assign]
