"""`sweep resume` after a driver was SIGKILLed while copying its experiment state to storage.

The state such a kill leaves (issue 11 point 3, round 6 of the 20-kill test): Tune copies its
staged files to storage with ``pyarrow.fs.copy_files``, which truncates each file and then
writes it, so the search algorithm's state on storage is left 0 bytes. Unrepaired, Tune fails
to read it, "restarts the experiment" with no param_space: trials with an empty config under
the old trials' ids (KeyError: 'seed'), the snapshot's trials dropped. Written here exactly, on
the storage a finished tiny sweep left (one of its trials marked still running in the snapshot,
as at the kill), then resumed through the product's resume function.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from cluster.errors import UserError
from cluster.specs.search_space import LogUniform, SearchSpace
from tests.mn_helpers import result_rows, tiny_sweep


def _trial_dirs(exp: Path) -> dict[str, list[dict]]:
    return {d.name: result_rows(d) for d in exp.iterdir() if (d / "params.json").is_file()}


def _as_driver(path: Path, data: bytes) -> None:
    """Write a state file as the sweep's driver does: signed with its key (cluster/tune/signing.py)."""
    from cluster.registry.record import default_home
    from cluster.tune.signing import KEY_FILE, signed_filesystem

    fs, root = signed_filesystem(str(path.parent), default_home() / KEY_FILE)
    with fs.open_output_stream(f"{root}/{path.name}") as f:
        f.write(data)


def _mark_running(snapshot: Path) -> str:
    """The snapshot as the killed driver had it: its first trial still running. Returns its id."""
    state = json.loads(snapshot.read_text())
    trial_json, meta = state["trial_data"][0]
    trial = json.loads(trial_json)
    trial["status"] = "RUNNING"
    state["trial_data"][0] = [json.dumps(trial), meta]
    _as_driver(snapshot, json.dumps(state).encode())
    return trial["trial_id"]


def _trainable(spec):
    from cluster.tune.setup import make_trainable
    from cluster.tune.trial import TrialContext
    from jobs.sweep import load_splits

    train, val, labels, _ = load_splits(spec)
    spec = spec.model_copy(update={"precision": "fp32", "evals_per_epoch": 1})
    return make_trainable(TrialContext(spec, spec.model, labels, train, val), cpus=1, gpus=0)


@pytest.mark.ray
def test_resume_after_a_kill_mid_copy_rebuilds_the_search_state(
    ray_cluster, tiny_model_dir, sample_dir, tmp_path
):
    import ray.cloudpickle as cloudpickle

    from cluster.tune.state import repair_experiment_state
    from jobs.sweep import resume_sweep, run_sweep

    storage = tmp_path / "store"
    spec = tiny_sweep(
        tiny_model_dir, sample_dir, storage, name="cut", max_concurrent_trials=1, max_train_rows=40, max_validation_rows=24,
        evals_per_epoch=1, search=SearchSpace(
            learning_rate=LogUniform(loguniform=[1e-4, 1e-3]), batch_size=16, epochs=1, max_length=32
        ),
    )  # fmt: skip
    run_sweep(spec)
    exp = storage / "cut"
    before = _trial_dirs(exp)
    errors = set(exp.glob("*/error.txt"))  # a trial the first run retried (under load) left one
    (snapshot,) = exp.glob("experiment_state-*.json")
    running = _mark_running(snapshot)
    (search_state,) = exp.glob("basic-variant-state-*.json")
    search_state.write_bytes(b"")  # what the kill mid-copy left

    summary = resume_sweep("cut", storage=str(storage))
    after = _trial_dirs(exp)
    params = {name: json.loads((exp / name / "params.json").read_text()) for name in after}
    outcome = f"trials before {sorted(before)}, after {sorted(after)}; running at the kill {running}"
    assert set(after) == set(before), outcome  # no new trial (directory), none dropped
    assert all(p.get("seed") is not None for p in params.values()), params  # no empty config
    assert {n: len(r) for n, r in after.items()} == {n: len(r) for n, r in before.items()}, outcome
    assert summary["trials"] == 2 and set(exp.glob("*/error.txt")) == errors, outcome  # none new
    assert search_state.stat().st_size > 0  # rebuilt in place

    # The kill came before the copy reached the search state: rebuilt too, named for the snapshot.
    newest = max(exp.glob("experiment_state-*.json"))  # the resumed driver's
    for f in exp.glob("basic-variant-state-*.json"):
        f.unlink()
    repair_experiment_state(spec, str(exp), _trainable(spec))
    rebuilt = exp / newest.name.replace("experiment_state-", "basic-variant-state-")
    state = cloudpickle.loads(rebuilt.read_bytes())  # what Tune restores: both trials drawn
    assert [it.counter for it in state["_iterators"]] == [2] and not state["_live_trials"], state

    # ... and when it is intact but from an earlier save than the snapshot (one trial drawn).
    state["_iterators"][0].counter = 1
    _as_driver(rebuilt, cloudpickle.dumps(state))
    repair_experiment_state(spec, str(exp), _trainable(spec))
    assert cloudpickle.loads(rebuilt.read_bytes())["_iterators"][0].counter == 2

    # The snapshot cut short: put back from the driver's staged copy (this machine ran it).
    newest.write_bytes(newest.read_bytes()[:100])
    resume_sweep("cut", storage=str(storage))
    assert _trial_dirs(exp).keys() == after.keys() and json.loads(newest.read_text())["trial_data"]

    # ... and when the staged copy is not here either: one clear line, before any trial starts.
    newest = max(exp.glob("experiment_state-*.json"))
    newest.write_bytes(newest.read_bytes()[:100])
    tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    staged = list(tmp.glob(f"session_*/artifacts/*/cut/driver_artifacts/{newest.name}"))
    assert staged, f"no staged copy of {newest.name} under {tmp}"
    for f in staged:
        f.unlink(missing_ok=True)  # session_latest links to this session: the same file twice
    with pytest.raises(UserError, match=r"experiment snapshot .*experiment_state-.* is damaged"):
        resume_sweep("cut", storage=str(storage))
    assert _trial_dirs(exp).keys() == after.keys()
