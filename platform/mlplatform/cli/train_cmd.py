"""`platformctl train`, `platformctl tune` and `platformctl ui`: training by hand.

`train` runs the same train -> evaluate -> register -> promote steps the loop runs, as a Ray Job on
the pipeline's newest training set. `tune` runs only the search, here against the
cluster, and shows the trials. Both check the model section (allow-list, parameters,
search space, labels) before any cluster work starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
import typer
from pydantic import BaseModel
from rich.table import Table

from mlplatform import storage
from mlplatform.artifacts import TrainingSet
from mlplatform.cli.jobs_cmd import print_outcome, submit_and_watch
from mlplatform.cli.output import AddressOpt, JsonOpt, console, handle_errors, print_json, settings_for
from mlplatform.errors import InputError, PlatformError
from mlplatform.redact import redact_url
from mlplatform.services import Services
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_code import load_for

SpecArg = Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")]


def precheck(settings: Settings, spec: PipelineSpec) -> TrainingSet:
    """Everything that can be wrong with a training request, found before the cluster is used."""
    # Imported here, as every module that loads scikit-learn: it is a second of each CLI start.
    from mlplatform.training.data import check_labels
    from mlplatform.training.estimators import check_model
    from mlplatform.training.trainer import newest_training_set

    check_model(spec.model, settings.estimator_modules)
    art = newest_training_set(Services(settings).metadata, spec.name)
    if art is None:
        raise InputError(f"pipeline {spec.name!r} has no training set yet: run the pipeline first "
                         f"(platformctl submit SPEC) so that training_set has something to read")
    label = art.label
    if not label:
        raise InputError("source.label_column is not set: a model needs a label to train on")
    fs, path = storage.resolve(art.uri)
    y = pq.read_table(path, filesystem=fs, columns=[label]).column(label).to_pandas().dropna().to_numpy()
    check_labels(y, spec.model.task, f"training set {art.uri}")
    return art


def _spec(path: Path, settings: Settings) -> PipelineSpec:
    return load_for(path, settings)


@handle_errors
def train(
    spec: SpecArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the job's logs.")] = False,
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Tune, fit, gate and register a model from the pipeline's newest training set (a Ray Job)."""
    settings = settings_for(address)
    parsed = _spec(spec, settings)
    art = precheck(settings, parsed)
    if not json_:
        console.print(f"training set {art.uri} ({art.rows} rows)", highlight=False)
    # A served pipeline serves its new champion, as after a scheduled run.
    steps_run = ["train", "evaluate", "register", "promote"] + (["rollout"] if parsed.deploy else [])
    sub, info = submit_and_watch(settings, spec, steps=steps_run,
                                 run_id=None,
                                 wait=not follow, follow=follow, json_=json_)
    detail = Services(settings).metadata.run(sub.run_id)
    steps = {s.step: s for s in detail.steps} if detail else {}
    if json_:
        print_json({**sub.model_dump(mode="json"), "job": info.model_dump(mode="json") if info else None,
                    **{s: steps[s].summary if s in steps else None
                       for s in ("evaluate", "register", "promote")}})
    elif info is not None:
        print_outcome(info)
        for name in ("register", "promote"):
            if name in steps and steps[name].summary.get("message"):
                console.print(steps[name].summary["message"], highlight=False)
    if info is not None and info.status != "SUCCEEDED":
        raise typer.Exit(1)


class TuneOutcome(BaseModel):
    pipeline: str
    training_set: str
    metric: str
    best_score: float
    best_config: dict
    trials: list[dict]
    wall_s: float


