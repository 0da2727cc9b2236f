"""A trial resumed after its driver died right after the trial's LAST checkpoint was written.

The moment (issue 11 point 3, seen in round 5 of the 20-kill test): the trial writes its
final checkpoint inside ``tune.report`` and the driver is killed before it records that
report. The restarted trial finds the final checkpoint on storage, so it has no step left to
train; it must still report that last validation once, and nothing else. Played here with
the product's trainable class (cluster/tune/trial.py) and checkpoint code, in this process, on
storage the first run left: no driver, so no race to win.
"""

from __future__ import annotations

import json

import pytest

from cluster.specs.search_space import SearchSpace
from tests.mn_helpers import tiny_sweep

# 40 training rows, batch 16: 3 steps; validations after steps 1, 2 and 3 (evals_per_epoch 3).
ROWS, EVALS = 40, 3


def _trial(spec, storage_root):
    """A fresh instance of the sweep's trainable class on the trial directory ``storage_root/exp/t``
    (what a trial actor holds after a (re)start)."""
    from ray.train._internal.storage import StorageContext

    from cluster.tune.search import param_space
    from cluster.tune.setup import make_trainable
    from cluster.tune.trial import TrialContext
    from jobs.sweep import load_splits

    train, val, labels, _ = load_splits(spec)
    spec = spec.model_copy(update={"precision": "fp32", "evals_per_epoch": EVALS})
    cls = make_trainable(TrialContext(spec, spec.model, labels, train, val), cpus=1, gpus=0)
    storage = StorageContext(storage_path=str(storage_root), experiment_dir_name="exp", trial_dir_name="t")
    return cls(config={**param_space(spec), "seed": 0}, storage=storage)


def _run_to_end(trial) -> list[dict]:
    """train() until the trial is done; the results Tune's driver would record (not the
    function's closing duplicate, which Tune never logs)."""
    from ray.tune.result import RESULT_DUPLICATE

    results = []
    for _ in range(2 * EVALS + 2):
        result = trial.train()
        if RESULT_DUPLICATE in result:  # the function returned (Tune's controller would stop it)
            trial.stop()
            return results
        results.append(result)
    raise AssertionError(f"the trial did not end: {results}")


def _named(result: dict, path: str):
    """The checkpoint result a driver that recorded ``result`` hands to the restarted trial."""
    import pyarrow.fs as pafs
    from ray.train import Checkpoint
    from ray.train._internal.checkpoint_manager import _TrainingResult

    return _TrainingResult(checkpoint=Checkpoint(path, filesystem=pafs.LocalFileSystem()), metrics=result)


KEYS = ("step", "epoch", "training_iteration", "accuracy", "macro_f1", "node_id")


