"""`platformctl models list | show | compare | promote | rollback | history | reproduce`: the
registry by hand. Every load behind these commands checks the model's sha256 first. Who is
champion is the metadata store's champion record (changed by compare-and-set, the same as
the pipeline's `promote` step); MLflow's `champion` alias mirrors it and is repaired when a
command finds it disagreeing."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.table import Table

from mlplatform.artifacts import ModelVersion
from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, services_for
from mlplatform.errors import InputError
from mlplatform.metadata.champion import ChampionEvent
from mlplatform.metadata.store import LineageNode, MetadataStore
from mlplatform.models.registry import CHALLENGER, CHAMPION, ModelRegistry, ModelVersionInfo

app = typer.Typer(help="Registered models: versions, aliases, lineage, reproduction.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Registered model name (the pipeline's name, or "
                                        "<pipeline>-<segment>).")]
VersionArg = Annotated[str, typer.Argument(help="Model version number.")]


def _registry() -> ModelRegistry:
    return services_for().models


def _metric(v: ModelVersionInfo, key: str) -> str:
    value = v.metrics.get(key)
    return "-" if value is None else f"{value:.4f}"


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest: str | None
    champion: str | None
    challenger: str | None


@app.command("list")
@handle_errors
def list_(name: Annotated[str | None, typer.Argument(help="List this model's versions.")] = None,
          json_: JsonOpt = False) -> None:
    """Registered models, or one model's versions with their gate decisions and metrics."""
    reg = _registry()
    if name is None:
        models = []
        for n in reg.names():
            versions = reg.versions(n)
            models.append(ModelSummary(name=n, versions=len(versions),
                                       latest=versions[-1].version if versions else None,
                                       champion=reg.champion(n), challenger=reg.alias(n, CHALLENGER)))
        if json_:
            print_json(models)
            return
        table = Table("model", "versions", "latest", "champion", "challenger")
        for m in models:
            table.add_row(m.name, str(m.versions), m.latest or "-", m.champion or "-", m.challenger or "-")
        console.print(table)
        return
    if name not in reg.names():
        raise InputError(f"model {name!r} is not registered; registered models: {reg.names() or 'none'}")
    reg.champion(name)  # the record's champion; repairs the alias the versions' list shows
    versions = reg.versions(name)
    if json_:
        print_json(versions)
        return
    table = Table("version", "aliases", "created", "gate", "holdout roc_auc / rmse", "run")
    for v in versions:
        key = "holdout_roc_auc" if "holdout_roc_auc" in v.metrics else "holdout_rmse"
        table.add_row(v.version, ", ".join(v.aliases), v.created_at[:19], v.tags.get("gate.decision", "-"),
                      _metric(v, key), v.run_id or "-")
    console.print(table)


class VersionDetail(BaseModel):
    version: ModelVersionInfo
    champion: str | None = None  # the model's champion now (the record's)
    upstream: list[LineageNode]
    downstream: list[LineageNode]


