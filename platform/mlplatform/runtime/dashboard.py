"""The Ray dashboard over HTTP: the address, token headers, and errors a user can act on.

Every control-plane call (Jobs API, cluster status, Serve applications) goes through
here, so an unreachable or unauthorised cluster reads the same everywhere.
"""

from __future__ import annotations

import os
from typing import Any

import requests

from mlplatform.errors import ClusterUnreachable
from mlplatform.settings import Settings

REACH_TIMEOUT_S = 5.0


def auth_headers(settings: Settings) -> dict[str, str]:
    if settings.ray_auth_mode != "token":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token and settings.auth_token_path.exists():
        token = settings.auth_token_path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def require_address(settings: Settings) -> str:
    from mlplatform.runtime.starting import wait_until_started

    wait_until_started()  # a cluster this process is starting: reached once it is up
    if not settings.ray_address:
        raise ClusterUnreachable(
            "no Ray cluster configured",
            hint="start one with `platformctl cluster up`, or pass --address / set RAY_ADDRESS "
                 "to a Ray dashboard (http://host:8265)",
        )
    return settings.ray_address.rstrip("/")


def dashboard_get(settings: Settings, path: str, timeout: float = REACH_TIMEOUT_S) -> Any:
    """GET a dashboard endpoint; unreachable or unauthorised clusters become clear errors."""
    url = require_address(settings)
    try:
        resp = requests.get(url + path, headers=auth_headers(settings), timeout=timeout)
    except requests.RequestException as exc:
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {url}: {type(exc).__name__}",
            hint="is it up? `platformctl cluster up` starts a local one; --address picks another",
        ) from None
    if resp.status_code in (401, 403):
        raise ClusterUnreachable(
            f"the Ray cluster at {url} refused the request ({resp.status_code}): token "
            "authentication failed",
            hint="set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) for it",
        )
    try:
        resp.raise_for_status()
        return resp.json()
    except (requests.HTTPError, ValueError):
        raise ClusterUnreachable(
            f"{url}{path} answered {resp.status_code} with no Ray dashboard JSON: is {url} a Ray "
            "dashboard (http://host:8265)?") from None


def ray_version_at(settings: Settings) -> str:
    return str(dashboard_get(settings, "/api/version").get("ray_version", "?"))
