"""A sweep's progress: trials ended of the trials the search makes, written with its heartbeat."""

import pickle
from types import SimpleNamespace

import pytest

from cluster.registry.record import Registry
from cluster.tune.callbacks import TrialsProgress, trials_progress
from jobs.sweep import run_sweep
from tests.test_sweep import tiny_spec


def test_trials_progress_counts_ended_trials_and_pickles_without_its_driver():
    told = []
    callback = TrialsProgress("s")
    trials = [SimpleNamespace(status=s) for s in ("RUNNING", "PENDING", "TERMINATED")]
    callback.setup(total_num_samples=3)  # no driver listening yet: nothing told, nothing raised
    with trials_progress("s", lambda done, total: told.append((done, total))):
        callback.setup(total_num_samples=3)
        callback.on_step_end(1, trials)
        callback.on_step_end(2, trials)  # unchanged: not told again
        trials[0].status = "ERROR"  # failed for good: it will not run again either
        callback.on_experiment_end(trials)
        restored = pickle.loads(pickle.dumps(callback))  # tuner.pkl: a resumed driver's copy
        restored.setup(total_num_samples=3)
        restored.on_step_end(1, trials)
    callback.on_step_end(3, [SimpleNamespace(status="TERMINATED")] * 3)  # the driver's block ended
    assert told == [(0, 3), (1, 3), (2, 3), (0, 3), (2, 3)]
    assert vars(pickle.loads(pickle.dumps(callback))) == vars(TrialsProgress("s"))


@pytest.mark.ray
def test_a_sweep_records_trials_ended_of_its_total(ray_cluster, tiny_model_dir, sample_dir, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_HEARTBEAT_S", "0.2")
    written, beat = [], Registry.beat

    def beating(self, run_id):
        alive = beat(self, run_id)
        if alive:  # what the heartbeat wrote, read back while the sweep runs
            written.append(self.get_run(run_id)["progress"])
        return alive

    monkeypatch.setattr(Registry, "beat", beating)
    summary = run_sweep(tiny_spec(tiny_model_dir, sample_dir, name="progress"))
    run = Registry().get_run(summary["run_id"])
    assert run["status"] == "finished" and run["progress"] == {"done": 2, "total": 2, "unit": "trials"}
    seen = [p for p in written if p]
    assert seen and seen[0]["total"] == 2 and seen[0]["unit"] == "trials"
    assert [p["done"] for p in seen] == sorted(p["done"] for p in seen)
