"""A registry database that goes away at the final write (issue 28, point 7).

A finished evaluation lost its record when PostgreSQL restarted (7 s) during the final
write: no retry. Now a write is retried with bounded backoff while the server is
unreachable; if it stays away, the outputs stay where they are with a note of the record
they are owed, and `evalctl runs record DIR` writes it once the server is back.
"""

import json
import threading
import time

import pytest

import cluster.evaluation.run as ev
from cluster.errors import UserError
from cluster.registry.deferred import PENDING, RecordLater, finish_or_keep
from cluster.registry.record import Registry
from tests.pg import PostgresServer


@pytest.fixture(scope="module")
def own_server():
    """A server of this module's own: its tests stop and restart it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def registry(own_server, monkeypatch, evalcluster_home):
    name = own_server.create_database()
    monkeypatch.setenv("EVALCLUSTER_DB", own_server.url(name))
    reg = Registry()
    yield reg
    reg.close()
    own_server.drop_database(name)


def outputs(tmp_path, run_id: str):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"run_id": run_id, "accuracy": 0.9}))
    (out / "predictions.parquet").write_bytes(b"PAR1")
    return out


def test_a_write_during_a_restart_waits_for_the_server(registry, own_server, tmp_path):
    run_id = registry.start_run("evaluate", {"x": 1})
    restarted = threading.Event()

    def restart():
        own_server.pause()
        time.sleep(4)  # the outage was 7 s; the default retry budget is 30 s
        own_server.resume()
        restarted.set()

    outage = threading.Thread(target=restart)
    outage.start()
    time.sleep(1)  # the server is down now
    registry.finish_run(run_id, metrics={"accuracy": 0.9}, artifact_path=str(tmp_path))
    outage.join()
    assert restarted.is_set()
    run = registry.get_run(run_id)
    assert run["status"] == "finished" and run["metrics"] == {"accuracy": 0.9}


def test_a_database_that_stays_away_keeps_the_outputs_for_runs_record(
    registry, own_server, tmp_path, monkeypatch, evalctl
):
    monkeypatch.setenv("EVALCLUSTER_DB_RETRY_S", "2")
    run_id = registry.start_run("evaluate", {"x": 1})
    out = outputs(tmp_path, run_id)
    own_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RecordLater) as err:
            finish_or_keep(registry, run_id, {"accuracy": 0.9}, str(out))
        assert 2 <= time.monotonic() - started < 30  # retried for the budget, then told
    finally:
        own_server.resume()
    msg = str(err.value)
    assert "\n" not in msg and "stayed unreachable" in msg and f"evalctl runs record {out}" in msg, msg
    assert isinstance(err.value, UserError)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.parquet", PENDING]
    assert registry.get_run(run_id)["status"] == "running"  # not marked failed: it finished
    proc = evalctl("runs", "record", out)
    assert proc.returncode == 0, proc.stderr
    assert f"recorded run {run_id}" in proc.stdout
    run = registry.get_run(run_id)
    assert run["status"] == "finished" and run["metrics"] == {"accuracy": 0.9}
    assert run["artifact_path"] == str(out) and not (out / PENDING).exists()
    again = evalctl("runs", "record", out)
    assert again.returncode == 2 and f"{out} has no record waiting" in again.stderr


def test_the_registry_run_block_does_not_fail_a_run_kept_for_later(
    registry, own_server, tmp_path, monkeypatch
):
    """Registry.run marks a run failed when its block raises; not when the run finished and only its
    record waits (RecordLater): `runs record` could not finish a failed run."""
    monkeypatch.setenv("EVALCLUSTER_DB_RETRY_S", "1")
    with pytest.raises(RecordLater), registry.run("evaluate", {"x": 1}) as run_id:
        out = outputs(tmp_path, run_id)
        own_server.pause()
        try:
            finish_or_keep(registry, run_id, {"accuracy": 0.9}, str(out))
        finally:
            own_server.resume()
    assert registry.get_run(run_id)["status"] == "running" and (out / PENDING).exists()


@pytest.mark.ray
def test_an_evaluation_whose_final_write_finds_no_database_keeps_its_outputs(
    ray_cluster, registry, own_server, sample_dir, tiny_model_dir, tmp_path, monkeypatch
):
    """The issue's case end to end: the server goes away once the artifacts are published, before
    the run's final write; the evaluation says how to record it, and `runs record` does."""
    from cluster.registry.deferred import record_pending
    from cluster.specs.workloads import DataSpec, EvaluateSpec

    monkeypatch.setenv("EVALCLUSTER_DB_RETRY_S", "2")
    published = ev.publish

    def publish_then_outage(*args, **kwargs):
        published(*args, **kwargs)
        own_server.pause()

    monkeypatch.setattr(ev, "publish", publish_then_outage)
    out = tmp_path / "out"
    spec = EvaluateSpec(
        model=str(tiny_model_dir), data=DataSpec(path=str(sample_dir / "test.parquet")), out=str(out),
        limit=64, bootstrap=0, threshold=False, mistakes=0,
    )  # fmt: skip
    try:
        with pytest.raises(
            RecordLater, match=f"record it once the database is back with `evalctl runs record {out}`"
        ):
            ev.run_evaluate(spec, registry)
    finally:
        own_server.resume()
    assert {"metrics.json", "predictions", "report.html", PENDING} <= {p.name for p in out.iterdir()}
    (run,) = registry.list_runs()
    assert run["status"] == "running"  # not failed: it finished; its record waits
    assert record_pending(registry, str(out)) == run["id"]
    done = registry.get_run(run["id"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert done["status"] == "finished" and done["artifact_path"] == str(out)
    assert done["metrics"]["accuracy"] == metrics["accuracy"] and done["metrics"]["n"] == 64
