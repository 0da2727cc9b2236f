"""evalctl runs / models / db: the team's record from the command line.

Every string that comes from users or data (ids, owners, aliases, paths) is
passed through ``cell`` before rich renders it: markup such as ``[/x]`` prints as
written, and control characters (ANSI escapes) print as ``\\x1b``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cluster.errors import UserError, printable
from jobs.entry import console

models_app = typer.Typer(no_args_is_help=True, help="Registered models and aliases.")
runs_app = typer.Typer(no_args_is_help=True, help="The team's runs.")
db_app = typer.Typer(no_args_is_help=True, help="The registry's database: where it is, its schema revision.")


def register(app: typer.Typer) -> None:
    """Add the ``models``, ``runs`` and ``db`` command groups to evalctl."""
    app.add_typer(models_app, name="models")
    app.add_typer(runs_app, name="runs")
    app.add_typer(db_app, name="db")


def cell(value: object) -> str:
    """A user- or data-supplied value, safe for a rich table cell or title."""
    return escape(printable("" if value is None else value))


# ------------------------------------------------------------------ models


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered models, newest first, with their aliases."""
    from cluster.registry.record import Registry

    rows = Registry().list_models()
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table("id", "aliases", "created", "base", "run", "path")
    for r in rows:
        table.add_row(
            *map(cell, (r["id"], r["aliases"], r["created_at"], r["base_model"], r["run_id"], r["path"]))
        )
    console.print(table)


@models_app.command("register")
def models_register(
    path: str = typer.Argument(..., help="A model directory (safetensors weights)."),
    alias: list[str] = typer.Option([], "--alias", help="Aliases to point at it (repeatable)."),
) -> None:
    """Register a model directory trained elsewhere: copied into the artifact store
    ($EVALCLUSTER_ARTIFACTS, default EVALCLUSTER_HOME) with the checksum of its files."""
    from cluster.data.storage import is_remote
    from cluster.models.modeldir import read_lineage
    from cluster.models.resolve import resolve_model
    from cluster.registry.record import Registry, check_alias, new_id

    for name in alias:
        check_alias(name)
    if not (Path(path).expanduser().is_dir() or is_remote(path)):
        raise UserError(f"{printable(path)} is not a directory: `models register` takes a model directory")
    registry = Registry()
    src = resolve_model(path, registry)  # config.json and safetensors weights checked
    model_id = new_id("m")
    location, checksum = _copy_to_store(src.path, model_id, registry)
    lineage = read_lineage(src.path)
    registry.register_model(
        location, base_model=lineage.get("base_model"), lineage=lineage, checksum=checksum, model_id=model_id
    )
    for name in alias:
        registry.set_alias(name, model_id)
    console.print(f"registered {cell(model_id)} at {cell(location)}" + "".join(f"; {cell(a)}" for a in alias))


def _copy_to_store(src: Path, model_id: str, registry) -> tuple[str, str]:
    from cluster.models.cache import store_model
    from cluster.registry.artifacts import ArtifactStore

    store = ArtifactStore.from_env(registry.home)
    store.check_writable()

    def copy(out: Path) -> Path:
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.copytree(src, tmp)
        tmp.rename(out)  # the directory appears complete or not at all
        return out

    return store_model(copy, model_id, store, registry.home / "staging")


@models_app.command("alias")
def models_alias(name: str, model: str) -> None:
    """Point alias NAME (e.g. serving) at MODEL (an id or another alias).

    Alias names: 1-64 letters, digits, '.', '_' or '-', starting with a letter or
    digit; "base" is reserved.
    """
    from cluster.registry.record import Registry

    model_id = Registry().set_alias(name, model)
    console.print(f"{cell(name)} -> {cell(model_id)}")


@models_app.command("unalias")
def models_unalias(name: str) -> None:
    """Remove alias NAME (the model stays registered)."""
    from cluster.registry.record import Registry

    model_id = Registry().remove_alias(name)
    console.print(f"removed alias {cell(name)} (it pointed at {cell(model_id)})")


# ------------------------------------------------------------------ runs


