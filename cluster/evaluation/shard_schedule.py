"""Shards onto model actors, their results in input order, through lost actors and nodes.

The driver keeps ``IN_FLIGHT_PER_ACTOR`` shards in flight per model actor (cluster/evaluation/pipeline.py
makes the actors and talks to Ray for this module: :class:`Ops`) and takes each shard's
result once, by its input offset (:class:`ShardLedger`), releasing them in input order.

A node lost mid-run takes its actors with it (they have ``max_restarts=0``: a restarted
actor would wait for a CPU the survivors hold, and restarts with constructor arguments in
the object store are not reliable, ray-project/ray#53727). The first failed call of an actor
marks it lost; the shards it had in flight go back to the queue (ahead of later shards) and
run on the actors left. Its calls still in flight stay watched: one that returns a result
anyway is taken if its shard was not taken yet, else dropped, so no shard's statistics are
counted twice. Lost actors are replaced on alive nodes with room for them, but not on the
lost actor's node before ``SUSPECT_S`` have passed: a killed node stays "alive" to Ray until
its health checks fail, and an actor placed there in that window dies before it runs.
"""

from __future__ import annotations

import heapq
import logging
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from cluster.errors import UserError

log = logging.getLogger(__name__)
IN_FLIGHT_PER_ACTOR = 2  # one shard computing, one queued: an actor never waits for the driver
MAX_LOSSES_PER_SHARD = 2  # a shard lost with its actor this often fails the run
SUSPECT_S = 60.0  # Ray marks a silent node dead after its health checks fail (~15-45 s)
NO_ACTOR_TIMEOUT_S = 180.0  # every actor lost and none could be placed for this long: the run fails
POLL_S = 1.0  # the longest wait for a result before looking at the cluster again


@dataclass(eq=False)
class Worker:
    """One model actor as the scheduler sees it."""

    handle: Any
    node: str | None  # where it was placed; where it runs once ready() answered
    ready_ref: Any = None
    replacement: bool = False  # gets shards only once its model is loaded (it may never be placed)
    ready: bool = False
    alive: bool = True
    inflight: int = 0
    actor: str | None = None  # Ray actor id, once ready() answered


class Ops(Protocol):
    """What the scheduler needs from Ray (cluster/evaluation/pipeline.py; a fake in the unit tests)."""

    def submit(self, worker: Worker, index: int) -> Any: ...  # a ref to shard ``index``'s table

    def wait(self, refs: list, timeout: float) -> list: ...  # the refs that are ready (at least one)

    def get(self, ref: Any) -> Any: ...

    def kill(self, worker: Worker) -> None: ...

    def room(self) -> dict[str, int]: ...  # alive node id -> model actors it has room for

    def spawn(self, node: str) -> Worker: ...  # a new actor placed on ``node``, its ready() called


@dataclass
class ShardLedger:
    """Each shard's result taken once, by its input offset, and released in input order."""

    offsets: list[int]  # every shard's input offset, in input order
    next: int = 0  # shards released so far (the index of the next one)
    rows: int = 0
    duplicates: int = 0  # results of a shard already taken: dropped (not written, statistics not added)
    taken: set[int] = field(default_factory=set)
    held: dict[int, tuple[dict, Any]] = field(default_factory=dict)  # offset -> (payload, table)
    workers: dict[str, dict] = field(default_factory=dict)  # actor id -> {actor, node, rows, shards}

    def offer(self, part: dict, table: Any) -> bool:
        """Take the result whose payload is ``part`` unless its shard was taken already."""
        offset = part["offset"]
        if offset in self.taken:
            self.duplicates += 1
            log.warning("dropped a second result for the shard at row %d (%d rows)", offset, part["rows"])
            return False
        self.taken.add(offset)
        self.held[offset] = (part, table)
        return True

    def done(self) -> bool:
        return self.next == len(self.offsets)

    def release(self) -> Iterator[tuple[dict, Any]]:
        """The held results that are next in input order (recorded per actor as they go)."""
        while self.next < len(self.offsets) and self.offsets[self.next] in self.held:
            part, table = self.held.pop(self.offsets[self.next])
            self.next += 1
            self.rows += part["rows"]
            w = self.workers.setdefault(
                part["actor"], {"actor": part["actor"], "node": part["node"], "rows": 0, "shards": 0}
            )
            w["rows"] += part["rows"]
            w["shards"] += 1
            yield part, table


