"""Checkpoint manifests: a resumed trial starts from the newest *complete* checkpoint on
storage (cluster/train/checkpoint.py), whatever was half copied or half deleted when a driver died."""

from __future__ import annotations

import json

import pyarrow.fs as pafs

from cluster.ray.view import work_kind
from cluster.train.checkpoint import MANIFEST, complete_checkpoints, write_manifest


def checkpoint(trial, index: int, step: int, payload: bytes = b"weights"):
    d = trial / f"checkpoint_{index:06d}"
    (d / "model").mkdir(parents=True)
    (d / "model" / "model.safetensors").write_bytes(payload)
    (d / "state.json").write_text(json.dumps({"step": step}))
    write_manifest(d, step=step, iteration=index + 1, metrics={"f1_macro": 0.5 + index / 10})
    return d


def test_newest_complete_checkpoint_first_and_incomplete_ones_skipped(tmp_path):
    trial = tmp_path / "trial"
    checkpoint(trial, 0, 10)
    checkpoint(trial, 1, 20)
    truncated = checkpoint(trial, 2, 30)
    (truncated / "model" / "model.safetensors").write_bytes(b"w")  # a copy cut short
    half_deleted = checkpoint(trial, 3, 40)
    (half_deleted / "state.json").unlink()
    no_manifest = checkpoint(trial, 4, 50)
    (no_manifest / MANIFEST).unlink()  # the manifest is written last: a copy not finished
    (trial / "checkpoint_tmp").mkdir()  # not a checkpoint name
    complete, highest = complete_checkpoints(pafs.LocalFileSystem(), str(trial))
    assert [(p.rsplit("/", 1)[1], m["step"], m["iteration"]) for p, m in complete] == [
        ("checkpoint_000001", 20, 2),
        ("checkpoint_000000", 10, 1),
    ]
    assert highest == 4  # a resumed trial numbers its next checkpoint past every directory present
    assert complete[0][1]["metrics"] == {"f1_macro": 0.6}


def test_a_trial_without_checkpoints_has_none(tmp_path):
    assert complete_checkpoints(pafs.LocalFileSystem(), str(tmp_path / "missing")) == ([], -1)


def test_work_kinds_by_actor_class():
    assert work_kind("ServeReplica:evalcluster:Scorer") == "serve replica"
    assert work_kind("MapWorker(MapBatches(ModelStage))") == "evaluation actor"  # Ray Data's actor class
    assert work_kind("WarmModel") == "warm model"
    assert work_kind("MapWorker(MapBatches(preprocess))") is None
    assert work_kind("SweepTrial") == "sweep trial"
    assert work_kind("sweep_trial_class.<locals>.SweepTrial") == "sweep trial"
    assert work_kind("SomeoneElsesActor") is None
