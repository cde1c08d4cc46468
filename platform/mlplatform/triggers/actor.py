"""The watcher as a detached named actor on the cluster: it outlives the CLI that started it.

One per pipeline: the actor's name is `watcher:<pipeline>` in the platform's namespace, and
Ray refuses a second actor of the same name, so two `platformctl watch` never start two loops
(even run at the same moment). The actor reserves no CPU (it waits most of the time and must
never keep a pipeline job from starting on a small cluster). Its code and the spec travel in
its runtime_env like a job's (the working directory, the local mlplatform and jobs packages);
the spec's relative paths resolve against the folder the user wrote it in, as a job's do. It
submits runs through its own cluster's dashboard, found in Ray's registry (a submitter's URL
is often a port-forward the cluster cannot reach). Ray restarts it if its node dies; its state
is in the metadata store, so a restarted loop goes on where the old one stopped.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlplatform.errors import InputError, PlatformError
from mlplatform.settings import Settings

NAMESPACE = "mlplatform"


def actor_name(pipeline: str) -> str:
    return f"watcher:{pipeline}"


class WatcherActor:
    """Hosts a Watcher whose loop runs in a thread of the actor, beside the method calls."""

    def __init__(self, spec_file: str, base_dir: str, name: str):
        from mlplatform.runtime.connect import own_dashboard
        from mlplatform.settings import load_settings
        from mlplatform.spec_code import load_for
        from mlplatform.triggers.watcher import Watcher

        settings = load_settings()
        url = own_dashboard(settings)
        if url:
            settings = settings.model_copy(update={
                "ray_address": url, "sources": {**settings.sources, "ray_address": "the watcher's cluster"}})
        spec = load_for(spec_file, settings, base_dir=Path(base_dir))
        self.started_at = dt.datetime.now(dt.UTC)
        self.watcher = Watcher(spec, settings, Path(spec_file), name=name, working_dir=Path.cwd(),
                               base_dir=Path(base_dir))
        self.thread = threading.Thread(target=self.watcher.run, name=name, daemon=True)
        self.thread.start()

    def info(self) -> dict[str, Any]:
        last = self.watcher.last_tick
        return {"pipeline": self.watcher.spec.name, "name": self.watcher.name,
                "started_at": self.started_at.isoformat(), "alive": self.thread.is_alive(),
                "last_tick": last.model_dump(mode="json") if last else None}

    def tick(self, now: str | None = None) -> dict[str, Any]:
        at = dt.datetime.fromisoformat(now) if now else None
        return self.watcher.tick(at).model_dump(mode="json")


class WatchStarted(BaseModel):
    pipeline: str
    actor: str
    namespace: str = NAMESPACE
    started: bool  # False: one was running already
    message: str


def _get(name: str) -> Any | None:
    import ray

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def start_watcher(settings: Settings, spec_file: Path, pipeline: str, *,
                  working_dir: Path | None = None, timeout_s: float = 180) -> WatchStarted:
    """Start the pipeline's watcher on the cluster unless one runs; waits until it has loaded
    the spec (an error there is this command's error, not a dead actor found later)."""
    import ray

    from mlplatform.runtime.jobs import build_runtime_env

    working_dir = (working_dir or Path.cwd()).resolve()
    spec_file = spec_file.resolve()
    try:
        spec_arg = str(spec_file.relative_to(working_dir))
    except ValueError:
        raise InputError(f"spec {spec_file} is outside the working directory {working_dir}: the "
                         "watcher reads the uploaded copy; run platformctl from a folder that "
                         "contains it") from None
    name = actor_name(pipeline)
    runtime_env = build_runtime_env(settings, working_dir, name)
    runtime_env["env_vars"].pop("PLATFORM_JOB_ID", None)
    # Ray uploads local folders for a driver's runtime_env only: this command connects with the
    # watcher's code as its own, and the detached actor inherits it (and keeps it after we exit).
    actor_env = _connect_with(settings, runtime_env)
    if _get(name) is not None:
        return WatchStarted(pipeline=pipeline, actor=name, started=False,
                            message=f"a watcher of {pipeline!r} is already running; "
                                    f"`platformctl watch --stop {pipeline}` stops it")
    cls = ray.remote(num_cpus=0, max_restarts=-1)(WatcherActor)
    options: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "lifetime": "detached"}
    if actor_env is not None:
        options["runtime_env"] = actor_env
    try:
        handle = cls.options(**options).remote(spec_arg, str(spec_file.parent), name)  # type: ignore[attr-defined]
    except ValueError as exc:
        if "already" not in str(exc):
            raise PlatformError(f"the watcher of {pipeline!r} did not start: {exc}") from None
        # another `watch` created it between our look and now
        return WatchStarted(pipeline=pipeline, actor=name, started=False,
                            message=f"a watcher of {pipeline!r} is already running")
    try:
        ray.get(handle.info.remote(), timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - the actor could not start: say why, leave nothing
        ray.kill(handle, no_restart=True)
        cause = getattr(exc, "cause", None) or exc
        message = cause.message if isinstance(cause, PlatformError) else str(cause).strip().splitlines()[-1]
        raise PlatformError(f"the watcher of {pipeline!r} did not start: {message[:500]}") from None
    return WatchStarted(pipeline=pipeline, actor=name, started=True,
                        message=f"watching {pipeline!r} on the cluster (actor {name!r}, namespace "
                                f"{NAMESPACE!r}); `platformctl watch --stop {pipeline}` stops it")


def _connect_with(settings: Settings, runtime_env: dict[str, Any]) -> dict[str, Any] | None:
    """Connect this process as a driver whose runtime_env is the watcher's; returns the runtime_env
    the actor must name itself (None: it inherits this driver's). A process already connected
    (a test, a notebook) keeps its connection: the actor then gets the environment variables and
    the code the cluster already has, as local clusters share this machine's packages."""
    import ray

    from mlplatform.errors import ClusterUnreachable
    from mlplatform.runtime.connect import gcs_address
    from mlplatform.settings import apply_ray_auth_env

    if ray.is_initialized():
        return {"env_vars": runtime_env["env_vars"]}
    apply_ray_auth_env(settings)
    address = gcs_address(settings)
    if address is None:
        raise ClusterUnreachable("no Ray cluster to start the watcher on",
                                 hint="start one with `platformctl cluster up`, or set RAY_ADDRESS "
                                      "to a GCS address")
    ray.init(address=address, runtime_env=runtime_env, logging_level="WARNING", log_to_driver=False)
    return None


def stop_watcher(settings: Settings, pipeline: str) -> bool:
    """Kill the pipeline's watcher; False when none ran. A run it started goes on; its claim is
    released by the next watcher once the run's job has ended."""
    import ray

    from mlplatform.runtime.connect import connect

    connect(settings)
    handle = _get(actor_name(pipeline))
    if handle is None:
        return False
    ray.kill(handle, no_restart=True)
    return True


def watcher_info(settings: Settings, pipeline: str, timeout_s: float = 30) -> dict[str, Any] | None:
    import ray

    from mlplatform.runtime.connect import connect

    connect(settings)
    handle = _get(actor_name(pipeline))
    if handle is None:
        return None
    return ray.get(handle.info.remote(), timeout=timeout_s)
