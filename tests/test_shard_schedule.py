"""The driver's side of an evaluation (cluster/evaluation/shard_schedule.py) against a fake Ray: each shard
taken once by its input offset, released in input order, a lost actor's shards run again on
the actors left, replacements only where there is room. No Ray started."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, ObjectLostError, RayTaskError

import cluster.evaluation.shard_schedule as sched
from cluster.errors import UserError
from cluster.evaluation.shard_schedule import ShardLedger, ShardScheduler, Worker, is_lost_actor

OFFSETS = list(range(0, 80, 10))  # 8 shards of 10 rows


def table(offset: int, actor: str, node: str, rows: int = 10) -> pa.Table:
    part = {"offset": offset, "rows": rows, "actor": actor, "node": node, "stats": offset}
    return pa.table(
        {"row": list(range(offset, offset + rows)), "_stats": [pickle.dumps(part)] + [b""] * (rows - 1)}
    )


class Ref:
    def __init__(self, value=None, error=None, ready=True):
        self.value, self.error, self.is_ready = value, error, ready


class FakeRay:
    """Actors answer at once, in submission order; ``lose(actor, after=n)`` makes an actor fail
    every call once it has answered ``n`` shards, ``hold`` keeps calls of an actor unanswered."""

    def __init__(self, room: dict[str, int] | None = None):
        self.calls: list[tuple[str, int]] = []
        self.answered: dict[str, int] = {}
        self.die_after: dict[str, int] = {}
        self.killed: list[str] = []
        self.spawned: list[str] = []
        self.room_ = room or {}

    def worker(self, name: str, node: str) -> Worker:
        return Worker(name, node, Ref({"at": 1.0, "actor": name, "node": node}))

    def submit(self, w: Worker, i: int) -> Ref:
        self.calls.append((w.handle, OFFSETS[i]))
        n = self.answered.get(w.handle, 0)
        if w.handle in self.die_after and n >= self.die_after[w.handle]:
            return Ref(error=ActorDiedError())
        self.answered[w.handle] = n + 1
        return Ref(table(OFFSETS[i], w.handle, w.node))

    def wait(self, refs, timeout):
        return [r for r in refs if r.is_ready][:1]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, w):
        self.killed.append(w.handle)

    def room(self):
        return self.room_

    def spawn(self, node):
        name = f"r{len(self.spawned)}"
        self.spawned.append(node)
        return self.worker(name, node)


def run(fake: FakeRay, workers: list[Worker]) -> tuple[list, ShardScheduler]:
    s = ShardScheduler(OFFSETS, workers, fake)
    return [(p["offset"], p["actor"], t["row"].to_pylist()[0]) for p, t in s.results()], s


def test_every_shard_once_in_input_order_spread_over_the_actors():
    fake = FakeRay()
    out, s = run(fake, [fake.worker("a", "n1"), fake.worker("b", "n2")])
    assert [o for o, _, _ in out] == OFFSETS and [r for _, _, r in out] == OFFSETS
    assert {a for _, a, _ in out} == {"a", "b"}
    assert s.ledger.rows == 80 and s.report()["lost_actors"] == [] and s.ledger.duplicates == 0
    assert sum(w["rows"] for w in s.ledger.workers.values()) == 80
    assert {w["node"] for w in s.ledger.workers.values()} == {"n1", "n2"}


def test_a_lost_actor_s_shards_run_again_on_the_actor_left_each_counted_once(monkeypatch):
    fake = FakeRay(room={"n1": 1})  # the survivor's node is full: no replacement
    fake.die_after["b"] = 1  # b answers one shard, then its node is gone
    out, s = run(fake, [fake.worker("a", "n1"), fake.worker("b", "n2")])
    assert [o for o, _, _ in out] == OFFSETS  # every shard once, in order
    rec = s.report()
    assert rec["shards"] == 8 and rec["rows"] == 80 and rec["duplicate_shards_dropped"] == 0
    (lost,) = rec["lost_actors"]
    assert lost["actor"] == "b" and lost["node"] == "n2" and lost["shards_requeued"] >= 1, rec
    assert lost["error"].startswith("ActorDiedError") and fake.killed == ["b"]
    assert rec["replacements"] == 0 and fake.spawned == []
    by_actor = {w["actor"]: w["rows"] for w in s.ledger.workers.values()}
    assert by_actor == {"a": 70, "b": 10}, by_actor


def test_a_result_that_arrives_after_its_shard_was_taken_is_dropped():
    ledger = ShardLedger(OFFSETS[:2])
    part = {"offset": 0, "rows": 10, "actor": "a", "node": "n1"}
    assert ledger.offer(part, "t0") and not ledger.offer({**part, "actor": "b"}, "t0 again")
    assert ledger.offer({**part, "offset": 10}, "t1")
    assert [t for _, t in ledger.release()] == ["t0", "t1"] and ledger.duplicates == 1
    assert ledger.workers == {"a": {"actor": "a", "node": "n1", "rows": 20, "shards": 2}}


def test_a_lost_actor_s_late_result_is_dropped_when_its_rerun_was_taken():
    fake = FakeRay(room={"n1": 1})
    late = {}

    def submit(w, i):
        ref = FakeRay.submit(fake, w, i)
        if w.handle == "b" and OFFSETS[i] == 10:  # b's second shard: answered only after b is lost
            late["ref"], late["value"] = ref, ref.value
            ref.is_ready = False
        elif w.handle == "b" and OFFSETS[i] > 10:
            ref.value, ref.error = None, ActorUnavailableError("node gone", None)
        return ref

    fake.submit = submit
    s = ShardScheduler(OFFSETS, [fake.worker("a", "n1"), fake.worker("b", "n2")], fake)
    taken = []
    for part, _ in s.results():
        taken.append(part["offset"])
        if s.lost and "ref" in late and not late["ref"].is_ready:
            late["ref"].is_ready = True  # the lost actor's result for row 10 comes in after all
    assert taken == OFFSETS
    assert [a for a, o in fake.calls if o == 10] == ["b", "a"]  # re-queued once, onto the survivor
    s._step()  # the lost actor's late result for row 10: a second copy, dropped
    assert s.ledger.duplicates == 1 and s.ledger.rows == 80 and s.ledger.workers["a"]["rows"] == 80


def test_replacements_go_to_nodes_with_room_not_to_the_lost_node(monkeypatch):
    fake = FakeRay(room={"n1": 1, "n2": 1, "n3": 1})  # n2 is still "alive" to Ray, n3 is free
    fake.die_after["b"] = 0
    out, s = run(fake, [fake.worker("a", "n1"), fake.worker("b", "n2")])
    assert [o for o, _, _ in out] == OFFSETS
    assert fake.spawned == ["n3"] and s.report()["replacements"] == 1


def test_no_actor_left_and_no_room_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(sched, "POLL_S", 0.0)
    monkeypatch.setattr(sched, "NO_ACTOR_TIMEOUT_S", 0.0)
    fake = FakeRay(room={})
    fake.die_after["a"] = 1
    with pytest.raises(RuntimeError, match="every model actor was lost"):
        run(fake, [fake.worker("a", "n1")])


def test_a_user_error_in_an_actor_is_raised_as_itself_and_bugs_are_not_retried():
    fake = FakeRay()
    fake.submit = lambda w, i: Ref(error=RayTaskError("score", "tb", UserError("shard unreadable")))
    with pytest.raises(UserError, match="shard unreadable"):
        run(fake, [fake.worker("a", "n1")])
    fake.submit = lambda w, i: Ref(error=ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        run(fake, [fake.worker("a", "n1")])


def test_lost_actors_are_recognised_through_wrappers_but_not_a_failed_constructor():
    assert is_lost_actor(ActorUnavailableError("gone", b"\x00" * 16))
    assert is_lost_actor(ObjectLostError("ab" * 14, owner_address=None, call_site=""))
    wrapped = RuntimeError("failed")
    wrapped.__cause__ = ActorDiedError()
    assert is_lost_actor(wrapped)
    assert not is_lost_actor(ActorDiedError(RayTaskError("__init__", "tb", ValueError("bad model"))))
    assert not is_lost_actor(ValueError("a bug in the model code"))
