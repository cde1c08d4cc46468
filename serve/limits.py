"""The ingress's request limits, so that one client or one request cannot take a replica down:
the body size (413 as the bytes arrive, before any parsing), the rows per request (413 naming
the limit and the count, checked once per request before the rows are split between
versions), the requests one client has in flight in a replica (429 with Retry-After) and the
time a body may take to arrive (408: a slow client holds a replica's slot and memory).

They sit in an ASGI middleware (`RequestLimits`) in front of every route, which sees each
request before FastAPI does, and in `read_json`, which every route with a body calls. Their
values come from the spec's `deploy` section (`Limits.of`), set per replica by the ingress.

Who is a "client": the hash of an API key header (`x-api-key`, else `authorization`) when the
request has one, else the peer address the replica sees. X-Forwarded-For is never read: any
client can write it. Behind Serve's HAProxy ingress (PLATFORM_SERVE_FASTPATH) the peer is
HAProxy itself, so requests without an API key share one count per replica there.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlplatform.errors import StoreUnavailable
from mlplatform.spec import DeploySpec
from serve.protocols import RequestError
from serve.responses import error

log = logging.getLogger("mlplatform.serve")

RETRY_AFTER_S = 1
KEY_HEADERS = (b"x-api-key", b"authorization")
Kind = Literal["predict", "mlflow", "v2", "feedback"]


@dataclass(frozen=True)
class Limits:
    """One replica's request limits (the spec's `deploy` values)."""

    max_body_bytes: int
    max_rows: int
    max_inflight_per_client: int
    body_timeout_s: float

    @classmethod
    def of(cls, deploy: DeploySpec) -> Limits:
        return cls(max_body_bytes=deploy.max_body_kb * 1024, max_rows=deploy.max_rows,
                   max_inflight_per_client=deploy.max_inflight_per_client,
                   body_timeout_s=deploy.body_timeout_s)


DEFAULT_LIMITS = Limits.of(DeploySpec())


class LimitsBox:
    """Where the ingress puts its replica's limits once it has read its spec: the middleware is
    built with the FastAPI app, at import, before any spec is known."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits


def client_key(scope: Scope) -> str:
    """The client a request counts against: an API key's hash (never the key), else the peer."""
    for name, value in scope.get("headers") or ():
        if name in KEY_HEADERS and value:
            return "key:" + hashlib.sha256(value).hexdigest()[:16]
    client = scope.get("client")
    return "addr:" + (str(client[0]) if client else "unknown")


async def _refuse(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """The platform's `{"error": ...}` answer, sent straight from the middleware."""
    response = error(message, status)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    response.headers["connection"] = "close"  # the unread rest of a refused body is not drained
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class RequestLimits:
    """ASGI middleware: the per-client in-flight count, the declared body size, and a `receive`
    that refuses a body over the size or past the time limit as it arrives (the route's
    `read_json` turns those into their 413 / 408)."""

    def __init__(self, app: ASGIApp, box: LimitsBox):
        self.app = app
        self.box = box
        self.inflight: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.box.limits
        key = client_key(scope)
        now = self.inflight[key]
        if now >= limits.max_inflight_per_client:
            await _refuse(send, 429, f"too many requests in flight from this client: {now + 1} with a "
                          f"limit of {limits.max_inflight_per_client} per replica "
                          f"(deploy.max_inflight_per_client); retry after {RETRY_AFTER_S} s",
                          {"retry-after": str(RETRY_AFTER_S)})
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            await _refuse(send, 413, f"body of {int(declared)} bytes is over the limit of "
                          f"{limits.max_body_bytes} bytes (deploy.max_body_kb)")
            return
        self.inflight[key] = now + 1
        try:
            await self.app(scope, _limited(receive, limits), send)
        finally:
            self.inflight[key] -= 1
            if self.inflight[key] <= 0:
                del self.inflight[key]


def _limited(receive: Receive, limits: Limits) -> Receive:
    deadline = time.monotonic() + limits.body_timeout_s
    size = 0

    async def limited() -> Message:
        nonlocal size
        try:
            message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise RequestError(f"the body did not arrive within {limits.body_timeout_s:g} s "
                               "(deploy.body_timeout_s)", 408) from None
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limits.max_body_bytes:
                raise RequestError(f"body of more than {limits.max_body_bytes} bytes is over the limit "
                                   f"of {limits.max_body_bytes} bytes (deploy.max_body_kb)", 413)
        return message

    return limited


def answers(handler: Any) -> Any:
    """Every route answers: a RequestError is its 4xx with `{"error": ...}`, anything else a 500
    naming a reference in the replica's log; nothing escapes to kill the request (or the replica)."""

    @functools.wraps(handler)
    async def answer(self: Any, *args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(self, *args, **kwargs)
        except RequestError as exc:
            return error(str(exc), exc.status)
        except StoreUnavailable as exc:  # e.g. Redis restarting: the same request works once it is back
            response = error(str(exc.message), 503)
            response.headers["Retry-After"] = "1"
            return response
        except ClientDisconnect:  # nobody to answer; not the server's fault
            return error("the client disconnected before the body arrived", 400)
        except Exception as exc:
            ref = uuid.uuid4().hex[:12]
            log.exception("request failed (ref %s)", ref)
            return error(f"internal error ({type(exc).__name__}); reference {ref} in the replica's log", 500)

    return answer


async def read_json(request: Request, kind: Kind, max_rows: int) -> Any:
    """The request's JSON body, its rows counted against `max_rows` before anything else reads
    them. The size and time limits apply while the bytes arrive (RequestLimits)."""
    ctype = request.headers.get("content-type", "")
    # No content type is taken as JSON (tritonclient and many others send none); a declared
    # other type (a form, CSV, the V2 binary extension) is refused by name.
    if ctype and "json" not in ctype:
        raise RequestError(f"content type {ctype!r} is not supported: send application/json", 415)
    raw = await request.body()
    if not raw.strip():
        raise RequestError("empty body: send a JSON object")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None
    n = count_rows(body, kind)
    if n > max_rows:
        what = "feedback items" if kind == "feedback" else "rows"
        raise RequestError(f"too many {what}: {n} (the limit is {max_rows}, deploy.max_rows)", 413)
    return body


def _longest(columns: Any) -> int:
    if not isinstance(columns, dict):
        return 0
    return max((len(v) for v in columns.values() if isinstance(v, list)), default=0)


def count_rows(body: Any, kind: Kind) -> int:
    """The rows a body asks for, by its format (0 when it is malformed: the parser says why)."""
    if not isinstance(body, dict):
        return 0
    if kind == "v2":
        inputs = body.get("inputs")
        shapes = [t.get("shape") for t in inputs if isinstance(t, dict)] if isinstance(inputs, list) else []
        return max((s[0] for s in shapes if isinstance(s, list) and s and isinstance(s[0], int)
                    and not isinstance(s[0], bool)), default=0)
    if kind == "feedback":
        items = body.get("feedback")
        return len(items) if isinstance(items, list) else 1
    if kind == "mlflow" and isinstance(body.get("dataframe_split"), dict):
        data = body["dataframe_split"].get("data")
        return len(data) if isinstance(data, list) else 0
    counts = [len(body[k]) for k in ("rows", "entities", "dataframe_records", "instances", "inputs")
              if isinstance(body.get(k), list)]
    counts += [_longest(body.get(k)) for k in ("columns", "inputs")]
    return max(counts, default=0)
