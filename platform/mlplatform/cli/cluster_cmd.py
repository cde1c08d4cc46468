"""`platformctl cluster up | status | down`."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import typer
from pydantic import BaseModel, Field
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
    metrics: Annotated[bool, typer.Option("--metrics", help="Also start a local Prometheus scraping "
                                          "the cluster (needs Debian's `prometheus`).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Start a local Ray head (token auth, dashboard on 127.0.0.1); idempotent."""
    settings = settings_for()
    with console.status("starting Ray...", spinner="dots") if not json_ else nullcontext():
        result = cluster.up(settings, num_cpus=num_cpus, port=port, dashboard_port=dashboard_port,
                            object_store_mb=object_store_mb, metrics=metrics)
    if json_:
        print_json(result)
        return
    console.print(result.message)
    console.print(f"  dashboard: {result.state.dashboard_url}  (`platformctl cluster dashboard` "
                  f"prints its token)\n  GCS: {result.state.gcs_address}"
                  f"\n  CPUs: {result.state.num_cpus}\n  token: {settings.auth_token_path}")
    if result.metrics is not None and result.metrics.url:
        console.print(f"  Prometheus: {result.metrics.url} (scraping every Ray node; Grafana: "
                      "import cluster/grafana/mlplatform-dashboard.json)")
    elif result.metrics is not None:
        console.print(f"[yellow]warning:[/] no Prometheus: {result.metrics.error}", highlight=False)


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


class DashboardAccess(BaseModel):
    """What a person needs to open the Ray dashboard of a token-protected cluster."""

    url: str
    auth_mode: str
    token: str | None = Field(None, description="The token to paste into the dashboard's prompt.")
    token_source: str | None = Field(None, description="Where the token was read from.")
    get_token_command: str | None = Field(
        None, description="`ray get-auth-token` only looks under ~/.ray: this command points it "
                          "at the token the platform keeps.")
    opened: bool = False


def dashboard_access(settings: Settings) -> DashboardAccess:
    """The dashboard URL and the token for it: Ray's dashboard asks for the token and suggests
    `ray get-auth-token`, which reads ~/.ray/auth_token, not the file `cluster up` keeps under the
    platform's home, so a person following Ray's hint finds nothing."""
    import os

    state = cluster.read_state(settings)
    url = (settings.ray_address or (state.dashboard_url if state else None))
    if url is None:
        raise PlatformError("no Ray cluster configured and no local cluster recorded under "
                            f"{settings.home}",
                            hint="`platformctl cluster up` starts one; --address picks another")
    url = url.rstrip("/")
    if "://" not in url:
        raise PlatformError(f"--address {url}: the dashboard needs its HTTP address "
                            "(http://host:8265), not the GCS address")
    if settings.ray_auth_mode != "token":
        return DashboardAccess(url=url, auth_mode=settings.ray_auth_mode)
    token, source = os.environ.get("RAY_AUTH_TOKEN"), "RAY_AUTH_TOKEN"
    if not token and settings.auth_token_path.exists():
        token, source = settings.auth_token_path.read_text().strip(), str(settings.auth_token_path)
    if not token:
        raise PlatformError(f"token authentication is on but no token was found (RAY_AUTH_TOKEN is "
                            f"unset and {settings.auth_token_path} does not exist)",
                            hint="set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's token")
    command = ("echo $RAY_AUTH_TOKEN" if source == "RAY_AUTH_TOKEN"
               else f"RAY_AUTH_TOKEN_PATH={settings.auth_token_path} ray get-auth-token")
    return DashboardAccess(url=url, auth_mode="token", token=token, token_source=source,
                           get_token_command=command)


def _has_display() -> bool:
    import os
    import sys

    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY")
                                                         or os.environ.get("WAYLAND_DISPLAY"))


@app.command("dashboard")
@handle_errors
def dashboard(
    address: AddressOpt = None,
    open_: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser where this "
                                        "machine has a display.")] = True,
    json_: JsonOpt = False,
) -> None:
    """The Ray dashboard's URL and the token to paste into its prompt (Ray's own hint, `ray
    get-auth-token`, does not find the token `cluster up` keeps under the platform's home)."""
    import webbrowser

    access = dashboard_access(settings_for(address))
    if open_ and _has_display():
        access.opened = webbrowser.open(access.url)
    if json_:
        print_json(access)
        return
    console.print(f"Ray dashboard: {access.url}" + (" (opened in your browser)" if access.opened else ""))
    if access.token is None:
        console.print("token authentication is off: no token needed")
        return
    console.print("it asks for the cluster's token; paste this one:")
    console.print(access.token, highlight=False, soft_wrap=True)
    console.print(f"[dim](from {access.token_source}; again later: {access.get_token_command})[/]",
                  highlight=False)
    console.print("[dim]Serve applications are named after their pipelines, jobs after their runs "
                  "(<run id>-NNNNN, metadata: pipeline, run_id), actors mlplatform-* after what "
                  "they do.[/]", highlight=False)
