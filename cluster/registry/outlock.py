"""One writer per output directory: ``evaluate --out DIR`` holds ``DIR/.evalcluster.lock`` while it runs.

The lock file names its holder (JSON: run id, host, pid, since). A second writer
is refused (one line) while the holder is alive; the file is removed when the
holder's block ends, however it ends. A holder that died without removing it
(SIGKILL, a lost node) leaves a *stale* lock, which the next writer takes over:

- same host: the holder's pid is gone, or the registry says its run has ended;
- another host: the registry says its run has ended or is stale (no heartbeat,
  cluster/registry/heartbeat.py), or the run was never recorded and the lock is older than
  the heartbeat's staleness limit.

Checking and taking the lock happen under ``flock`` on the directory itself, so
two writers never both see it free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster.errors import UserError, printable
from cluster.registry.heartbeat import owner_process, pid_alive, seconds_since, stale_after, stale_reason

LOCK_FILE = ".evalcluster.lock"


@contextmanager
def hold(directory: Path, run_id: str, registry: Any | None = None) -> Iterator[None]:
    """Hold ``directory`` for ``run_id`` while the block runs; UserError if a live writer holds it."""
    from cluster.registry.record import now

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    host, pid = owner_process()
    mine = {"run_id": run_id, "host": host, "pid": pid, "since": now()}
    with _dir_flock(directory):
        holder = _read(lock)
        if holder is not None and holder.get("run_id") != run_id and _alive(holder, registry):
            who = f"pid {holder.get('pid')} on {printable(holder.get('host'))}, since {holder.get('since')}"
            raise UserError(
                f"--out {directory} is in use by run {printable(holder.get('run_id'))} ({who}); "
                "wait for it to end or choose another directory"
            )
        _write(lock, mine)
    try:
        yield
    finally:
        with _dir_flock(directory):
            if (_read(lock) or {}).get("run_id") == run_id:
                lock.unlink(missing_ok=True)


def _alive(holder: dict, registry: Any | None) -> bool:
    """Whether the lock's holder may still be writing (see the module docstring)."""
    run = _recorded_run(holder.get("run_id"), registry)
    if run is not None and (run["status"] != "running" or stale_reason(run)):
        return False
    if holder.get("host") == owner_process()[0]:
        pid = holder.get("pid")
        return isinstance(pid, int) and pid > 0 and pid_alive(pid)
    if run is None:
        try:
            return seconds_since(holder.get("since") or "") <= stale_after()
        except ValueError:
            return False
    return True


def _recorded_run(run_id: Any, registry: Any | None) -> dict | None:
    if registry is None or not isinstance(run_id, str):
        return None
    try:
        return registry.get_run(run_id)
    except UserError:
        return None  # not (yet) recorded


def _read(lock: Path) -> dict | None:
    try:
        data = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: holder unknown, treated as dead (nothing to check it by)
    return data if isinstance(data, dict) else {}


def _write(lock: Path, data: dict) -> None:
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(lock)


@contextmanager
def _dir_flock(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
