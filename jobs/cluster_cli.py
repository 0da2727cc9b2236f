"""`evalctl cluster up|down|status`: a persistent local Ray head, and any cluster's view of
its nodes (alive or dead), their resources and which evalcluster work runs where."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from cluster.specs.serve import ServeSpec
from cluster.specs.settings import Settings
from jobs.entry import console
from jobs.registry_cli import cell

cluster_app = typer.Typer(no_args_is_help=True, help="A persistent local Ray head; a cluster's nodes.")
GIB = 1024**3
# Serve's address at `cluster up`: the serve spec's defaults (their one home), as a deploy uses them.
SERVE_HOST, SERVE_PORT = (ServeSpec.model_fields[f].default for f in ("host", "port"))


@cluster_app.command("up")
def cluster_up(
    num_cpus: int | None = typer.Option(None, help="CPUs to offer (default: all)."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Where the head listens: 127.0.0.1 = this machine only; 0.0.0.0 or one of its IPs = "
        "the network too (other nodes can join; the token is then all that guards it).",
    ),
    port: int = typer.Option(6379, min=1, max=65535, help="The head's GCS port (Ray's default 6379)."),
    dashboard_port: int = typer.Option(8265, min=1, max=65535, help="Dashboard and job server port."),
    warm_models: int = typer.Option(
        Settings.model_fields["warm_max_models"].default,
        min=0,
        help="Warm pool: models kept loaded between evaluations (least recently used leave first).",
    ),
    warm_gib: float = typer.Option(
        Settings.model_fields["warm_max_gib"].default,
        min=0,
        help=Settings.model_fields["warm_max_gib"].description,
    ),
    serve_port: int = typer.Option(
        SERVE_PORT, min=1, max=65535, help="Port of Serve's HTTP proxy (on 127.0.0.1), started with the head."
    ),
    serve: bool = typer.Option(
        True,
        "--serve/--no-serve",
        help="Start Serve's controller and proxy now, so a deploy finds them (on a loopback head).",
    ),
) -> None:
    """Start a persistent local Ray head (dashboard and job server on 127.0.0.1:8265) and Serve on it
    (HTTP proxy on 127.0.0.1:8000, no application until `evalctl serve deploy`).

    Evaluations on it keep their model loaded for the next one (the warm pool; see
    `evalctl cluster status`). Ray's files go under $RAY_TMPDIR (default /tmp/ray).
    """
    from cluster.errors import UserError
    from cluster.ray.runtime import head_running, head_up, is_loopback, port_free
    from cluster.ray.warmpool import ENV_MAX_GIB, ENV_MAX_MODELS

    serve = serve and is_loopback(host)  # on a network head the first deploy picks Serve's interface
    # Serve's port is checked before anything starts (nothing half-started is left behind)
    if serve and not head_running() and not port_free(serve_port, SERVE_HOST):
        raise UserError(
            f"--serve-port {serve_port}: port taken on {SERVE_HOST}; choose another, or pass --no-serve"
        )
    env = {ENV_MAX_MODELS: str(warm_models), ENV_MAX_GIB: str(warm_gib)}
    url = head_up(num_cpus, dashboard_port=dashboard_port, host=host, port=port, env=env)
    console.print(
        f"Ray head running; jobs and dashboard at {url} (token auth on, token in "
        "~/.ray/auth_token). Stop it with `evalctl cluster down`."
    )
    if serve:
        _start_serve(serve_port)


def _start_serve(port: int) -> None:
    """Serve's controller and proxy on the new head (~3 s that the first deploy then skips), on
    the host and port a deploy from this machine uses by default."""
    from cluster.ray.runtime import init_ray
    from jobs.deploy import start_serve

    init_ray()  # joins the head just started (its recorded address)
    start_serve(SERVE_HOST, port)
    console.print(f"Serve running, HTTP proxy at http://{SERVE_HOST}:{port} (a deploy uses it).")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the local Ray head of this $RAY_TMPDIR (and anything served on it); other Ray
    instances on the machine keep running."""
    from cluster.ray.runtime import head_down

    console.print("Ray head stopped." if head_down() else "No local Ray head was running.")