@runs_app.command("list")
def runs_list(
    owner: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 20,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The team's runs, newest first; a running run whose process is gone is shown as stale, one
    alive with its progress (as its heartbeat last wrote it)."""
    from cluster.registry.heartbeat import format_age, seconds_since, stale_after, stale_reason
    from cluster.registry.progress import describe
    from cluster.registry.record import Registry

    rows = [
        {**r, "stale": stale_reason(r)}
        for r in Registry().list_runs(owner=owner, kind=kind, status=status, limit=limit)
    ]
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table("id", "kind", "status", "owner", "created", "model", "dataset", "heartbeat", "progress")
    for r in rows:
        alive = r["status"] == "running" and not r["stale"]
        seen = f"{format_age(seconds_since(r['heartbeat_at'] or r['created_at']))} ago" if alive else ""
        table.add_row(
            *map(cell, (r["id"], r["kind"])),
            "[bold yellow]stale[/]" if r["stale"] else cell(r["status"]),
            *map(cell, (r["owner"], r["created_at"], r["model_id"], r["dataset_fingerprint"])),
            cell(r["stale"] or seen),
            cell((describe(r.get("progress")) or "") if r["status"] == "running" else ""),
        )
    console.print(table)
    stale = sum(1 for r in rows if r["stale"])
    if stale:
        console.print(
            f"{stale} stale run(s): process gone, or no heartbeat for over {format_age(stale_after())}."
            " `evalctl runs fail --stale` marks them failed."
        )


@runs_app.command("show")
def runs_show(run_id: str) -> None:
    """Everything recorded about one run (and whether a later run overwrote its outputs)."""
    from cluster.registry.heartbeat import stale_reason
    from cluster.registry.overwrites import overwritten
    from cluster.registry.record import Registry

    registry = Registry()
    run = registry.get_run(run_id)
    gone = overwritten(registry, run["id"])
    console.print_json(json.dumps({**run, "stale": stale_reason(run), "overwritten": gone}, default=str))
    timings = (run.get("metrics") or {}).get("timings")
    if timings:
        console.print(timings_table(timings))
    if gone:
        console.print(
            f"note: its outputs in {cell(gone['path'])} were overwritten by run {cell(gone['by_run'])} at "
            f"{cell(gone['at'])} (--overwrite): what is there now is that run's"
        )


# Phases of an evaluation in the order they happen (metrics.json `timings`, docs/contracts.md).
PHASES = {
    "cli_start_s": "process start -> command (interpreter, imports)",
    "ray_init_s": "start Ray, or join the running head",
    "scan_s": "validate + fingerprint the data (beside Ray start and model load)",
    "actors_ready_s": "Ray up -> first actor's model loaded",
    "first_batch_s": "model loaded -> first shard's predictions",
    "inference_s": "model loaded -> last shard's predictions",
    "finish_s": "metrics, bootstrap CIs, report, artifacts",
    "total_s": "command -> metrics.json",
    "process_s": "process start -> metrics.json",
}


def timings_table(timings: dict) -> Table:
    """An evaluation's timings as a table: where its wall time went."""
    table = Table("phase", "seconds", "what", title="timings")
    for key, what in PHASES.items():
        if key in timings:
            table.add_row(key.removesuffix("_s"), f"{timings[key]:.2f}", what)
    for key in ("rows_per_s", "steady_rows_per_s"):
        if key in timings:
            table.add_row(key.removesuffix("_s"), f"{timings[key]:.1f}", "rows/s")
    return table


@runs_app.command("fail")
def runs_fail(
    run_id: str | None = typer.Argument(None, help="Run id or unique prefix (or --stale)."),
    reason: str | None = typer.Option(None, help="Recorded as the run's error."),
    stale: bool = typer.Option(False, "--stale", help="Every stale running run instead of one RUN."),
    older_than: str | None = typer.Option(None, help="With --stale: only runs silent for longer (10m, 2h)."),
) -> None:
    """Mark a running run failed: one RUN, or every stale run (its process gone or silent)."""
    from cluster.registry.heartbeat import parse_duration, stale_reason
    from cluster.registry.record import Registry, default_owner

    if (run_id is None) != stale:
        raise UserError("give one RUN or --stale (not both)")
    if older_than is not None and not stale:
        raise UserError("--older-than goes with --stale")
    registry, by = Registry(), f"marked failed by {default_owner()} with `evalctl runs fail`"
    if stale:
        older = parse_duration(older_than) if older_than is not None else None
        failed = registry.fail_stale_runs(reason or by, older)
        for r in failed:
            console.print(f"{cell(r['id'])} failed ({cell(r['stale'])})")
        console.print(f"{len(failed)} stale run(s) marked failed.")
        return
    before = registry.get_run(run_id)
    run = registry.mark_failed(run_id, reason or by)
    console.print(f"{cell(run['id'])} marked failed.")
    if not stale_reason(before):
        owner = f"pid {cell(run['pid'])} on {cell(run['host'])}"
        console.print(f"note: {cell(run['id'])} still looked alive (owned by {owner}).")


@runs_app.command("record")
def runs_record(
    location: str = typer.Argument(..., help="The outputs' directory (or URI) a run named, unrecorded."),
) -> None:
    """Record a finished run whose final write found the registry database unreachable (its
    outputs were kept, with registry-pending.json beside them)."""
    from cluster.registry.deferred import record_pending
    from cluster.registry.record import Registry

    location = location if "://" in location else str(Path(location).expanduser().resolve())
    run_id = record_pending(Registry(), location)
    console.print(f"recorded run {cell(run_id)} (finished, outputs in {cell(location)})")


# ------------------------------------------------------------------ db


@db_app.command("status")
def db_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Backend, database (password shown as ***), schema revision and whether an upgrade is pending."""
    from cluster.registry.db.store import status
    from cluster.registry.record import default_home

    info = status(default_home())
    if as_json:
        console.print_json(json.dumps(info))
        return
    if info["empty"]:
        state = "no registry yet (created on first use, or by `evalctl db upgrade`)"
    elif info["pending"]:
        state = "upgrade pending: run `evalctl db upgrade`" + (
            " (or any evalctl command: SQLite upgrades on open)" if info["backend"] == "sqlite" else ""
        )
    else:
        state = "up to date"
    console.print(f"backend   {info['backend']}\ndatabase  {cell(info['database'])}")
    console.print(f"revision  {info['revision'] or 'none'} (this code: {info['head']})\nstate     {state}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the registry's schema to this code's revision (safe to run again)."""
    from cluster.registry.db.store import Database, status
    from cluster.registry.record import default_home

    home = default_home()
    before = status(home)
    Database.open(home, upgrade=True).close()
    after = status(home)
    if before["revision"] == after["revision"]:
        console.print(f"{cell(after['database'])}: already at revision {after['revision']}")
    else:
        console.print(
            f"{cell(after['database'])}: upgraded from {before['revision'] or 'none'} to {after['revision']}"
        )