@handle_errors
def tune(
    spec: SpecArg,
    num_samples: Annotated[int | None, typer.Option(help="Override model.search.num_samples.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Run only the hyperparameter search on the cluster and show every trial (nothing is registered)."""
    from mlplatform.runtime.connect import connect
    from mlplatform.training.search import TrialRecord, run_search
    from mlplatform.training.trainer import prepare, search_data, tune_root

    settings = settings_for()
    parsed = _spec(spec, settings)
    if parsed.model.search is None:
        raise InputError("model.search is not set: there is nothing to tune (platformctl train fits "
                         "model.params as they are)")
    if num_samples is not None:
        if num_samples < 1:
            raise InputError(f"--num-samples {num_samples}: must be at least 1")
        parsed.model.search.num_samples = num_samples
    art = precheck(settings, parsed)
    prepared = prepare(parsed.model, parsed.evaluation, art)
    search = parsed.model.search
    data = search_data(parsed.model, prepared)
    if settings.ray_address is None and not os.environ.get("RAY_ADDRESS"):
        raise PlatformError("no Ray cluster is up: start one with `platformctl cluster up`")
    connect(settings)
    done: list[TrialRecord] = []
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    grid = 1
    for dim in search.space.values():
        grid *= len(dim.values or []) if dim.type == "grid" else 1
    total = grid * (1 if search.algorithm == "grid" else search.num_samples)
    better = max if parsed.model.metric_mode == "max" else min
    with (Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=console, transient=True)
          if not json_ else nullcontext()) as bar:
        task = bar.add_task("", total=total) if bar else None

        def on_trial(t: TrialRecord) -> None:
            done.append(t)
            if bar is not None and task is not None:
                best = better((d.score for d in done if d.score is not None), default=None)
                bar.update(task, advance=1, description=f"best {parsed.model.metric} "
                           f"{'-' if best is None else f'{best:.4f}'}")

        result = run_search(parsed.model, data, storage_path=tune_root(settings, parsed.name),
                            name=f"tune-{int(time.time())}",
                            modules=settings.estimator_modules, on_trial=on_trial)
    outcome = TuneOutcome(pipeline=parsed.name, training_set=art.uri, metric=result.metric,
                          best_score=result.best_score, best_config=result.best_config,
                          trials=[t.model_dump() for t in result.trials], wall_s=result.wall_s)
    if json_:
        print_json(outcome)
        return
    keys = sorted({k for t in result.trials for k in t.config})
    table = Table("trial", result.metric, *keys, "status")
    ordered = sorted(result.trials, key=lambda t: (t.score is None, -(t.score or 0) if result.mode == "max"
                                                   else (t.score or 0)))
    for t in ordered:
        table.add_row(t.trial_id, "-" if t.score is None else f"{t.score:.4f}",
                      *[_fmt(t.config.get(k)) for k in keys], t.status)
    console.print(table)
    console.print(f"best {result.metric} {result.best_score:.4f} with {json.dumps(result.best_config)} "
                  f"({len(result.trials)} trials in {result.wall_s:.1f}s)", highlight=False)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UiInfo(BaseModel):
    url: str
    pid: int
    tracking_uri: str


@handle_errors
def ui(
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 5000,
    detach: Annotated[bool, typer.Option("--detach", help="Start it in the background and return.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Start the MLflow UI on 127.0.0.1 for this installation's tracking store; print its URL."""
    settings = settings_for()
    Services(settings).models  # noqa: B018 - creates the database once, before the server's workers open it
    port = port or _free_port()
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise InputError(f"--port {port}: something already listens there; pick another or --port 0")
    log = settings.home / "mlflow-ui.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.mlflow_tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # The server's background job runner (huey consumers, for GenAI scorers) is not used here;
    # off, it leaves no stray processes behind. Its own session, so one signal stops it all.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            raise PlatformError(f"the MLflow UI exited with code {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        _stop(proc)
        raise PlatformError(f"the MLflow UI did not answer on {url} within 90 s; see {log}")
    info = UiInfo(url=url, pid=proc.pid, tracking_uri=redact_url(settings.mlflow_tracking_uri))
    if json_:
        print_json(info)
    else:
        console.print(f"MLflow UI: {url}  (tracking store {info.tracking_uri})", highlight=False)
    if detach:
        if not json_:
            console.print(f"running in the background (process group {proc.pid}); stop it with "
                          f"`kill -- -{proc.pid}`")
        return
    if not json_:
        console.print("Ctrl-C stops it")
    try:
        proc.wait()
    except KeyboardInterrupt:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """The server and its workers (gunicorn/uvicorn children) share its process group."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
