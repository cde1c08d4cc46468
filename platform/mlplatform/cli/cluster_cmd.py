"""`platformctl cluster up | status | down`."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.cli.output import (
    AddressOpt,
    JsonOpt,
    console,
    handle_errors,
    print_json,
    settings_for,
)
from mlplatform.errors import PlatformError
from mlplatform.runtime import local as cluster
from mlplatform.runtime.status import status as cluster_status
from mlplatform.settings import Settings

app = typer.Typer(help="Start, inspect and stop the Ray cluster.", no_args_is_help=True)


@app.command("up")
@handle_errors
def up(
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for Ray (default: all).")] = None,
    port: Annotated[int, typer.Option(help="Ray GCS port.", min=1, max=65535)] = 6379,
    dashboard_port: Annotated[int, typer.Option(help="Dashboard / Jobs API port.", min=1,
                                                max=65535)] = 8265,
    object_store_mb: Annotated[
        int | None, typer.Option(help="Object store size in MiB (default: Ray's).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Start a local Ray head (token auth, dashboard on 127.0.0.1); idempotent."""
    settings = settings_for()
    with console.status("starting Ray...", spinner="dots") if not json_ else nullcontext():
        result = cluster.up(settings, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port,
                            object_store_mb=object_store_mb)
    if json_:
        print_json(result)
        return
    console.print(result.message)
    console.print(f"  dashboard: {result.state.dashboard_url}\n  GCS: {result.state.gcs_address}"
                  f"\n  CPUs: {result.state.num_cpus}\n  token: {settings.auth_token_path}")


@app.command("status")
@handle_errors
def status(address: AddressOpt = None, json_: JsonOpt = False) -> None:
    """Nodes, CPUs and memory, dashboard URL, running jobs and Serve applications; warns about
    any of the local cluster's sockets that listen beyond 127.0.0.1."""
    st = cluster_status(settings_for(address))
    if json_:
        print_json(st)
        return
    console.print(f"Ray {st.ray_version} at {st.address}"
                  f"{' (local, started by platformctl)' if st.local else ''}")
    table = Table("node", "ip", "state", "head", "CPUs", "memory GiB", "object store GiB")
    for n in st.nodes:
        table.add_row(n.node_id[:12], n.ip, n.state, "yes" if n.is_head else "", f"{n.cpus:g}",
                      f"{n.memory_gb:.1f}", f"{n.object_store_gb:.1f}")
    console.print(table)
    console.print(f"running jobs: {len(st.running_jobs)}"
                  + "".join(f"\n  {j['job_id']} {j['status']}" for j in st.running_jobs))
    console.print(f"serve applications: {len(st.serve_applications)}"
                  + "".join(f"\n  {k}: {v}" for k, v in st.serve_applications.items()))
    if st.exposed is None:
        console.print("[dim]listening sockets: not inspected (the cluster is not this machine's "
                      "`cluster up`)[/]")
    for e in st.exposed or []:
        console.print(f"[yellow]warning:[/] {e.process} (pid {e.pid}) listens on {e.address}:{e.port}, "
                      f"reachable from other machines: {e.fix}", highlight=False, soft_wrap=True)


def _drain_serve(settings: Settings) -> list[str]:
    """Take the Serve applications down gracefully before the processes are stopped: in-flight
    requests finish and each replica flushes its prediction log (a SIGTERM would lose up to a
    second of predictions)."""
    from mlplatform.serving.client import ServeControl

    local = settings.model_copy(update={"ray_address": cluster.read_state(settings).dashboard_url,
                                        "ray_auth_mode": "token"})
    control = ServeControl(local)
    try:
        apps = control.served()
        for name in apps:
            control.down(name, wait_s=60)
        return apps
    except PlatformError:
        return []  # the cluster is half gone already: stopping it is all that is left


@app.command("down")
@handle_errors
def down(json_: JsonOpt = False) -> None:
    """Stop the local cluster that `cluster up` started (and nothing else)."""
    settings = settings_for()
    state = cluster.read_state(settings)
    drained = _drain_serve(settings) if state is not None else []
    stopped = cluster.down(settings)
    if json_:
        print_json({"stopped_processes": stopped, "was_running": state is not None,
                    "serve_applications_drained": drained})
    elif state is None:
        console.print(f"no local cluster recorded under {settings.home}: nothing to stop")
    else:
        if drained:
            console.print(f"took down the served applications {drained} (prediction logs flushed)")
        console.print(f"stopped the local cluster ({stopped} processes)")
