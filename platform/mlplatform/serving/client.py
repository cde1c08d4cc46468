"""The control side of serving: deploy, re-weight and remove a pipeline's Serve
application through the Ray dashboard's Serve REST API, wait for it, and talk to it.

Serve's REST API deploys the whole set of applications at once, so a change to one
pipeline's application re-sends the others' configs unchanged (Serve leaves an
application whose config did not change alone). Only `user_config` changes when
weights move, which Serve applies in place (`reconfigure`) without new replicas.
"""

from __future__ import annotations

import time
from typing import Any

import requests
from pydantic import BaseModel

from mlplatform.errors import ClusterUnreachable, InputError, PlatformError
from mlplatform.runtime.dashboard import auth_headers, require_address
from mlplatform.serving.plan import INGRESS, PURPOSE_HEADER, VERSION_HEADER, ServingConfig, application_config
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec

_API = "/api/serve/applications/"


class AppState(BaseModel):
    """One pipeline's application as Serve reports it."""

    name: str
    status: str
    message: str = ""
    replicas: int = 0
    changing: int = 0  # replicas STARTING, UPDATING (in `reconfigure`), RECOVERING or STOPPING
    deployment_status: str | None = None
    config: ServingConfig | None = None


class ServeControl:
    def __init__(self, settings: Settings):
        self.settings = settings

    # -- the dashboard's Serve REST API ------------------------------------------------------

    def _request(self, method: str, body: Any = None, timeout: tuple[float, float] = (10.0, 120.0)) -> Any:
        """(connect, read) timeouts: a dashboard that is not there fails at once, and one that is
        starting Serve for this request (the controller, then a proxy on every node) is waited for:
        seen over 30 s on a fresh three-node cluster on 2 cores (.ci/run's second run). Ray's own
        `serve deploy` client sets no read timeout at all."""
        url = require_address(self.settings) + _API
        try:
            resp = requests.request(method, url, json=body, headers=auth_headers(self.settings),
                                    timeout=timeout)
        except requests.RequestException as exc:
            raise ClusterUnreachable(f"the Ray dashboard at {url} did not answer: {exc}") from None
        if resp.status_code in (401, 403):
            raise ClusterUnreachable(f"the Ray dashboard refused the request ({resp.status_code}): "
                                     "token missing or wrong")
        if resp.status_code >= 400:
            raise PlatformError(f"Serve refused the config ({resp.status_code}): {resp.text.strip()[-2000:]}")
        return resp.json() if resp.content else None

    def details(self) -> dict[str, Any]:
        return self._request("GET") or {}

    def app(self, pipeline: str) -> AppState | None:
        apps = self.details().get("applications") or {}
        raw = apps.get(pipeline)
        if raw is None:
            return None
        dep = (raw.get("deployments") or {}).get(INGRESS) or {}
        cfg = None
        for d in (raw.get("deployed_app_config") or {}).get("deployments") or []:
            if d.get("name") == INGRESS and d.get("user_config"):
                cfg = ServingConfig.model_validate(d["user_config"])
        states = [r.get("state") for r in dep.get("replicas") or []]
        return AppState(name=pipeline, status=raw.get("status", "?"), message=raw.get("message") or "",
                        replicas=states.count("RUNNING"),
                        changing=sum(s in ("STARTING", "UPDATING", "RECOVERING", "STOPPING") for s in states),
                        deployment_status=dep.get("status"), config=cfg)

    def deployed_spec(self, pipeline: str) -> PipelineSpec | None:
        """The spec the pipeline's application was deployed with (its config's args)."""
        raw = (self.details().get("applications") or {}).get(pipeline) or {}
        args = (raw.get("deployed_app_config") or {}).get("args") or {}
        return PipelineSpec.model_validate(args["spec"]) if "spec" in args else None

    def served(self) -> list[str]:
        return sorted(self.details().get("applications") or {})

    def _put(self, apps: list[dict[str, Any]]) -> None:
        self._request("PUT", {
            "http_options": {"host": self.settings.serve_host, "port": self.settings.serve_port},
            "proxy_location": self.settings.serve_proxy_location,
            "applications": apps,
        })

    def _others(self, pipeline: str) -> list[dict[str, Any]]:
        apps = self.details().get("applications") or {}
        out = []
        for name, raw in apps.items():
            if name == pipeline:
                continue
            cfg = raw.get("deployed_app_config")
            if not cfg:
                raise PlatformError(f"Serve application {name!r} was not deployed from a config (it "
                                    "came from serve.run); the platform cannot keep it while changing "
                                    f"{pipeline!r}: remove it first")
            out.append(cfg)
        return out

    def apply(self, spec: PipelineSpec, config: ServingConfig, *, wait_s: float = 300.0) -> AppState:
        """Deploy `config` and wait until every replica runs it."""
        self._put([*self._others(spec.name), application_config(spec, config, self.settings)])
        return self.wait(spec.name, config.generation, wait_s=wait_s)

    def wait(self, pipeline: str, generation: int, *, wait_s: float = 300.0) -> AppState:
        deadline = time.monotonic() + wait_s
        state: AppState | None = None
        while time.monotonic() < deadline:
            state = self.app(pipeline)
            if state is not None and state.status == "RUNNING" and state.deployment_status == "HEALTHY" \
                    and state.config is not None and state.config.generation == generation \
                    and state.changing == 0 and self._replicas_at(pipeline, generation, state.replicas):
                return state
            if state is not None and state.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise PlatformError(f"Serve application {pipeline!r} is {state.status}: "
                                    f"{state.message.strip()[-2000:]}")
            time.sleep(0.5)
        shown = f"{state.status}: {state.message.strip()[-500:]}" if state else "not found"
        raise PlatformError(f"Serve application {pipeline!r} did not become ready within {wait_s:.0f}s "
                            f"({shown})")

    def _replicas_at(self, pipeline: str, generation: int, replicas: int) -> bool:
        """Whether every running replica answers with `generation` applied. Serve reports the new
        config as deployed (and the app as healthy) before every replica has run `reconfigure`;
        a request pinned to a version staged a moment ago would then find an old table. Asked
        through the HTTP ingress, which spreads requests over the replicas: true once each of the
        `replicas` replica ids has answered at `generation` and none answered older. The caller
        first waits until every replica is RUNNING: one still UPDATING is not counted as
        running, so the replicas already reconfigured could otherwise stand for all of them
        while it kept routing by the old weights; and a STOPPING one keeps its old table while
        the proxies' routers may still send it requests. (A version at weight 0 answering after
        a change, seen with the suite in two workers, turned out to be another cluster's
        application behind a shared fallback-proxy port: runtime.local.serve_env, issue 15.)"""
        client = ServeClient(self.settings, pipeline, timeout=5)
        seen: set[str] = set()
        for _ in range(max(2, 8 * replicas)):
            try:
                resp = client.get("/status")
            except PlatformError:
                return False
            answer = resp.json() if resp.status_code == 200 else {}
            if answer.get("generation") != generation:
                return False
            seen.add(str(answer.get("replica")))
            if len(seen) >= replicas:
                return True
        return False  # not every replica answered yet: the caller asks again

    def down(self, pipeline: str, *, wait_s: float = 120.0) -> bool:
        """Remove the pipeline's application (Serve drains it: in-flight requests finish and the
        replicas flush their prediction logs). False when there was none."""
        if self.app(pipeline) is None:
            return False
        self._put(self._others(pipeline))
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.app(pipeline) is None:
                return True
            time.sleep(0.5)
        raise PlatformError(f"Serve application {pipeline!r} was not removed within {wait_s:.0f}s")


