"""The shared PostgreSQL registry under load: 16 writer processes on two "machines" at once."""

import pytest

from cluster.registry.record import Registry
from tests.registry_helpers import start_writer, writers_context

WRITERS_PER_MACHINE = 8
RUNS_PER_WRITER = 10


def _writer(home, i, barrier):
    """One process of one machine: runs started and finished, a model, aliases moved back and forth."""
    reg = Registry(home)
    reg.list_runs(limit=1)  # opened (schema checked or created) before the race starts
    barrier.wait(120)
    model = reg.register_model(f"/models/w{i}", model_id=f"m-writer-{i:02d}")
    for j in range(RUNS_PER_WRITER):
        run_id = reg.start_run("evaluate", {"i": i, "j": j}, owner=f"w{i}", model_id=model)
        reg.set_alias("best", model)
        reg.set_alias(f"w{i}", model)
        reg.finish_run(run_id, metrics={"i": i, "j": j})
        reg.set_alias("serving", "best")


@pytest.mark.heavy  # sixteen writer processes
def test_sixteen_writers_on_two_machines_lose_nothing(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_DB", pg_url)  # passed on to the writers
    ctx = writers_context()
    writers = 2 * WRITERS_PER_MACHINE
    barrier = ctx.Barrier(writers)
    homes = [tmp_path / "machine-a", tmp_path / "machine-b"]  # different EVALCLUSTER_HOMEs, one database
    procs = [start_writer(_writer, str(homes[i % 2]), i, barrier) for i in range(writers)]
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * writers
    for home in homes:
        assert not (home / "registry.db").exists()  # nobody fell back to a local file
    reg = Registry(homes[0])
    runs = reg.list_runs()
    assert len(runs) == writers * RUNS_PER_WRITER == len({r["id"] for r in runs})
    assert all(r["status"] == "finished" for r in runs)
    assert sorted((r["metrics"]["i"], r["metrics"]["j"]) for r in runs) == [
        (i, j) for i in range(writers) for j in range(RUNS_PER_WRITER)
    ]
    models = {m["id"] for m in reg.list_models()}
    assert models == {f"m-writer-{i:02d}" for i in range(writers)}
    for i in range(writers):
        assert reg.resolve_model(f"w{i}")["id"] == f"m-writer-{i:02d}"
    assert reg.resolve_model("best")["id"] in models and reg.resolve_model("serving")["id"] in models
    assert Registry(homes[1]).list_runs() == runs  # the other machine sees the same record
