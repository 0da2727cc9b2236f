"""A finished run whose record the registry could not take: kept with its outputs, recorded later.

When a run's final write (``finish_run``) finds the database unreachable for the whole retry
budget (cluster/registry/db/engine.py: ``with_retries``), its outputs are complete: they stay
where they are, with ``registry-pending.json`` beside them, the record they are owed, and the
user is told the one command that writes it once the database is back:
``evalctl runs record DIR`` (:func:`record_pending`). Until then the run stays ``running`` in the
registry (its heartbeat stopped: it shows as stale after a while); it is not marked failed.
"""

from __future__ import annotations

import json

from cluster.errors import UserError
from cluster.registry.db.engine import Unreachable

PENDING = "registry-pending.json"  # beside a run's outputs: the record they are owed (version 1)


class RecordLater(UserError):
    """The run finished, its outputs are kept; its record waits for `evalctl runs record`."""


def finish_or_keep(
    registry, run_id: str, metrics: dict, artifact_path: str, model_id: str | None = None
) -> None:
    """``registry.finish_run`` (``registry``: a cluster.registry.record.Registry), or, when the
    database stays unreachable, the record written beside the outputs and RecordLater naming the
    command that records it."""
    from cluster.data.storage import join  # pyarrow: only here (the registry's import path stays without it)

    try:
        registry.finish_run(run_id, metrics=metrics, artifact_path=artifact_path, model_id=model_id)
    except Unreachable as exc:
        note = {"version": 1, "run_id": run_id, "metrics": metrics, "artifact_path": artifact_path}
        _write(join(artifact_path, PENDING), json.dumps({**note, "model_id": model_id}, default=str))
        raise RecordLater(
            f"{exc}; run {run_id} finished and its outputs are kept in {artifact_path}: record it once "
            f"the database is back with `evalctl runs record {artifact_path}`"
        ) from exc
    except RuntimeError:  # "not running": a retried write whose first try had been committed
        if not _finished_as(registry.get_run(run_id), artifact_path):
            raise


def record_pending(registry, location: str) -> str:
    """Write the record a run left in ``location`` (PENDING) into the registry; returns the run id."""
    from cluster.data.storage import join  # pyarrow: only here (the registry's import path stays without it)
    from cluster.registry.artifacts import exists, read_text

    path = join(location, PENDING)
    if not exists(path):
        raise UserError(
            f"{location} has no record waiting ({PENDING}); `evalctl runs record` takes the directory"
            " a run named when the registry database was unreachable"
        )
    note = json.loads(read_text(path, "pending record"))
    run = registry.get_run(note["run_id"])
    if run["status"] == "running":
        finish_or_keep(registry, run["id"], note["metrics"], note["artifact_path"], note.get("model_id"))
    elif not _finished_as(run, note["artifact_path"]):
        raise UserError(
            f"run {run['id']} was marked {run['status']} meanwhile ({run.get('error') or 'no reason'});"
            f" its record is final: the outputs in {location} stay, unrecorded"
        )
    _delete(path)
    return run["id"]


def _finished_as(run: dict, artifact_path: str) -> bool:
    return run["status"] == "finished" and run["artifact_path"] == artifact_path


def _write(location: str, text: str) -> None:
    from cluster.data.storage import resolve, storage_error

    fs, path = resolve(location)
    try:
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
    except OSError as exc:
        raise storage_error(exc, location, "write") from exc


def _delete(location: str) -> None:
    from cluster.data.storage import resolve, storage_error

    fs, path = resolve(location)
    try:
        fs.delete_file(path)
    except OSError as exc:
        raise storage_error(exc, location, "write") from exc
