"""`platformctl serve deploy | traffic | status | down` and `platformctl predict`: what a
pipeline serves over HTTP (Ray Serve), by hand. The deploy step does the same after each
run that changes the champion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.table import Table

from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, services_for
from mlplatform.errors import InputError
from mlplatform.serving.client import ServeClient, ServeControl
from mlplatform.serving.deployer import change
from mlplatform.serving.predictions import read_predictions
from mlplatform.spec import PipelineSpec
from mlplatform.spec_code import load_for

app = typer.Typer(help="Serve models over HTTP on Ray Serve: deploy, split traffic, status.",
                  no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The pipeline whose application to act on.")]


def _weights(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        version, sep, weight = item.partition("=")
        version = version.strip().removeprefix("v")
        if not sep or not version or not weight.strip().isdigit():
            raise InputError(f"weight {item!r}: expected VERSION=PERCENT, e.g. v3=90")
        out[version] = int(weight)
    if sum(out.values()) != 100:
        raise InputError(f"weights must sum to 100, got {sum(out.values())} ({' '.join(items)})")
    return out


def _served_spec(control: ServeControl, name: str) -> PipelineSpec:
    spec = control.deployed_spec(name)
    if spec is None:
        served = control.served()
        raise InputError(f"pipeline {name!r} is not served; served: {served or 'none'} "
                         "(platformctl serve deploy SPEC)")
    return spec


def _report(result: Any, json_: bool) -> None:
    if json_:
        print_json(result)
        return
    console.print(f"{result.pipeline}: {result.message} (generation {result.generation}, "
                  f"{result.replicas} replica(s), {result.seconds:.1f}s)")
    for c in result.infra:
        console.print(f"  infra validation v{c.version}: {'passed' if c.passed else 'FAILED'}: {c.detail}")


@app.command("deploy")
@handle_errors
def deploy(spec_file: Annotated[Path, typer.Argument(help="The pipeline spec (its deploy section).")],
           version: Annotated[str | None, typer.Option("--version", help="Serve this version at 100% "
                                                       "(default: the champion).")] = None,
           weight: Annotated[list[str] | None, typer.Option("--weight", help="VERSION=PERCENT, repeated; "
                                                            "summing to 100.")] = None,
           shadow: Annotated[str | None, typer.Option("--shadow", help="Copy the traffic to this version "
                                                      "(answers logged, never returned).")] = None,
           json_: JsonOpt = False) -> None:
    """Deploy (or update) the pipeline's application: new versions are infra-validated first."""
    services = services_for()
    spec = load_for(spec_file, services.settings)
    if spec.deploy is None:
        raise InputError(f"{spec_file}: the spec has no deploy section; add `deploy:` to serve it")
    champion = services.models.champion(spec.name)
    if weight:
        weights = _weights(weight)
    else:
        chosen = (version or champion or "").removeprefix("v")
        if not chosen:
            raise InputError(f"{spec.name} has no champion yet: pass --version V")
        weights = {chosen: 100}
    result = change(services, spec, weights=weights, champion=champion,
                    shadow=shadow.removeprefix("v") if shadow else None)
    services.metadata.put(result.artifact())
    _report(result, json_)


@app.command("traffic")
@handle_errors
def traffic(name: NameArg,
            weights: Annotated[list[str], typer.Argument(help="VERSION=PERCENT ..., e.g. v3=90 v4=10.")],
            json_: JsonOpt = False) -> None:
    """Change the traffic split in place (no replica restarts; a new version is infra-validated)."""
    split = _weights(weights)  # a malformed split is refused before anything is asked of the cluster
    services = services_for()
    spec = _served_spec(ServeControl(services.settings), name)
    result = change(services, spec, weights=split)
    services.metadata.put(result.artifact())
    _report(result, json_)


class VersionStatus(BaseModel):
    version: str
    weight: int
    variant: str
    loaded: bool
    error: str | None = None
    idle_until: str | None = None
    requests: int = 0


class ServeStatus(BaseModel):
    pipeline: str
    status: str
    url: str
    replicas: int
    generation: int | None
    champion: str | None
    shadow: str | None
    versions: list[VersionStatus]
    requests_by_variant: dict[str, int]
    message: str = ""


def _status(services: Any, control: ServeControl, name: str) -> ServeStatus:
    state = control.app(name)
    if state is None:
        raise InputError(f"pipeline {name!r} is not served; served: {control.served() or 'none'}")
    cfg = state.config
    loaded: dict[str, Any] = {}
    resp = ServeClient(services.settings, name, timeout=5).get("/status")
    if resp.status_code == 200:
        loaded = {v["version"]: v for v in resp.json().get("versions", [])}
    logged = read_predictions(services.settings.storage_uri, name,
                              (cfg and _service(control, name)) or "all_features")
    # Traffic only: pinned, validation and shadow answers are not requests the version served.
    live = logged.loc[logged["variant"].isin(["champion", "challenger"])] if len(logged) else logged
    per_version = live.groupby("version").size().to_dict() if len(live) else {}
    per_variant = logged.groupby("variant").size().to_dict() if len(logged) else {}
    versions = [VersionStatus(version=s.version, weight=s.weight, variant=cfg.variant(s.version),
                              loaded=bool(loaded.get(s.version, {}).get("loaded")),
                              error=loaded.get(s.version, {}).get("error"),
                              idle_until=s.idle_until.isoformat() if s.idle_until else None,
                              requests=int(per_version.get(s.version, 0)))
                for s in (cfg.versions if cfg else [])]
    return ServeStatus(pipeline=name, status=state.status, url=f"{services.settings.serve_url}/{name}",
                       replicas=state.replicas, generation=cfg.generation if cfg else None,
                       champion=cfg.champion if cfg else None, shadow=cfg.shadow if cfg else None,
                       versions=versions, requests_by_variant={k: int(v) for k, v in per_variant.items()},
                       message=state.message)