@cluster_app.command("status")
def cluster_status(
    address: str | None = typer.Option(
        None,
        help="The cluster: http://HEAD:8265 or HOST:6379 (default: RAY_ADDRESS, else the local head).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the view as JSON."),
) -> None:
    """The cluster's nodes (alive or dead), their resources, and which evalcluster work runs
    where: running jobs, Serve replicas, evaluation actors, sweep trials; and its warm models
    (not in --json: listing them joins the cluster as a driver)."""
    from cluster.ray.runtime import status_address
    from cluster.ray.view import describe_cluster

    target = status_address(address)
    if target is None:
        console.print("No Ray cluster found (start one with `evalctl cluster up`, or pass --address).")
        raise typer.Exit(1)
    view = describe_cluster(target)
    if as_json:
        console.print_json(json.dumps({"address": target, **view.to_json()}, default=str))
        return
    console.print(f"GCS address: {target}" if "://" not in target else f"Jobs/dashboard: {target}")
    console.print(_nodes_table(view))
    if view.jobs:
        console.print(_jobs_table(view))
    alive = sum(n.alive for n in view.nodes)
    console.print(
        f"{alive} of {len(view.nodes)} node(s) alive; {len(view.jobs)} running job(s); "
        f"{view.other_actors} other actor(s)"
    )
    if "://" not in target:  # a GCS address: the warm pool is asked through a driver
        _print_warm_pool(target)


def _nodes_table(view) -> Table:
    table = Table("node", "address", "role", "state", "CPU", "GPU", "memory", "evalcluster work", "jobs")
    for n in view.nodes:
        work = ", ".join(f"{kind} x{count}" for kind, count in sorted(n.work.items()))
        state = "alive" if n.alive else f"[bold red]DEAD[/] {cell(n.state_message or '')}"
        table.add_row(
            cell(n.node_id[:12]),
            cell(n.address),
            "head" if n.head else "worker",
            state,
            f"{n.resources.get('CPU', 0):g}",
            f"{n.resources.get('GPU', 0):g}",
            f"{n.resources.get('memory', 0) / GIB:.1f} GiB",
            cell(work or "-"),
            cell(", ".join(n.jobs) or "-"),
        )
    return table


def _jobs_table(view) -> Table:
    table = Table("job", "kind", "node", "entrypoint", title="running jobs")
    for j in view.jobs:
        node = (j["node_id"] or "?")[:12]
        table.add_row(cell(j["id"]), cell(j["kind"]), cell(node), cell((j["entrypoint"] or "")[:80]))
    return table


def _print_warm_pool(address: str) -> None:
    from cluster.ray.runtime import init_ray
    from cluster.ray.warmpool import describe_pools

    init_ray(address)
    pools = describe_pools()
    if not any(pool["models"] for pool in pools):
        console.print("warm models: none (an evaluation on this head leaves its model loaded for the next)")
    for pool in pools:
        title = (
            f"warm models (at most {pool['max_models']}, {pool['max_bytes'] / GIB:.1f} GiB; "
            "`evalctl evaluate --keep-warm-s` sets how long)"
        )
        table = Table(
            "model", "kind", "precision", "device", "actors", "memory", "state", "unloads in", title=title
        )
        for m in pool["models"]:
            state = "in use" if m["in_use"] else f"idle {m['idle_s']:.0f}s"
            unload = "" if m["unload_in_s"] is None else f"{m['unload_in_s']:.0f}s"
            mem = f"{m['memory_bytes'] / 2**20:,.0f} MiB"
            kind = m.get("kind", "text-classifier")  # pools of an older checkout do not say
            row = (m["precision"], m["device"], str(m["actors"]), mem, state, unload)
            table.add_row(cell(m["model"]), kind, *row)
        console.print(table)