@app.command("show")
@handle_errors
def show(name: NameArg, version: VersionArg, json_: JsonOpt = False) -> None:
    """One version: metrics, parameters, tags, the gate's reason and its lineage."""
    reg = _registry()
    champion = reg.champion(name)  # the record's; repairs the alias if it disagrees, before it is read
    info = reg.version(name, version)
    store: MetadataStore = reg.store
    art = store.find(ModelVersion, f"models:/{name}/{version}")
    # Walking up through another model version (the champion this one was compared with)
    # would list that version's whole history as if this one were made from it.
    up = store.lineage(art.id or 0, "upstream", stop_at=frozenset({ModelVersion.kind})) if art else []
    down = store.lineage(art.id or 0, "downstream", stop_at=frozenset({ModelVersion.kind})) if art else []
    if json_:
        print_json(VersionDetail(version=info, champion=champion, upstream=up, downstream=down))
        return
    console.print(f"[bold]{name} v{version}[/]  aliases: {', '.join(info.aliases) or '-'}  "
                  f"created {info.created_at[:19]}  MLflow run {info.run_id}", highlight=False)
    console.print(f"champion of {name}: {f'v{champion}' if champion else '(none)'}", highlight=False)
    console.print(f"gate: {info.tags.get('gate.reason') or info.tags.get('gate.decision', '-')}",
                  highlight=False)
    console.print(f"sha256: {info.sha256 or '(not recorded)'}")
    table = Table("metric", "value")
    for k, v in sorted(info.metrics.items()):
        table.add_row(k, f"{v:.6g}")
    console.print(table)
    params = Table("parameter", "value")
    for k, v in sorted(info.params.items()):
        params.add_row(k, v)
    console.print(params)
    if up:
        lineage = Table("depth", "kind", "artifact", "made by")
        for n in up:
            lineage.add_row(str(n.depth), n.artifact.kind, n.artifact.uri, n.via)
        console.print("[bold]made from[/]")
        console.print(lineage)


class Comparison(BaseModel):
    name: str
    a: str
    b: str
    metrics: dict[str, tuple[float | None, float | None, float | None]]
    params: dict[str, tuple[str | None, str | None]]


@app.command("compare")
@handle_errors
def compare(name: NameArg, a: VersionArg, b: Annotated[str, typer.Argument(help="The other version.")],
            json_: JsonOpt = False) -> None:
    """Two versions side by side: every metric (with B - A) and every parameter that differs."""
    reg = _registry()
    va, vb = reg.version(name, a), reg.version(name, b)
    metrics: dict[str, Any] = {}
    for k in sorted(set(va.metrics) | set(vb.metrics)):
        x, y = va.metrics.get(k), vb.metrics.get(k)
        metrics[k] = (x, y, (y - x) if x is not None and y is not None else None)
    params = {k: (va.params.get(k), vb.params.get(k)) for k in sorted(set(va.params) | set(vb.params))
              if va.params.get(k) != vb.params.get(k)}
    result = Comparison(name=name, a=a, b=b, metrics=metrics, params=params)
    if json_:
        print_json(result)
        return
    table = Table("metric", f"v{a}", f"v{b}", f"v{b} - v{a}")
    for k, (x, y, d) in metrics.items():
        table.add_row(k, "-" if x is None else f"{x:.4f}", "-" if y is None else f"{y:.4f}",
                      "-" if d is None else f"{d:+.4f}")
    console.print(table)
    if params:
        ptable = Table("parameter", f"v{a}", f"v{b}")
        for k, (x, y) in params.items():
            ptable.add_row(k, x or "-", y or "-")
        console.print(ptable)
    else:
        console.print("same parameters")


class AliasChange(BaseModel):
    name: str
    alias: str
    previous: str | None
    version: str
    change_id: int | None = None  # the champion history row (champion changes only)


@app.command("promote")
@handle_errors
def promote(name: NameArg, version: VersionArg,
            alias: Annotated[str, typer.Option(help="Alias to move (champion or challenger).")] = CHAMPION,
            json_: JsonOpt = False) -> None:
    """Make a version champion (or challenger) by hand, after checking its artifact's sha256.

    The champion moves by compare-and-set against the champion read just before: if a
    pipeline run promotes meanwhile, this fails (exit 1) and changes nothing."""
    if alias not in (CHAMPION, CHALLENGER):
        raise InputError(f"--alias {alias!r}: choose {CHAMPION!r} or {CHALLENGER!r}")
    reg = _registry()
    if alias == CHAMPION:
        event, previous = reg.promote(name, version)
        change = AliasChange(name=name, alias=alias, previous=previous, version=event.to_version,
                             change_id=event.id)
    else:
        reg.version(name, version)
        reg.load(name, version)  # refuses a tampered or unrecorded artifact
        previous = reg.alias(name, alias)
        reg.set_challenger(name, version)
        change = AliasChange(name=name, alias=alias, previous=previous, version=version)
    if json_:
        print_json(change)
    elif change.previous == change.version:
        console.print(f"{name}: v{version} already is {alias}")
    else:
        console.print(f"{name}: {alias} {f'v{previous}' if previous else '(none)'} -> v{version}")


