"""`evalctl cluster up|down|status`: a persistent local Ray head, and any cluster's view of
its nodes (alive or dead), their resources and which evalcluster work runs where."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from jobs.entry import console
from jobs.registry_cli import cell

cluster_app = typer.Typer(no_args_is_help=True, help="A persistent local Ray head; a cluster's nodes.")
GIB = 1024**3


@cluster_app.command("up")
def cluster_up(
    num_cpus: int | None = typer.Option(None, help="CPUs to offer (default: all)."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Where the head listens: 127.0.0.1 = this machine only; 0.0.0.0 or one of its IPs = "
        "the network too (other nodes can join; the token is then all that guards it).",
    ),
) -> None:
    """Start a persistent local Ray head (dashboard and job server on 127.0.0.1:8265)."""
    from cluster.runtime import head_up

    url = head_up(num_cpus, host=host)
    console.print(
        f"Ray head running; jobs and dashboard at {url} (token auth on, token in "
        "~/.ray/auth_token). Stop it with `evalctl cluster down`."
    )


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the local Ray head (and anything served on it)."""
    from cluster.runtime import head_down

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
    where: running jobs, Serve replicas, evaluation actors, sweep trials."""
    from cluster.cluster_view import describe_cluster
    from cluster.runtime import status_address

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
