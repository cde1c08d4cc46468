"""Connecting this process to Ray, explicitly.

A job's driver connects to the cluster Ray started it on (Ray sets RAY_ADDRESS); a CLI
command connects to the configured cluster (the local head from `cluster up`, or a
GCS address). Nothing here starts a Ray silently: with no cluster configured, a step
fails saying so, and only a by-hand CLI command may ask for a private, in-process Ray,
which it announces.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mlplatform.errors import ClusterUnreachable
from mlplatform.runtime.local import read_state
from mlplatform.settings import Settings, apply_ray_auth_env


def gcs_address(settings: Settings) -> str | None:
    """The address `ray.init` needs: the job's own cluster, else the local head's GCS."""
    address = os.environ.get("RAY_ADDRESS")
    if address and not address.startswith("http"):
        return address
    state = read_state(settings)
    if state is not None:
        return state.gcs_address
    if settings.ray_address and settings.ray_address.startswith("ray://"):
        return settings.ray_address
    return None


def connect(settings: Settings, *, allow_private: bool = False,
            announce: Callable[[str], None] | None = None) -> None:
    """Connect to Ray once per process; RAY_AUTH_MODE is always set explicitly first.

    `allow_private` lets a by-hand command (e.g. `platformctl validate`) start an
    in-process Ray when no cluster is configured; it says so through `announce`.
    """
    import ray

    if ray.is_initialized():
        return
    from mlplatform.runtime.starting import wait_until_started

    wait_until_started()  # a cluster this process is starting (the dry-run's): its GCS once up
    apply_ray_auth_env(settings)
    address = gcs_address(settings)
    if address is None:
        if not allow_private:
            raise ClusterUnreachable(
                "no Ray cluster to connect to: not inside a Ray job and no local cluster is up",
                hint="start one with `platformctl cluster up`, or set RAY_ADDRESS to a GCS address")
        if announce:
            announce("no Ray cluster is configured: starting a private local Ray for this command")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=True)
        return
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=True, logging_level="WARNING")


def own_dashboard(settings: Settings) -> str | None:
    """The dashboard of the cluster this process runs in (a job's driver), from Ray's own
    registry. Ray gives a job's driver RAY_ADDRESS = the GCS address, which is what ray.init
    needs but not what the Jobs and Serve REST APIs need; the submitter's dashboard URL would not
    do either (often a port-forward on a laptop, unreachable from inside the cluster)."""
    connect(settings)
    from ray._private.services import get_webui_url_from_internal_kv

    url = get_webui_url_from_internal_kv()
    if not url:
        return None
    return url if "://" in url else f"http://{url}"
