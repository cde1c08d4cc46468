"""The dry-run's own process: a scratch home with a Ray cluster of its own, the whole
pipeline run in it, then the cluster stopped.

It is a separate process, started with an environment that holds nothing of production
(mlplatform.dryrun.run.scratch_env): no store URL, no Ray address, no token, no webhook, no
cloud credential. So nothing in it (the steps, their Ray tasks, the Serve replica it deploys
for infra validation) can reach a production store, whatever the code under test does; and a
crash halfway leaves its writes in the scratch folder, which the parent removes.

    python -m mlplatform.dryrun.scratch FOLDER

reads FOLDER/request.json, prints the pipeline's log lines as they come, and writes
FOLDER/result.json (a ScratchResult).
"""

from __future__ import annotations

import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlplatform.pipeline import StepReport

REQUEST, RESULT, TRACE = "request.json", "result.json", "error.txt"


class ScratchRequest(BaseModel):
    spec: dict[str, Any] = Field(description="The spec (JSON, by alias) with its source on the sample.")
    num_cpus: int = Field(ge=1)
    object_store_mb: int = Field(ge=80)


class ScratchResult(BaseModel):
    status: Literal["SUCCEEDED", "FAILED"]
    message: str
    run_id: str | None = None
    steps: list[StepReport] = Field(default_factory=list)
    cluster_s: float = Field(0.0, description="Seconds to start the scratch Ray cluster (0: none started).")


def _log(message: str) -> None:
    print(message, flush=True)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # through the `finally` that stops the scratch cluster


def run(folder: Path) -> ScratchResult:
    from mlplatform.errors import PlatformError
    from mlplatform.pipeline import run_pipeline
    from mlplatform.runtime import local
    from mlplatform.runtime.starting import register
    from mlplatform.settings import load_settings
    from mlplatform.spec import PipelineSpec

    request = ScratchRequest.model_validate_json((folder / REQUEST).read_text())
    spec = PipelineSpec.model_validate(request.spec)
    settings = load_settings()
    port, dashboard_port = local.free_port(), local.free_port()

    def up() -> None:
        started = local.up(settings, num_cpus=request.num_cpus, port=port, dashboard_port=dashboard_port,
                           object_store_mb=request.object_store_mb)
        _log(f"[dry-run] {started.message}")

    # A spec that serves needs the cluster for its rollout: started beside the first steps,
    # which need none at a sample's size. Otherwise only if a step reaches for it
    # (mlplatform.runtime.starting).
    starting = register(up, now=spec.deploy is not None)
    run_settings = settings.model_copy(update={"ray_address": f"http://127.0.0.1:{dashboard_port}",
                                               "ray_auth_mode": "token"})
    try:
        report = run_pipeline(spec, run_settings, log=_log, properties={"cause": "dry_run"})
        result = ScratchResult(status="SUCCEEDED" if report.status == "SUCCEEDED" else "FAILED",
                               message=report.message, run_id=report.run_id, steps=report.steps)
    except PlatformError as exc:
        result = ScratchResult(status="FAILED", message=exc.message)
    finally:
        if starting.started:
            starting.thread.join()  # a failing early step: the cluster still comes down whole
        local.down(settings)  # a start that failed has stopped its own processes (local.up)
        shutil.rmtree(local._temp_dir(settings.home), ignore_errors=True)
    result.cluster_s = round(starting.seconds, 2)  # known once its start, if any, has ended
    return result


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stop)
    folder = Path(argv[0])
    try:
        result = run(folder)
    except Exception as exc:  # noqa: BLE001 - a bug here is reported as the dry-run's failure
        (folder / TRACE).write_text(traceback.format_exc())
        result = ScratchResult(status="FAILED", message=f"{type(exc).__name__}: {exc} "
                                                        f"(traceback in {folder / TRACE})")
    (folder / RESULT).write_text(result.model_dump_json(indent=2))
    return 0 if result.status == "SUCCEEDED" else 1


if __name__ == "__main__":
    from mlplatform.process_start import raise_gc_thresholds

    raise_gc_thresholds()
    code = main(sys.argv[1:])
    from mlplatform.process_exit import fast_exit

    fast_exit()
    sys.exit(code)