@app.command("rollback")
@handle_errors
def rollback(name: NameArg, json_: JsonOpt = False) -> None:
    """Give the champion back to the version that held it before the current one (by
    compare-and-set; recorded in the champion history). Twice returns to where it was."""
    services = services_for()
    event = services.models.rollback(name)
    change = AliasChange(name=name, alias=CHAMPION, previous=event.from_version, version=event.to_version,
                         change_id=event.id)
    served = _serve_rollback(services, name, event.to_version)
    if json_:
        print_json({**change.model_dump(mode="json"), "served": served})
    else:
        console.print(f"{name}: champion v{event.from_version} -> v{event.to_version} (rolled back)")
        if served:
            console.print(f"{name}: {served}")


def _serve_rollback(services: Any, name: str, version: str) -> str | None:
    """A served pipeline follows its champion at once: the previous champion is still deployed
    (idle, weight 0), so this is a weight change in place, not a model load."""
    from mlplatform.errors import ClusterUnreachable
    from mlplatform.serving.client import ServeControl
    from mlplatform.serving.deployer import change

    if services.settings.ray_address is None:
        return None
    try:
        spec = ServeControl(services.settings).deployed_spec(name)
    except ClusterUnreachable:
        return None
    if spec is None:
        return None
    result = change(services, spec, weights={version: 100}, champion=version)
    services.metadata.put(result.artifact())
    return result.message


@app.command("history")
@handle_errors
def history(name: NameArg, json_: JsonOpt = False) -> None:
    """Every change of a model's champion, oldest first: who, when, why, from which run."""
    reg = _registry()
    if name not in reg.names():
        raise InputError(f"model {name!r} is not registered; registered models: {reg.names() or 'none'}")
    reg.champion(name)  # adopts an alias from before the record
    changes: list[ChampionEvent] = reg.champion_history(name)
    if json_:
        print_json(changes)
        return
    table = Table("change", "when", "from", "to", "action", "by", "run", "reason")
    for c in changes:
        table.add_row(str(c.id), c.created_at.isoformat(timespec="seconds"),
                      f"v{c.from_version}" if c.from_version else "-", f"v{c.to_version}", c.action,
                      c.actor, c.run_id or "-", c.reason)
    console.print(table)


@app.command("reproduce")
@handle_errors
def reproduce(name: NameArg, version: VersionArg,
              tolerance: Annotated[float, typer.Option(help="Largest metric difference accepted "
                                                       "(exit 1 above it).")] = 0.0,
              json_: JsonOpt = False) -> None:
    """Retrain a version from its recorded training set, parameters and seed; compare metrics."""
    from mlplatform.training.reproduce import reproduce as run

    with console.status(f"retraining {name} v{version}...") if not json_ else _null():
        result = run(services_for(), name, version)
    if json_:
        print_json(result)
    else:
        table = Table("holdout metric", "recorded", "reproduced", "difference")
        for d in result.metrics:
            table.add_row(d.metric, "-" if d.recorded is None else f"{d.recorded:.6f}",
                          "-" if d.reproduced is None else f"{d.reproduced:.6f}",
                          "-" if d.diff is None else f"{d.diff:+.2e}")
        console.print(f"{name} v{version}: retrained from {result.training_set} with seed {result.seed}",
                      highlight=False)
        console.print(table)
        console.print("identical metrics" if result.identical else
                      f"largest difference {result.max_abs_diff:.3g}")
    if result.max_abs_diff > tolerance:
        raise typer.Exit(1)


def _null() -> Any:
    from contextlib import nullcontext

    return nullcontext()
