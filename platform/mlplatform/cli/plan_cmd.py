"""`platformctl plan SPEC`: what applying a spec and its code would change (mlplatform.spec_plan)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mlplatform.cli.output import AddressOpt, JsonOpt, console, handle_errors, print_json, settings_for
from mlplatform.spec_code import check_code
from mlplatform.spec_loader import load_spec

CHANGES_EXIT = 3  # as `terraform plan -detailed-exitcode`: CI tells "changes" from "failed"


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


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
    loaded = load_spec(spec, env={**os.environ, "PLATFORM_HOME": str(settings.home)})
    check_code(loaded, settings, spec.parent)  # a transformation that does not import: exit 2
    result = make_plan(loaded, MetadataStore(settings.metadata_url))
    if json_:
        print_json({**result.model_dump(mode="json"), "changed": result.changed})
    elif not result.changed:
        console.print(f"{result.pipeline}: no changes against {result.baseline}")
    else:
        console.print(f"{result.pipeline}: {len(result.changes)} change(s) against "
                      f"{result.baseline or 'nothing recorded'}", highlight=False)
        table = Table("area", "where", "change", "before", "after", "what")
        for c in result.changes:
            table.add_row(c.area, c.path, c.kind, _shown(c.before), _shown(c.after), c.detail)
        console.print(table)
        for e in result.effects:
            console.print(f"  -> {e.kind}: {e.detail}", highlight=False)
    if result.changed:
        raise typer.Exit(CHANGES_EXIT)