@pytest.mark.ray
def test_driver_killed_after_the_last_checkpoint_the_resumed_trial_reports_it_once(
    ray_cluster, tiny_model_dir, sample_dir, tmp_path
):
    import pyarrow.fs as pafs

    from cluster.train.checkpoint import complete_checkpoints

    spec = tiny_sweep(
        tiny_model_dir, sample_dir, tmp_path, max_train_rows=ROWS, max_validation_rows=24,
        evals_per_epoch=EVALS, search=SearchSpace(learning_rate=1e-4, batch_size=16, epochs=1, max_length=32),
    )  # fmt: skip
    first = _run_to_end(_trial(spec, tmp_path))
    ckpts, _ = complete_checkpoints(pafs.LocalFileSystem(), str(tmp_path / "exp" / "t"))
    assert [r["step"] for r in first] == [1, 2, 3] and len(ckpts) == 3, (first, ckpts)
    (last_path, last), (before_path, _) = ckpts[0], ckpts[1]
    assert last["step"] == 3

    # The driver recorded the second report (its checkpoint is the one it names), not the third.
    resumed = _run_to_end(_restarted(spec, tmp_path, _named(first[1], before_path)))
    outcome = f"first run {[r['step'] for r in first]}; after the resume {resumed}"
    assert len(resumed) == 1, outcome  # the lost report, once; no step trained again
    got, want = resumed[0], first[2]
    assert {k: got.get(k) for k in KEYS} == {k: want.get(k) for k in KEYS}, outcome  # the same row

    # The driver recorded the last report too: nothing is reported again.
    again = _run_to_end(_restarted(spec, tmp_path, _named(first[2], last_path)))
    assert again == [], f"a recorded report was sent again: {again}"

    # The driver's snapshot names the second report's checkpoint, but its result.json on storage
    # already holds the third (Tune's background copy ran ahead of the snapshot): not sent again.
    rows = [{"training_iteration": r["training_iteration"], "step": r["step"]} for r in first]
    (tmp_path / "exp" / "t" / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ahead = _run_to_end(_restarted(spec, tmp_path, _named(first[1], before_path)))
    assert ahead == [], f"a report result.json holds was sent again: {ahead}"


def _restarted(spec, storage_root, named):
    trial = _trial(spec, storage_root)
    trial.restore(named)
    return trial


@pytest.mark.ray
def test_a_damaged_checkpoint_is_skipped_loudly_and_recorded(
    ray_cluster, tiny_model_dir, sample_dir, tmp_path, caplog
):
    """issue 28, point 9: a trial whose checkpoints were damaged started over silently (its
    result.json held iteration 1 twice): now warned, recorded in the trial's directory, and
    said in the sweep's summary."""
    import pyarrow.fs as pafs

    from cluster.train.checkpoint import complete_checkpoints
    from cluster.tune.export import damaged_lines
    from cluster.tune.trial import resume_notes

    spec = tiny_sweep(
        tiny_model_dir, sample_dir, tmp_path, max_train_rows=ROWS, max_validation_rows=24,
        evals_per_epoch=EVALS, search=SearchSpace(learning_rate=1e-4, batch_size=16, epochs=1, max_length=32),
    )  # fmt: skip
    first = _run_to_end(_trial(spec, tmp_path))
    trial_dir, fs = tmp_path / "exp" / "t", pafs.LocalFileSystem()
    ckpts, _ = complete_checkpoints(fs, str(trial_dir))
    (newest, _), (older, _), (oldest, _) = ckpts
    weights = next(p for p in (trial_dir / newest).rglob("*.safetensors") if "model" in p.parts)
    weights.write_bytes(weights.read_bytes()[:1000])  # damaged: cut short
    resumed = _run_to_end(_restarted(spec, tmp_path, _named(first[2], newest)))
    # from the one before: its report sent again (no driver recorded it here), the last step again
    assert [r["step"] for r in resumed] == [2, 3]
    (note,) = resume_notes(fs, str(trial_dir))
    size = (trial_dir / newest / "evalcluster_checkpoint.json").read_text()
    assert note["resumed_from"] == (trial_dir / older).name and str(weights.stat().st_size) in str(note)
    why = note["skipped"][0]["why"]
    assert note["skipped"][0]["checkpoint"] == (trial_dir / newest).name and "its manifest says" in why, size
    assert f"skipped ({why}); resuming from {(trial_dir / older).name}" in caplog.text

    # Every checkpoint damaged: the trial starts over, and says so (was: silently, iteration 1 again).
    for ckpt, _ in complete_checkpoints(fs, str(trial_dir))[0]:
        (trial_dir / ckpt / "evalcluster_checkpoint.json").unlink()
    again = _run_to_end(_restarted(spec, tmp_path, _named(first[2], newest)))
    assert [r["step"] for r in again] == [1, 2, 3]
    notes = resume_notes(fs, str(trial_dir))
    assert len(notes) == 2 and notes[-1]["resumed_from"] is None
    assert "no usable checkpoint: it starts over" in caplog.text
    detail = {"trial_id": "t", "skipped_checkpoints": notes}
    lines = damaged_lines([detail])
    assert lines[0].startswith(f"trial t: skipped {(trial_dir / newest).name} (") and lines[0].endswith(
        f"resumed from {(trial_dir / older).name}"
    )
    assert "no evalcluster_checkpoint.json" in lines[1] and lines[1].endswith("; started over")