class ServeClient:
    """HTTP to a pipeline's endpoint (the CLI's `predict`, infra validation, tests)."""

    def __init__(self, settings: Settings, pipeline: str, *, timeout: float = 30.0):
        self.base = f"{settings.serve_url}/{pipeline}"
        self.pipeline = pipeline
        self.timeout = timeout
        self.session = requests.Session()

    def post(self, path: str, body: Any, *, version: str | None = None,
             purpose: str | None = None) -> requests.Response:
        headers = {VERSION_HEADER: version} if version else {}
        if purpose:
            headers[PURPOSE_HEADER] = purpose
        try:
            return self.session.post(self.base + path, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ClusterUnreachable(f"the model server at {self.base} did not answer: {exc}") from None

    def get(self, path: str) -> requests.Response:
        try:
            return self.session.get(self.base + path, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ClusterUnreachable(f"the model server at {self.base} did not answer: {exc}") from None

    def predict(self, body: dict[str, Any], *, version: str | None = None) -> dict[str, Any]:
        resp = self.post("/predict", body, version=version)
        payload = _payload(resp)
        if resp.status_code >= 400:
            message = payload.get("error", resp.text[:500]) if isinstance(payload, dict) else resp.text[:500]
            err = InputError if resp.status_code < 500 else PlatformError
            raise err(f"{self.pipeline}: {resp.status_code}: {message}")
        return payload


def _payload(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return {"error": resp.text[:500]}
