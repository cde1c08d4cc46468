"""`platformctl plan SPEC`: what applying a spec and its code would change (mlplatform.spec_plan);
`platformctl apply SPEC`: make it so (mlplatform.spec_apply)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mlplatform.cli.output import AddressOpt, JsonOpt, console, handle_errors, print_json, settings_for
from mlplatform.errors import InputError
from mlplatform.run_ids import new_run_id
from mlplatform.spec_code import load_checked
from mlplatform.spec_plan import SpecPlan

CHANGES_EXIT = 3  # as `terraform plan -detailed-exitcode`: CI tells "changes" from "failed"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _print_plan(result: SpecPlan) -> None:
    if not result.changed:
        console.print(f"{result.pipeline}: no changes against {result.baseline}")
        return
    console.print(f"{result.pipeline}: {len(result.changes)} change(s) against "
                  f"{result.baseline or 'nothing recorded'}", highlight=False)
    table = Table("area", "where", "change", "before", "after", "what")
    for c in result.changes:
        table.add_row(c.area, c.path, c.kind, _shown(c.before), _shown(c.after), c.detail)
    console.print(table)
    for e in result.effects:
        console.print(f"  -> {e.kind}: {e.detail}", highlight=False)


@handle_errors
def plan(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """What applying SPEC and the code it names would change against the pipeline's last run,
    and what that causes (a backfill, a retraining, a new rollout). Exit 0: nothing to change;
    3: changes; 2: an invalid spec or code; 1: the stores cannot be reached."""
    from mlplatform.metadata.store import MetadataStore
    from mlplatform.spec_plan import plan as make_plan

    settings = settings_for(address)
    loaded = load_checked(spec, settings)  # a transformation that does not import: exit 2
    result = make_plan(loaded, MetadataStore(settings.metadata_url))
    if json_:
        print_json({**result.model_dump(mode="json"), "changed": result.changed})
    else:
        _print_plan(result)
    if result.changed:
        raise typer.Exit(CHANGES_EXIT)


@handle_errors
def apply(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for a submitted run to end.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream a submitted run's logs.")] = False,
    working_dir: Annotated[Path | None, typer.Option(help="Uploaded with a submitted run "
                           "(default: the current folder).")] = None,
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Apply SPEC and its code: nothing when `plan` shows no change; a retraining run (cause
    `code_change`, with the git commit) when a feature view or the model changed; otherwise
    record the spec as applied, for the next run. Exit 0, or 1 when a run waited for failed."""
    from mlplatform.cli.jobs_cmd import print_outcome
    from mlplatform.metadata.store import MetadataStore
    from mlplatform.runtime.jobs import JobsClient, submit_pipeline
    from mlplatform.spec_apply import CAUSE, cause_detail, code_version, decide, record_applied
    from mlplatform.spec_plan import plan as make_plan

    if wait and follow:
        raise InputError("--wait and --follow: choose one")
    settings = settings_for(address)
    loaded = load_checked(spec, settings)
    store = MetadataStore(settings.metadata_url)
    result = make_plan(loaded, store)
    action = decide(result, store)
    code = code_version(spec.parent)
    out: dict[str, Any] = {"pipeline": loaded.name, "action": action.action, "detail": action.detail,
                           "code_version": code.model_dump(), "plan": result.model_dump(mode="json"),
                           "run_id": None, "job_id": None, "job": None}
    if not json_:
        _print_plan(result)
    if action.action == "record":
        out["run_id"] = record_applied(store, loaded, result, code)
    elif action.action in ("retrain", "full_run"):
        run_id = new_run_id(loaded.name)
        sub = submit_pipeline(settings, spec, run_id=run_id, pipeline=loaded.name, working_dir=working_dir,
                              cause=CAUSE, cause_detail=cause_detail(result, code),
                              retrain=action.action == "retrain", refeaturize=action.refeaturize)
        out.update(run_id=sub.run_id, job_id=sub.job_id)
        if not json_:
            console.print(f"submitted job [bold]{sub.job_id}[/] (run {sub.run_id}): {action.detail}",
                          highlight=False)
        if wait or follow:
            client = JobsClient(settings)
            info = (client.follow(sub.job_id, write=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
                    if follow and not json_ else client.wait(sub.job_id))
            out["job"] = info.model_dump(mode="json")
            if not json_:
                print_outcome(info)
            if info.status != "SUCCEEDED":
                if json_:
                    print_json(out)
                raise typer.Exit(1)
    if json_:
        print_json(out)
    elif action.action in ("none", "record"):
        recorded = f" (as run {out['run_id']})" if out["run_id"] else ""
        console.print(f"{loaded.name}: {action.detail}{recorded}", highlight=False)
