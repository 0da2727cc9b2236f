"""A running run carried on by another process: a resumed evaluation whose driver died.

    with take_over(registry, run_id) as run:   # UserError unless the run is running and its owner gone
        ...                                    # this process now beats the run's heartbeat
        registry.finish_run(run_id, ...)

The owner is taken over with one UPDATE that also matches the heartbeat the staleness was judged
by, so of two processes resuming the same run at once exactly one wins (the other is refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import bindparam, update

from cluster.errors import UserError
from cluster.registry.db.schema import runs
from cluster.registry.heartbeat import Heartbeat, heartbeat_period, owner_process, stale_reason
from cluster.registry.record import Registry, now

_TAKE = (
    update(runs)
    .where(runs.c.id == bindparam("run_id"), runs.c.status == "running")
    .where(runs.c.heartbeat_at.is_not_distinct_from(bindparam("seen")))
)
_SET = update(runs).where(runs.c.id == bindparam("run_id"), runs.c.status == "running")


@contextmanager
def take_over(registry: Registry, ref: str) -> Iterator[dict]:
    """Own the running run ``ref`` whose process is gone; keep its heartbeat while the block runs and
    mark it failed if the block raises (as ``Registry.run``). Yields the run's record."""
    run = registry.get_run(ref)
    if run["status"] != "running":
        raise UserError(
            f"run {run['id']} is {run['status']}; its record is final, so it cannot be resumed "
            "(run the evaluation again)"
        )
    why = stale_reason(run)
    if why is None:
        raise UserError(
            f"run {run['id']} is still running (pid {run['pid']} on {run['host']}, last seen "
            f"{run['heartbeat_at']}); wait for it, or stop it first"
        )
    host, pid = owner_process()
    values = {
        "run_id": run["id"],
        "seen": run["heartbeat_at"],
        "host": host,
        "pid": pid,
        "heartbeat_at": now(),
    }
    if registry.database.write_one(_TAKE, values) != 1:
        raise UserError(f"run {run['id']} was taken over by another process meanwhile")
    beat = Heartbeat(lambda: registry.beat(run["id"]), heartbeat_period(), f"heartbeat-{run['id']}").start()
    try:
        yield {**run, "host": host, "pid": pid, "previous_owner": why}
    except BaseException as exc:
        registry.fail_run(run["id"], f"{type(exc).__name__}: {exc}")
        raise
    finally:
        beat.stop()


def record_fingerprint(registry: Registry, run_id: str, fingerprint: str) -> None:
    """A running run's dataset fingerprint, known only once its pipeline ran (a ray.data.Dataset's)."""
    registry.database.write_one(_SET, {"run_id": run_id, "dataset_fingerprint": fingerprint})
