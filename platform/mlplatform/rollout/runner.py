"""The rollout's runner: a detached Ray actor per pipeline that observes, decides and applies,
one check per interval, until the rollout ends.

It holds nothing that matters: the state lives in the metadata store and every change of
it is a compare-and-set, so a killed actor (Ray restarts it: max_restarts=-1), a restarted
job driver or a restarted cluster (`ensure_runner`, called by the rollout step and by
`platformctl rollout`) resumes where the store says the rollout is. The loop runs in a
thread started by the constructor, not in a method a driver calls: after a restart Ray
runs the constructor again, while a method call would die with the driver that made it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from mlplatform.metadata.schema import utcnow
from mlplatform.rollout.plan import RolloutSpec
from mlplatform.rollout.state import RolloutState
from mlplatform.rollout.store import RolloutConflict, RolloutStore

log = logging.getLogger(__name__)
NAMESPACE = "mlplatform"
POLL_S = 1.0  # how soon a pause or abort by a person is noticed between checks


def actor_name(pipeline: str) -> str:
    return f"rollout-{pipeline}"


class Runner:
    """The loop, apart from Ray so that a test (or `platformctl rollout step`) can run it."""

    def __init__(self, env: dict[str, str], pipeline: str):
        from mlplatform.services import Services
        from mlplatform.settings import load_settings

        self.settings = load_settings(env=env)
        self.services = Services(self.settings)
        self.store = RolloutStore(self.services.metadata)
        self.pipeline = pipeline
        self.next_check: dt.datetime | None = None
        self.seen: int | None = None  # the revision this runner last read or wrote
        self.checks = 0

    def spec(self) -> Any:
        from mlplatform.errors import PlatformError
        from mlplatform.serving.client import ServeControl

        spec = ServeControl(self.settings).deployed_spec(self.pipeline)
        if spec is None or spec.deploy is None:
            raise PlatformError(f"pipeline {self.pipeline!r} is not served (platformctl serve status)")
        return spec

    def tick(self, now: dt.datetime | None = None) -> RolloutState | None:
        """One round: re-read the state, check when due, store the decision, apply it. Returns
        the state after the round (None: no active rollout)."""
        from mlplatform.rollout import apply, controller
        from mlplatform.rollout.observe import observe

        state = self.store.unsettled(self.pipeline)
        if state is None:
            return None
        now = now or utcnow()
        if state.revision != self.seen:  # changed by someone else (a resume restarts the window)
            self.next_check = None
        plan = RolloutSpec.model_validate(state.plan)
        spec = self.spec()
        if state.status == "running":
            due = self.next_check or (state.step_started_at + dt.timedelta(seconds=plan.interval_s))
            self.next_check = due
            if now >= due:
                obs = observe(plan, state, storage_uri=self.settings.storage_uri, service=state.service,
                              now=now)
                decision = controller.decide(plan, state, obs, now)
                self.checks += 1
                self.next_check = decision.next_check_at
                if decision.event is not None or decision.state != state:
                    try:
                        state = self.store.save(decision.state)
                    except RolloutConflict:  # a person paused or aborted meanwhile: read it again
                        self.next_check = None
                        return self.store.get(state.id)
                    self.seen = state.revision
                    if not state.active or state.status == "paused":
                        apply.alert(self.services, state)
        apply.reconcile(self.services, spec, state)
        if not state.active:
            apply.finished(self.services, state)
            try:
                state = self.store.save(state.model_copy(update={"settled": True}))
            except RolloutConflict:
                return self.store.get(state.id)
        self.seen = state.revision
        return state

    def loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                state = self.tick()
            except Exception:  # noqa: BLE001 - keep checking: the next round may succeed
                log.exception("rollout of %s: a check failed; trying again", self.pipeline)
                stop.wait(POLL_S * 5)
                continue
            if state is None or state.settled:
                return
            # Wake for the next check on time (not up to POLL_S late), else every POLL_S to notice
            # a person's pause or abort.
            until = (self.next_check - utcnow()).total_seconds() if self.next_check else POLL_S
            stop.wait(min(POLL_S, max(0.05, until)))


def _actor_class() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
    class RolloutRunner:
        def __init__(self, env: dict[str, str], pipeline: str):
            logging.basicConfig(level=logging.INFO)
            self.runner = Runner(env, pipeline)
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._run, name="rollout", daemon=True)
            self.thread.start()

        def _run(self) -> None:
            # When the rollout ends the actor stays, idle (it holds no CPU): exiting would make
            # Ray restart it (max_restarts=-1). The next rollout's ensure_runner replaces it.
            self.runner.loop(self.stop)

        def alive(self) -> dict[str, Any]:
            """Whether the loop runs, and what the runner has cost (for benchmarks/rollout.py)."""
            import os

            import psutil

            cpu = psutil.Process(os.getpid()).cpu_times()
            return {"running": self.thread.is_alive(), "checks": self.runner.checks, "pid": os.getpid(),
                    "cpu_s": cpu.user + cpu.system}

    return RolloutRunner


def ensure_runner(settings: Any, pipeline: str) -> bool:
    """Start the pipeline's runner if its rollout is active and no live runner has it. True when
    one was started. Needs a connected Ray driver (mlplatform.runtime.connect)."""
    import ray

    store = RolloutStore(_services(settings).metadata)
    if store.unsettled(pipeline) is None:
        return False
    name = actor_name(pipeline)
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        actor = None
    if actor is not None:
        try:
            if ray.get(actor.alive.remote(), timeout=30)["running"]:
                return False
        except Exception:  # noqa: BLE001 - dead or finished: replaced below
            pass
        ray.kill(actor, no_restart=True)
        _wait_gone(name)
    _actor_class().options(name=name, namespace=NAMESPACE, lifetime="detached",
                           get_if_exists=False).remote(runner_env(settings), pipeline)
    return True


def runner_env(settings: Any) -> dict[str, str]:
    """What the runner needs beyond a job's environment: the dashboard it changes Serve through,
    and how to authenticate (the token file's path, never the token)."""
    env = dict(settings.job_env())
    if settings.ray_address:
        env["PLATFORM_RAY_ADDRESS"] = settings.ray_address
    env["RAY_AUTH_MODE"] = settings.ray_auth_mode
    env["RAY_AUTH_TOKEN_PATH"] = str(settings.auth_token_path)
    return env


def stop_runner(pipeline: str) -> None:
    import ray

    try:
        ray.kill(ray.get_actor(actor_name(pipeline), namespace=NAMESPACE), no_restart=True)
    except ValueError:
        pass


def _wait_gone(name: str, timeout_s: float = 20.0) -> None:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        time.sleep(0.2)


def _services(settings: Any) -> Any:
    from mlplatform.services import Services

    return Services(settings)
