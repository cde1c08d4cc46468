"""`platformctl validate`, `platformctl schema infer`: data
validation by hand, with the same code the pipeline's `validate` step runs."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mlplatform import storage
from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, settings_for
from mlplatform.errors import InputError
from mlplatform.services import Services
from mlplatform.spec import PipelineSpec, SchemaSpec
from mlplatform.spec_code import load_for
from mlplatform.spec_loader import validate_document

if TYPE_CHECKING:
    from mlplatform.metadata.store import MetadataStore

schema_app = typer.Typer(help="Data schemas.", no_args_is_help=True)


def _read_table(path: str, fmt: str, field: str):  # noqa: ANN202
    import pyarrow.dataset as pads

    from mlplatform.data.ingest import batch_files

    fs, paths = batch_files(path, fmt, field)
    try:
        return pads.dataset(paths, format=fmt, filesystem=fs).to_table()
    except Exception as exc:  # pyarrow: files whose schemas do not unify, bad values
        raise InputError(f"{field} {path}: cannot be read as one {fmt} table: {exc}") from None


@schema_app.command("infer")
@handle_errors
def infer(data: Annotated[str, typer.Argument(help="Reference batch: a file or folder (or URI).")],
          out: Annotated[Path, typer.Option(help="YAML file to write.")] = Path("schema.yaml"),
          format: Annotated[str, typer.Option(help="parquet or csv.")] = "parquet",
          entity: Annotated[str | None, typer.Option(help="Entity key column.")] = None,
          timestamp: Annotated[str | None, typer.Option(help="Event timestamp column.")] = None,
          label: Annotated[str | None, typer.Option(help="Label column (absent at serving).")] = None,
          force: Annotated[bool, typer.Option(help="Overwrite OUT.")] = False,
          json_: JsonOpt = False) -> None:
    """Infer a schema from a reference batch and write it as commented YAML to review."""
    from mlplatform.data.schema import infer_schema, schema_yaml

    if format not in ("parquet", "csv"):
        raise InputError(f"--format {format!r}: expected parquet or csv")
    if out.exists() and not force:
        raise InputError(f"{out} exists; pass --force to overwrite it")
    table = _read_table(data, format, "DATA")
    for flag, name in (("--entity", entity), ("--timestamp", timestamp), ("--label", label)):
        if name and name not in table.column_names:
            raise InputError(f"{flag} {name!r}: no such column (columns: {', '.join(table.column_names)})")
    schema, notes = infer_schema(table, entity=entity, timestamp=timestamp, label=label)
    try:
        out.write_text(schema_yaml(schema, notes, source=data))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write: {exc.strerror}") from None
    if json_:
        print_json({"written": str(out), "schema": schema.model_dump(mode="json")})
    else:
        soft = [c.name for c in schema.columns if c.soft]
        console.print(f"wrote {out}: {len(schema.columns)} columns from {table.num_rows} rows; review it. "
                      f"Soft (reported as a shift, not enforced) for {len(soft)} column(s): "
                      f"{', '.join(soft) or 'none'}; delete a column's `soft` line to enforce it.",
                      highlight=False)


def _schema_for(path: Path | None, pipeline: PipelineSpec, store: MetadataStore, reference: str | None,
                batch: str) -> tuple[SchemaSpec, str]:
    """The schema to check a batch against, and where it came from: --schema, else the spec's,
    else the pipeline's recorded (inferred) one, else one inferred from --reference.

    Never one inferred from the batch itself: that schema would describe whatever the batch
    holds (renamed columns, a changed type, invalid rows) and so pass it."""
    from mlplatform.data.reference import recorded_schema
    from mlplatform.data.schema import infer_schema

    if path is not None:
        if not path.is_file():
            raise InputError(f"--schema {path}: file not found")
        loaded = validate_document(path.read_text(), str(path), SchemaSpec, dict(os.environ))
        return loaded, f"--schema {path}"  # type: ignore[return-value]
    if isinstance(pipeline.schema_, SchemaSpec):
        return pipeline.schema_, "the spec's schema"
    recorded = recorded_schema(store, pipeline.name)
    if recorded is not None:
        return recorded, f"the schema pipeline {pipeline.name!r} inferred and recorded"
    if reference is None:
        raise InputError(
            f"--batch {batch}: nothing to validate it against: the spec has no schema, pipeline "
            f"{pipeline.name!r} has recorded none, and no --reference was given (a schema inferred "
            "from the batch itself would pass whatever it holds)",
            hint="infer a schema from a known-good batch (`platformctl schema infer GOOD --out "
                 "schema.yaml`, review it, pass --schema schema.yaml or put it in the spec), or pass "
                 "--reference GOOD")
    src = pipeline.source
    inferred, _ = infer_schema(_read_table(reference, src.format, "--reference"),
                               entity=src.entity_column, timestamp=src.timestamp_column,
                               label=src.label_column)
    return inferred, f"inferred from --reference {reference} (ranges and domains soft)"


@handle_errors
def validate(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    batch: Annotated[str, typer.Option(help="The batch to check: a file or folder (or URI).")],
    reference: Annotated[str | None, typer.Option(help="Reference batch for drift (default: "
                         "the pipeline's last validated batch).")] = None,
    schema: Annotated[Path | None, typer.Option(help="Schema YAML (default: the spec's, else "
                      "the pipeline's inferred one, else one inferred from --reference).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for validation.json/.html.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Validate one batch by hand: a table per column, JSON and an HTML report.
    Exits 1 when the pipeline would reject the batch, 2 when there is nothing to check it
    against (no schema and no reference: a batch is never checked against itself)."""
    from mlplatform.data.ingest import batch_files
    from mlplatform.data.ingest_step import estimated_rows
    from mlplatform.data.reference import latest_stats
    from mlplatform.data.report import column_rows, shift_line, write_reports
    from mlplatform.data.stats import DatasetStats
    from mlplatform.data.validation import validate_dataset, validate_parquet
    from mlplatform.data.verdict import verdict
    from mlplatform.runtime.connect import connect
    from mlplatform.runtime.placement import place

    settings = settings_for()
    pipeline = load_for(spec, settings)
    fmt, src = pipeline.source.format, pipeline.source
    store = Services(settings).metadata
    fs, paths = batch_files(batch, fmt, "--batch")
    the_schema, origin = _schema_for(schema, pipeline, store, reference, batch)
    if not json_:
        console.print(f"schema: {origin}", highlight=False)
    # Parquet batches below the validate step's threshold are checked in this process, as the
    # step would check them (mlplatform.runtime.placement): no Ray to start or connect to.
    # A file whose footer does not read counts as none: it fails at once with the reader's
    # error, naming the batch, where the Ray path would first start a Ray to say the same.
    local = fmt == "parquet" and place(pipeline.execution, "validate",
                                       estimated_rows(fs, paths, "parquet", skip_unreadable=True),
                                       setting=settings.placement).local
    if not local:
        connect(settings, allow_private=True, announce=None if json_ else console.print)
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
    exclude = tuple(c for c in (src.entity_column, src.timestamp_column, src.label_column) if c)

    def check(fs_, paths_, **kwargs):  # noqa: ANN001, ANN003, ANN202
        if fmt == "parquet":
            return validate_parquet(paths_, fs_, the_schema, local=local, **kwargs)
        return validate_dataset(ray.data.read_csv(paths_, filesystem=fs_), the_schema, **kwargs)

    ref_stats: DatasetStats | None = None
    if reference is not None:
        rfs, rpaths = batch_files(reference, fmt, "--reference")
        try:
            ref_stats = check(rfs, rpaths).stats
        except Exception as exc:  # Ray wraps reader errors: name the batch
            raise InputError(f"--reference {reference}: cannot be validated: "
                             f"{str(exc).splitlines()[-1]}") from None
    elif (found := latest_stats(store, pipeline.name)) is not None:
        ref_stats = found[0]
    try:
        result = check(fs, paths, reference=ref_stats, drift_spec=pipeline.validation.drift,
                       exclude_from_drift=exclude, row_id_column=src.entity_column)
    except InputError:
        raise
    except Exception as exc:  # Ray wraps reader errors: name the batch
        raise InputError(f"--batch {batch}: cannot be validated: {str(exc).splitlines()[-1]}") from None
    folder = out or settings.home / "reports" / f"manual-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder}: is a file, not a folder")
    rfs, rpath = storage.resolve(str(folder))
    write_reports(result, the_schema, ref_stats, rfs, rpath, title=f"{pipeline.name}: {batch}")
    reasons = verdict(result, pipeline)
    if json_:
        from mlplatform.data.report import report_json

        print_json({**report_json(result, the_schema), "passed": not reasons, "reasons": reasons,
                    "schema_source": origin, "html": f"{rpath}/validation.html"})
    else:
        table = Table("column", "type", "nulls", "checks", "failures", "drift", "verdict")
        colour = {"ok": "green", "drift": "yellow", "shift": "yellow", "quarantined rows": "yellow",
                  "FAIL": "red"}
        for r in column_rows(result, the_schema):
            drift = "" if r.drift_statistic is None else f"{r.drift_method} {r.drift_statistic:.3g}"
            table.add_row(r.column, r.type, "" if r.null_fraction is None else f"{r.null_fraction:.1%}",
                          ", ".join(r.checks), "; ".join(r.failures), drift,
                          f"[{colour.get(r.verdict, 'white')}]{r.verdict}[/]")
        console.print(table)
        console.print(f"{result.rows_in} rows: {result.rows_valid} valid, {result.rows_quarantined} "
                      f"would be quarantined ({result.invalid_fraction:.1%})")
        if (line := shift_line(result)) is not None:
            console.print(f"[yellow]{line}[/]", highlight=False)
        console.print(f"report: {rpath}/validation.html (and validation.json)")
        for reason in reasons:
            console.print(f"[red]rejected:[/] {reason}", highlight=False)
        if not reasons:
            console.print("[green]the batch passes[/]")
    if reasons:
        raise typer.Exit(1)

