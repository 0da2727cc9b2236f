"""The driver's side of an evaluation: take each shard's output once, in input order, and
survive lost nodes.

Every output block of the inference actors (jobs/predictor.py) starts with a payload row
naming its shard (input offset, rows), the actor and node that computed it, and the
shard's sufficient statistics. The driver writes the block's predictions and adds its
statistics only when that shard has not been taken yet (:class:`ShardLedger`), so a block
that Ray computes twice is never counted twice, whatever the retries.

A node lost mid-run kills the actors on it; Ray Data does not restart them
(``max_restarts=0``, see jobs/predictor.py), so the pipeline fails with an actor or
object-loss error. :func:`stream_with_recovery` then runs a new pipeline over the shards
not taken yet, on the nodes that are left: blocks arrive in input order, so the taken
shards are a prefix of the input and the predictions file stays in input order.
"""

from __future__ import annotations

import logging
import pickle
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa

log = logging.getLogger(__name__)
MAX_RECOVERIES = 3  # new pipelines after lost workers; one that takes no shard and fails again stops


@dataclass
class ShardLedger:
    """Which shards (by input offset) the driver has taken, and who computed them."""

    expected: int = 0  # input offset of the next shard in order
    shards: int = 0
    rows: int = 0
    duplicates: int = 0  # blocks of an already-taken shard, dropped (rows not written, stats not added)
    workers: dict[str, dict] = field(default_factory=dict)  # actor id -> {actor, node, rows, blocks}

    def take(self, part: dict) -> bool:
        """Whether the block of ``part`` (its payload) is new; records it if so."""
        offset, rows = part["offset"], part["rows"]
        if offset < self.expected:
            self.duplicates += 1
            log.warning("dropped a second copy of the shard at row %d (%d rows)", offset, rows)
            return False
        if offset != self.expected:
            raise RuntimeError(f"shard at row {offset} arrived before the one at row {self.expected}")
        self.expected, self.shards, self.rows = offset + rows, self.shards + 1, self.rows + rows
        w = self.workers.setdefault(
            part["actor"], {"actor": part["actor"], "node": part["node"], "rows": 0, "blocks": 0}
        )
        w["rows"] += rows
        w["blocks"] += 1
        return True

    def remaining(self, shards: list) -> list:
        return [s for s in shards if s.offset >= self.expected]


def segments(batch: pa.Table) -> Iterable[tuple[dict, pa.Table]]:
    """(payload, the block's rows without the payload column) for each block in ``batch``."""
    marks = [i for i, p in enumerate(batch["_stats"].to_pylist()) if p]
    rows = batch.drop_columns(["_stats"])
    for start, end in zip(marks, [*marks[1:], batch.num_rows], strict=True):
        yield pickle.loads(batch["_stats"][start].as_py()), rows.slice(start, end - start)


def is_lost_worker(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says an actor, worker, node or object was lost."""
    from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

    lost = (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, lost):
            return True
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return False


def stream_with_recovery(
    shards: list,
    ledger: ShardLedger,
    run: Callable[[list], None],
    settle: Callable[[BaseException], None] | None = None,
) -> list[dict]:
    """``run(shards)`` (one pipeline over them, feeding ``ledger``) until every shard is taken;
    after a lost worker, ``settle(error)`` (wait until the cluster knows what was lost), then
    again over the shards not taken yet. Returns one record per recovery."""
    recoveries: list[dict] = []
    while True:
        todo = ledger.remaining(shards)
        taken_before = ledger.shards
        t0 = time.perf_counter()
        try:
            run(todo)
        except Exception as exc:
            stalled = recoveries and ledger.shards == taken_before
            if not is_lost_worker(exc) or len(recoveries) >= MAX_RECOVERIES or stalled:
                raise
            recoveries.append(_recovery(exc, ledger, shards, time.perf_counter() - t0))
            if settle is not None:
                settle(exc)
            continue
        missing = ledger.remaining(shards)
        if missing:
            raise RuntimeError(
                f"the pipeline ended with {len(missing)} shards not taken (first at row {missing[0].offset})"
            )
        return recoveries


def _recovery(exc: BaseException, ledger: ShardLedger, shards: list, ran_s: float) -> dict:
    left = ledger.remaining(shards)
    record = {
        "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
        "after_s": round(ran_s, 3),
        "shards_taken": ledger.shards,
        "shards_left": len(left),
        "rows_left": sum(s.num_rows for s in left),
    }
    log.warning(
        "a worker was lost (%s); running the %d shards left (%d rows) on the nodes that remain",
        record["error"],
        record["shards_left"],
        record["rows_left"],
    )
    return record


# ------------------------------------------------------------------ waiting for the cluster's view

NODE_ID = re.compile(r"\b[0-9a-f]{56}\b")  # Ray node ids: 28 bytes in hex
SETTLE_TIMEOUT_S = 90.0  # Ray marks a silent node dead after its health checks fail (~15-30 s)


def wait_for_lost_nodes(exc: BaseException, ledger: ShardLedger, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until Ray marks dead the node(s) a lost-worker error points at, so that the next
    pipeline does not place its actors there: a killed node stays "alive" to Ray until its
    health checks fail, and an actor placed on it in that window dies before it runs (measured:
    the new pipeline then failed at once). The nodes: ids named in the error chain, and the
    nodes of the actors it names. Bounded; returns at once when no node is named or alive."""
    import ray

    text = _chain_text(exc)
    suspects = set(NODE_ID.findall(text)) | {
        w["node"] for actor, w in ledger.workers.items() if actor and actor in text
    }
    deadline = time.monotonic() + timeout_s
    while suspects:
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        if not suspects & alive or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _chain_text(exc: BaseException) -> str:
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(str(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return "\n".join(parts)
