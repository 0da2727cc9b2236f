"""The SQLite registry: atomic transitions, aliases, concurrent writers."""

import multiprocessing as mp

import pytest

from cluster.errors import UserError
from cluster.registry import Registry


def test_run_lifecycle_and_immutability(tmp_path):
    reg = Registry(tmp_path)
    run_id = reg.start_run("evaluate", {"model": "x"}, owner="ana", dataset_fingerprint="fp1")
    assert reg.get_run(run_id)["status"] == "running"
    reg.finish_run(run_id, metrics={"accuracy": 0.5}, artifact_path="/a")
    run = reg.get_run(run_id[:-2])  # unique prefix works
    assert run["status"] == "finished" and run["metrics"] == {"accuracy": 0.5}
    assert run["owner"] == "ana" and run["versions"]["ray"].startswith("2.60")
    with pytest.raises(RuntimeError, match="immutable"):
        reg.finish_run(run_id, metrics={"accuracy": 1.0})
    reg.fail_run(run_id, "late failure")  # ignored: finished stays finished
    assert reg.get_run(run_id)["metrics"] == {"accuracy": 0.5}


def test_failed_block_marks_run_failed(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(ValueError), reg.run("evaluate", {}) as run_id:
        raise ValueError("boom")
    run = reg.get_run(run_id)
    assert run["status"] == "failed" and "boom" in run["error"] and run["metrics"] is None


def test_aliases_and_resolution(tmp_path):
    reg = Registry(tmp_path)
    m1 = reg.register_model("/m1", base_model="base")
    m2 = reg.register_model("/m2", base_model="base")
    reg.set_alias("best", m1)
    reg.set_alias("serving", "best")
    assert reg.resolve_model("serving")["id"] == m1
    reg.set_alias("best", m2)
    assert reg.resolve_model("best")["path"] == "/m2"
    assert reg.resolve_model("nothing") is None
    with pytest.raises(UserError, match='no registered model "bets" \\(did you mean "best"'):
        reg.set_alias("x", "bets")
    assert {m["id"]: m["aliases"] for m in reg.list_models()}[m2] == "best"


def test_unknown_run(tmp_path):
    with pytest.raises(UserError, match='no run "nope"'):
        Registry(tmp_path).get_run("nope")


def _writer(home, i):
    reg = Registry(home)
    for j in range(5):
        rid = reg.start_run("evaluate", {"i": i, "j": j}, owner=f"w{i}")
        reg.finish_run(rid, metrics={"i": i, "j": j})


def test_eight_processes_write_at_once_and_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    runs = Registry(tmp_path).list_runs()
    assert len(runs) == 40 and all(r["status"] == "finished" for r in runs)
    assert {(r["metrics"]["i"], r["metrics"]["j"]) for r in runs} == {
        (i, j) for i in range(8) for j in range(5)
    }