def _service(control: ServeControl, name: str) -> str:
    spec = control.deployed_spec(name)
    return (spec.model.feature_service if spec else None) or "all_features"


@app.command("status")
@handle_errors
def status(name: Annotated[str | None, typer.Argument(help="One pipeline (default: all served).")] = None,
           json_: JsonOpt = False) -> None:
    """Served pipelines: versions, weights, replicas, and requests per version and per variant
    (read from the prediction log, so every replica's requests count)."""
    services = services_for()
    control = ServeControl(services.settings)
    names = [name] if name else control.served()
    found = [_status(services, control, n) for n in names]
    if json_:
        print_json(found)
        return
    if not found:
        console.print("nothing is served (platformctl serve deploy SPEC)")
        return
    for s in found:
        console.print(f"[bold]{s.pipeline}[/] {s.status} at {s.url}  replicas {s.replicas}  "
                      f"generation {s.generation}")
        table = Table("version", "weight", "variant", "loaded", "requests", "idle until")
        for v in s.versions:
            table.add_row(f"v{v.version}", f"{v.weight}%", v.variant,
                          "yes" if v.loaded else f"no: {v.error or '?'}", str(v.requests),
                          v.idle_until or "-")
        console.print(table)
        if s.requests_by_variant:
            console.print("requests by variant: " + ", ".join(f"{k} {v}" for k, v in
                                                             sorted(s.requests_by_variant.items())))


@app.command("down")
@handle_errors
def down(name: NameArg, json_: JsonOpt = False) -> None:
    """Remove the pipeline's application (in-flight requests finish; the logs are flushed). A
    rollout in progress is aborted first: nothing is left to roll out to."""
    services = services_for()
    control = ServeControl(services.settings)
    aborted = _abort_rollout(services, name)
    removed = control.down(name)
    if json_:
        print_json({"pipeline": name, "removed": removed, "aborted_rollout": aborted})
    else:
        if aborted:
            console.print(f"{name}: rollout {aborted} aborted")
        console.print(f"{name}: {'removed' if removed else 'was not served'}")


def _abort_rollout(services: Any, name: str) -> str | None:
    from mlplatform.metadata.champion import default_actor
    from mlplatform.rollout import apply
    from mlplatform.rollout.store import RolloutStore

    state = RolloutStore(services.metadata).active(name)
    if state is None:
        return None
    # serve=False: the application is taken down next, nothing is left to route back.
    return apply.abort(services, state, by=default_actor(), serve=False,
                       reason="the pipeline's application was taken down (platformctl serve down)").id


@handle_errors
def predict(name: NameArg,
            input_: Annotated[str | None, typer.Option(
                "--input", help="A JSON file, or JSON text: {rows|columns|entities: ...}, or a list of "
                "rows.")] = None,
            entity: Annotated[list[str] | None, typer.Option("--entity", help="Entity id(s): features "
                                                             "come from the online store.")] = None,
            at: Annotated[str | None, typer.Option("--at", help="With --entity: features as of this "
                                                   "time (default: now).")] = None,
            version: Annotated[str | None, typer.Option("--version", help="Pin one live version.")] = None,
            json_: JsonOpt = False) -> None:
    """Send a prediction request to a served pipeline over HTTP."""
    if (input_ is None) == (not entity):
        raise InputError("give exactly one of --input FILE|JSON and --entity ID")
    body: dict[str, Any]
    if entity:
        body = {"entities": entity}
        if at:
            body["at"] = at
    else:
        assert input_ is not None
        text = input_
        if not input_.lstrip().startswith(("{", "[")):
            try:
                text = Path(input_).read_text()
            except OSError as exc:
                raise InputError(f"--input {input_!r}: neither JSON nor a readable file "
                                 f"({exc.strerror})") from None
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--input: not valid JSON: {exc}") from None
        body = {"rows": parsed} if isinstance(parsed, list) else parsed
    client = ServeClient(services_for().settings, name)
    answer = client.predict(body, version=version.removeprefix("v") if version else None)
    if json_:
        print_json(answer)
        return
    table = Table("row", "prediction", "score", "version", "variant", "request id")
    for i, row in enumerate(answer["predictions"]):
        score = row.get("score")
        table.add_row(str(i), str(row["prediction"]), "-" if score is None else f"{score:.4f}",
                      f"v{row['version']}", row["variant"], row["request_id"])
    console.print(table)
