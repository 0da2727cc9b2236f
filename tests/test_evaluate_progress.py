"""An evaluation's progress: rows in part files of the rows planned, written with its heartbeat."""

import pytest

from cluster.evaluation.run import run_evaluate
from cluster.registry.record import Registry
from tests.test_evaluate import spec_for, tweets  # noqa: F401 - tweets: the module's data fixture


@pytest.mark.ray
def test_an_evaluation_reports_rows_while_it_runs_and_ends_at_the_total(
    ray_cluster,
    tweets,  # noqa: F811 - the fixture imported above
    tiny_model_dir,
    tmp_path,
    monkeypatch,  # noqa: F811
):
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.1")
    told, written = [], []
    set_progress, beat = Registry.set_progress, Registry.beat

    def telling(self, run_id, done, total=None, unit="rows"):
        told.append((done, total, unit))
        set_progress(self, run_id, done, total, unit)

    def beating(self, run_id):
        alive = beat(self, run_id)
        if alive:  # what the heartbeat wrote, read back while the run runs
            written.append(self.get_run(run_id)["progress"])
        return alive

    monkeypatch.setattr(Registry, "set_progress", telling)
    monkeypatch.setattr(Registry, "beat", beating)
    spec = spec_for(
        tweets[0], tmp_path / "out", model=str(tiny_model_dir), rows_per_shard=50, sort_rows=50, bootstrap=0
    )
    result = run_evaluate(spec)
    run = Registry().get_run(result.run_id)
    assert run["status"] == "finished" and run["progress"] == {"done": 300, "total": 300, "unit": "rows"}
    assert told[0] == (0, 300, "rows") and told[-1] == (300, 300, "rows")
    done = [d for d, _, _ in told]
    assert done == sorted(done) and all(t == 300 and u == "rows" for _, t, u in told)
    assert all(d % 50 == 0 for d in done), done  # whole part files (blocks of 50 rows) only
    seen = [p for p in written if p is not None]  # beats before the pipeline started carry none
    assert seen and seen[0] == {"done": 0, "total": 300, "unit": "rows"}  # by a beat, while running
    assert [p["done"] for p in seen] == sorted(p["done"] for p in seen)
