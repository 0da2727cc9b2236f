"""`evalctl jobs list|status|logs|stop`: follow Ray jobs on a cluster's job server."""

from __future__ import annotations

import typer
from rich.table import Table

from cluster.errors import UserError
from cluster.ray.runtime import LOCAL_JOBS_URL, head_jobs_url, resolve_target
from jobs.entry import console
from jobs.submit import connect, follow

jobs_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Ray jobs on a cluster.")
ADDRESS = typer.Option(
    None, "--address", help=f"Job server (default: RAY_ADDRESS, else the local head's, {LOCAL_JOBS_URL})."
)


def client_for(address: str | None):
    target = resolve_target(address)
    return connect(target.address if target.mode == "submit" else head_jobs_url())


def _status(client, job_id: str) -> str:
    try:
        return str(client.get_job_status(job_id)).split(".")[-1]
    except RuntimeError as exc:
        raise UserError(f'no job "{job_id}" on this cluster ({str(exc).splitlines()[0]})') from exc


@jobs_app.command("list")
def list_command(address: str | None = ADDRESS) -> None:
    """Jobs on the cluster, newest first."""
    jobs = sorted(client_for(address).list_jobs(), key=lambda j: j.start_time or 0, reverse=True)
    table = Table("submission id", "status", "entrypoint")
    for j in jobs:
        table.add_row(j.submission_id or j.job_id or "", str(j.status).split(".")[-1], j.entrypoint[:80])
    console.print(table)


@jobs_app.command("status")
def status_command(job_id: str, address: str | None = ADDRESS) -> None:
    """A job's status."""
    console.print(f"{job_id}: {_status(client_for(address), job_id)}")


@jobs_app.command("logs")
def logs_command(
    job_id: str, follow_logs: bool = typer.Option(False, "--follow", "-f"), address: str | None = ADDRESS
) -> None:
    """A job's log (--follow streams it until the job ends)."""
    client = client_for(address)
    _status(client, job_id)
    if follow_logs:
        raise typer.Exit(follow(client, job_id))
    print(client.get_job_logs(job_id), end="")


@jobs_app.command("stop")
def stop_command(job_id: str, address: str | None = ADDRESS) -> None:
    """Stop a running job."""
    client = client_for(address)
    _status(client, job_id)
    stopped = client.stop_job(job_id)
    console.print(f"{job_id}: stop requested" if stopped else f"{job_id} was not running")