def is_lost_actor(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says an actor, worker, node or object was lost; an
    actor whose constructor raised is not lost (a replacement would raise the same)."""
    from ray.exceptions import (
        ActorUnschedulableError,
        NodeDiedError,
        ObjectLostError,
        RayActorError,
        WorkerCrashedError,
    )

    lost = (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError, ActorUnschedulableError)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RayActorError) and exc.actor_init_failed:
            return False
        if isinstance(exc, lost):
            return True
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return False


class ShardScheduler:
    """Runs every shard on the model actors once; :meth:`results` yields (payload, table) per
    shard in input order. ``on_ready(info)`` is called with each actor's ready() answer,
    ``tick()`` once per loop (e.g. to renew a lease)."""

    def __init__(
        self,
        offsets: list[int],
        workers: list[Worker],
        ops: Ops,
        on_ready: Callable[[dict], None] | None = None,
        tick: Callable[[], None] | None = None,
    ):
        self.ops, self.workers, self.ledger = ops, list(workers), ShardLedger(list(offsets))
        self.queue = list(range(len(offsets)))  # a heap of shard indices waiting for an actor
        self.pending: dict = {}  # ref -> (shard index, worker); a lost actor's stay until they resolve
        self.readying = {w.ready_ref: w for w in self.workers if w.ready_ref is not None}
        self.losses: Counter = Counter()  # shard index -> times lost with its actor
        self.lost: list[dict] = []  # one record per lost actor
        self.suspects: dict[str, float] = {}  # node -> when an actor on it was lost
        self.vacancies = self.replacements = 0
        self.max_replacements = 2 * len(self.workers)
        self.t0 = self.last_loss = time.monotonic()
        self.last_refill = 0.0
        self.on_ready, self.tick = on_ready or (lambda info: None), tick or (lambda: None)

    def results(self) -> Iterator[tuple[dict, Any]]:
        while not self.ledger.done():
            self._submit()
            self._step()
            self._refill()
            self.tick()
            yield from self.ledger.release()

    def report(self) -> dict:
        """The ``recovery`` of metrics.json (docs/contracts.md)."""
        return {
            "shards": self.ledger.next,
            "rows": self.ledger.rows,
            "duplicate_shards_dropped": self.ledger.duplicates,
            "lost_actors": self.lost,
            "replacements": self.replacements,
        }

    def _submit(self) -> None:
        """Shards to actors with the fewest in flight; never more than a window ahead of the
        next shard to release (what waits for a slow shard stays bounded)."""
        limit = self.ledger.next + IN_FLIGHT_PER_ACTOR * 2 * max(1, sum(w.alive for w in self.workers))
        while self.queue and self.queue[0] < limit:
            free = [
                w
                for w in self.workers
                if w.alive and (w.ready or not w.replacement) and w.inflight < IN_FLIGHT_PER_ACTOR
            ]
            if not free:
                return
            i = heapq.heappop(self.queue)
            if self.ledger.offsets[i] in self.ledger.taken:  # a lost actor's call returned it meanwhile
                continue
            w = min(free, key=lambda w: w.inflight)
            self.pending[self.ops.submit(w, i)] = (i, w)
            w.inflight += 1

    def _step(self) -> None:
        refs = [*self.readying, *self.pending]
        if not refs:  # every actor lost: wait for room to place others
            time.sleep(POLL_S)
            return
        for ref in self.ops.wait(refs, POLL_S):
            if ref in self.readying:
                self._ready(self.readying.pop(ref), ref)
            else:
                self._result(ref, *self.pending.pop(ref))

    def _ready(self, w: Worker, ref: Any) -> None:
        try:
            info = self.ops.get(ref)
        except Exception as exc:
            if not self._lost(w, exc, []):
                raise
            return
        w.ready, w.node, w.actor = True, info.get("node") or w.node, info.get("actor")
        self.on_ready(info)

    def _result(self, ref: Any, i: int, w: Worker) -> None:
        w.inflight -= 1
        try:
            table = self.ops.get(ref)
        except Exception as exc:
            if not self._lost(w, exc, [i]):
                raise
            return
        part = pickle.loads(table["_stats"][0].as_py())
        if part["offset"] != self.ledger.offsets[i]:
            raise RuntimeError(
                f"shard {i} should start at row {self.ledger.offsets[i]}, not {part['offset']}"
            )
        self.ledger.offer(part, table.drop_columns(["_stats"]))

    def _lost(self, w: Worker, exc: Exception, shards: list[int]) -> bool:
        """Handle a failed call of ``w``: False when it is not a lost actor (the caller raises);
        a user's error raised in the actor (e.g. an unreadable shard) is raised as itself."""
        from ray.exceptions import RayTaskError

        if isinstance(exc, RayTaskError) and isinstance(exc.cause, UserError):
            raise exc.cause from exc
        if not is_lost_actor(exc):
            return False
        if w.alive:  # the first failure; later ones of the same actor were re-queued with it
            self._lose(w, exc, shards)
        return True

    def _lose(self, w: Worker, exc: Exception, shards: list[int]) -> None:
        now = time.monotonic()
        w.alive = False
        inflight = [i for i, other in self.pending.values() if other is w]
        requeue = sorted(i for i in {*shards, *inflight} if self.ledger.offsets[i] not in self.ledger.taken)
        for i in requeue:
            self.losses[i] += 1
            if self.losses[i] > MAX_LOSSES_PER_SHARD:
                raise RuntimeError(
                    f"the shard at row {self.ledger.offsets[i]} was lost with its model actor "
                    f"{self.losses[i]} times; giving up"
                ) from exc
            heapq.heappush(self.queue, i)
        error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        self.lost.append(
            {
                "actor": w.actor,
                "node": w.node,
                "error": error,
                "after_s": round(now - self.t0, 3),
                "shards_requeued": len(requeue),
            }
        )
        log.warning("model actor on node %s lost (%s); %d shard(s) queued again", w.node, error, len(requeue))
        self.suspects[w.node or ""], self.last_loss = now, now
        self.vacancies += 1
        self.ops.kill(w)

    def _refill(self) -> None:
        """Replace lost actors on alive nodes with room (not yet on a suspect node)."""
        now = time.monotonic()
        if not self.vacancies or now - self.last_refill < POLL_S:
            return
        self.last_refill = now
        used = Counter(w.node for w in self.workers if w.alive)
        for node, room in self.ops.room().items():
            if now - self.suspects.get(node, -SUSPECT_S) < SUSPECT_S:
                continue
            for _ in range(room - used[node]):
                if not self.vacancies or self.replacements >= self.max_replacements:
                    break
                self._spawn(node)
        if not any(w.alive for w in self.workers):
            stuck = self.replacements >= self.max_replacements or now - self.last_loss > NO_ACTOR_TIMEOUT_S
            if stuck:
                raise RuntimeError(
                    f"every model actor was lost ({len(self.lost)} losses, {self.replacements} "
                    "replacements) and no alive node has room for another"
                )

    def _spawn(self, node: str) -> None:
        w = self.ops.spawn(node)
        w.replacement = True
        self.workers.append(w)
        self.readying[w.ready_ref] = w
        self.vacancies -= 1
        self.replacements += 1
        log.warning("started a model actor on node %s in place of a lost one", node)
