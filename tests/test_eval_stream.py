"""The driver's side of an evaluation (jobs/eval_stream.py): each shard taken once, in input
order, and a new pipeline over the shards left after a lost worker. No Ray started."""

import pickle
from dataclasses import dataclass

import pyarrow as pa
import pytest
from ray.exceptions import ActorUnavailableError, ObjectLostError, RayTaskError

from jobs.eval_stream import MAX_RECOVERIES, ShardLedger, is_lost_worker, segments, stream_with_recovery


@dataclass
class Shard:
    offset: int
    num_rows: int


SHARDS = [Shard(o, 10) for o in range(0, 60, 10)]


def part(offset: int, rows: int = 10, actor: str = "a1", node: str = "n1") -> dict:
    return {"offset": offset, "rows": rows, "actor": actor, "node": node, "stats": offset}


def block(offset: int, rows: int = 10, **kw) -> pa.Table:
    payload = pickle.dumps(part(offset, rows, **kw))
    return pa.table({"row": list(range(offset, offset + rows)), "_stats": [payload] + [b""] * (rows - 1)})


def test_segments_split_a_batch_of_several_blocks_at_their_payloads():
    batch = pa.concat_tables([block(0, 3), block(3, 2, actor="a2")])
    got = [(p["offset"], p["actor"], t["row"].to_pylist()) for p, t in segments(batch)]
    assert got == [(0, "a1", [0, 1, 2]), (3, "a2", [3, 4])]
    assert all("_stats" not in t.column_names for _, t in segments(batch))


def test_ledger_takes_each_shard_once_and_counts_rows_per_actor():
    ledger = ShardLedger()
    assert ledger.take(part(0, actor="a1", node="n1"))
    assert ledger.take(part(10, actor="a2", node="n2"))
    assert not ledger.take(part(0, actor="a3", node="n2"))  # a second copy of a taken shard
    assert ledger.take(part(20, actor="a1", node="n1"))
    assert (ledger.shards, ledger.rows, ledger.duplicates, ledger.expected) == (3, 30, 1, 30)
    assert ledger.workers == {
        "a1": {"actor": "a1", "node": "n1", "rows": 20, "blocks": 2},
        "a2": {"actor": "a2", "node": "n2", "rows": 10, "blocks": 1},
    }
    assert [s.offset for s in ledger.remaining(SHARDS)] == [30, 40, 50]
    with pytest.raises(RuntimeError, match="shard at row 50 arrived before the one at row 30"):
        ledger.take(part(50))


def test_lost_workers_are_recognised_through_wrappers():
    assert is_lost_worker(ActorUnavailableError("gone", b"\x00" * 16))
    assert is_lost_worker(ObjectLostError("ab" * 14, owner_address=None, call_site=""))
    wrapped = RuntimeError("pipeline failed")
    wrapped.__cause__ = ActorUnavailableError("gone", b"\x00" * 16)
    assert is_lost_worker(wrapped)
    task_error = RayTaskError("f", "tb", ActorUnavailableError("gone", b"\x00" * 16))
    assert is_lost_worker(task_error)
    assert not is_lost_worker(ValueError("a bug in the model code"))


def runner(ledger: ShardLedger, fail_after: list):
    """A fake pipeline: takes shards in order; the k-th call loses a worker after fail_after[k] shards."""
    calls = []

    def run(todo):
        calls.append([s.offset for s in todo])
        limit = fail_after[len(calls) - 1] if len(calls) <= len(fail_after) else None
        for i, s in enumerate(todo):
            if limit is not None and i == limit:
                raise ActorUnavailableError("node lost", b"\x00" * 16)
            ledger.take(part(s.offset, s.num_rows))

    return run, calls


def test_recovery_reruns_only_the_shards_not_taken():
    ledger = ShardLedger()
    run, calls = runner(ledger, fail_after=[2, 1])
    recoveries = stream_with_recovery(SHARDS, ledger, run)
    assert calls == [[0, 10, 20, 30, 40, 50], [20, 30, 40, 50], [30, 40, 50]]
    assert (ledger.shards, ledger.rows, ledger.duplicates) == (6, 60, 0)
    assert [r["shards_left"] for r in recoveries] == [4, 3]
    assert recoveries[0]["error"].startswith("ActorUnavailableError")


def test_recovery_gives_up_when_a_new_pipeline_takes_nothing_or_too_often():
    ledger = ShardLedger()
    run, calls = runner(ledger, fail_after=[2, 0])  # the second pipeline loses a worker at once
    with pytest.raises(ActorUnavailableError):
        stream_with_recovery(SHARDS, ledger, run)
    assert len(calls) == 2
    ledger = ShardLedger()
    run, calls = runner(ledger, fail_after=[1] * (MAX_RECOVERIES + 1))
    with pytest.raises(ActorUnavailableError):
        stream_with_recovery(SHARDS, ledger, run)
    assert len(calls) == MAX_RECOVERIES + 1


def test_other_errors_are_not_retried():
    def run(todo):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        stream_with_recovery(SHARDS, ShardLedger(), run)


def test_a_pipeline_that_ends_early_is_an_error():
    ledger = ShardLedger()

    def run(todo):
        ledger.take(part(todo[0].offset))

    with pytest.raises(RuntimeError, match="5 shards not taken"):
        stream_with_recovery(SHARDS, ledger, run)
