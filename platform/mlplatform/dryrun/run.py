"""`platformctl dry-run`: the whole pipeline, as production would run it, on a sample of the
newest batch, in a scratch home that production never sees.

What is read from production, and only read: the sample's batch and the schema the pipeline
recorded (so a batch that would break production's schema breaks the dry-run too, where the
spec does not declare one). Everything else is the scratch home's own: its metadata, MLflow
registry, offline and online stores, and a Ray cluster whose Serve replica infra-validates
the would-be model over real HTTP (started beside the first steps when the spec serves,
otherwise only if a step needs a cluster). The pipeline runs in a child process whose environment
is rebuilt without production's settings (`scratch_env`), so that isolation holds by
construction, not by every step remembering to use the right settings.

Against an empty registry the gate has no champion to beat: the model meets the spec's
thresholds alone, and the rollout serves it directly (a first model's path).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from mlplatform.dryrun.sample import Sample, newest_batch, write_sample
from mlplatform.dryrun.scratch import REQUEST, RESULT, ScratchRequest, ScratchResult
from mlplatform.pipeline import StepReport
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec

# Environment variables a dry-run's process never inherits: production's settings, store
# credentials, Ray address and token, and the marks this process leaves for itself.
_WITHHELD_PREFIXES = ("PLATFORM_", "_PLATFORM_", "RAY_", "MLFLOW_", "AWS_", "REDIS_", "PG", "DATABASE_")
OBJECT_STORE_MB = 256


class DryRunReport(BaseModel):
    pipeline: str
    status: Literal["SUCCEEDED", "FAILED"]
    message: str
    failed_step: str | None = Field(None, description="The step that failed; its own error is `message`.")
    sample: Sample
    schema_from: str = Field(description="Where the validation schema came from: the spec, "
                             "production's recorded schema, or inferred from the sample.")
    steps: list[StepReport]
    cluster_s: float = Field(description="Seconds to start the scratch Ray cluster (0: no step needed one).")
    seconds: float
    scratch: str | None = Field(None, description="The scratch home, when kept (--keep).")


def scratch_env(home: Path, settings: Settings, spec_dir: Path) -> dict[str, str]:
    """The dry-run process's environment: this one without anything naming production, plus
    the scratch home and the operator's allow-lists (the same code is allowed to run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_WITHHELD_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    config = home / "platform.yaml"
    config.write_text("# the dry-run's scratch home: every setting is the embedded default\n")
    paths = [str(spec_dir.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]
    from mlplatform.runtime.local import free_port

    env.update({
        "PLATFORM_HOME": str(home), "PLATFORM_CONFIG": str(config),
        "PLATFORM_ESTIMATOR_MODULES": settings.estimator_modules,
        "PLATFORM_TRANSFORMATION_MODULES": settings.transformation_modules,
        "PLATFORM_SERVE_PORT": str(free_port()), "PLATFORM_SERVE_PROXY_LOCATION": "HeadOnly",
        "PLATFORM_SERVE_FASTPATH": "off",  # Serve's own proxy: one process less to start, and
        # infra validation needs a replica's answers, not HAProxy's throughput
        "PYTHONPATH": os.pathsep.join(paths),
    })
    return env


def _schema(spec: PipelineSpec, settings: Settings) -> tuple[dict | None, str]:
    """The schema the scratch run validates against, and where it came from."""
    if spec.schema_ is not None:
        return None, "spec"
    from mlplatform.data.reference import recorded_schema
    from mlplatform.metadata.store import MetadataStore

    recorded = recorded_schema(MetadataStore(settings.metadata_url), spec.name)
    if recorded is None:
        return None, "inferred from the sample (production has recorded none)"
    return recorded.model_dump(mode="json", exclude_none=True), "production's recorded schema"


def dry_run(spec: PipelineSpec, spec_dir: Path, settings: Settings, *, sample_rows: int,
            batch: str | None = None, keep: bool = False,
            log: Callable[[str], None] = print) -> DryRunReport:
    """Run the pipeline on a sample in a scratch home; never raises for a step's failure."""
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="mlplatform-dryrun-"))
    try:
        sample = write_sample(spec.source, newest_batch(spec.source, batch), sample_rows, scratch / "batch")
        log(f"[dry-run] {sample.rows} of {sample.batch_rows} rows of {sample.batch}; scratch home {scratch}")
        raw = spec.model_dump(mode="json", by_alias=True)
        raw["source"]["path"] = str(scratch / "batch")
        schema, schema_from = _schema(spec, settings)
        if schema is not None:
            raw["schema"] = schema
        request = ScratchRequest(spec=raw, num_cpus=max(1, min(os.cpu_count() or 1, 4)),
                                 object_store_mb=OBJECT_STORE_MB)
        (scratch / REQUEST).write_text(request.model_dump_json())
        result = _run_child(scratch, scratch_env(scratch / "home", settings, spec_dir), log)
        failed = next((s.step for s in result.steps if s.status == "FAILED"), None)
        return DryRunReport(pipeline=spec.name, status=result.status, message=result.message,
                            failed_step=failed, sample=sample, schema_from=schema_from,
                            steps=result.steps, cluster_s=result.cluster_s,
                            seconds=round(time.perf_counter() - t0, 2),
                            scratch=str(scratch) if keep else None)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _run_child(scratch: Path, env: dict[str, str], log: Callable[[str], None]) -> ScratchResult:
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform.dryrun.scratch", str(scratch)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log(line.rstrip("\n"))
            tail = [*tail[-19:], line.rstrip("\n")]
        code = proc.wait()
    except BaseException:  # Ctrl-C: the child stops its scratch cluster on SIGTERM
        proc.terminate()
        proc.wait(60)
        raise
    result_file = scratch / RESULT
    if not result_file.is_file():
        shown = "\n".join(tail[-10:])
        return ScratchResult(status="FAILED", message=f"the dry-run process exited {code} without a "
                             f"result; its output ended:\n{shown}")
    return ScratchResult.model_validate_json(result_file.read_text())
