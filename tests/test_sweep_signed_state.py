"""Tune's pickled sweep state is signed by the driver that writes it and checked before anything
reads it (issue 28, point 8: a planted tuner.pkl executed code on `sweep resume`)."""

from __future__ import annotations

import json
import os
import pickle
import stat

import pyarrow.fs as pafs
import pytest

from cluster.errors import UserError
from cluster.registry.record import Registry
from cluster.specs.workloads import DataSpec, SweepSpec
from cluster.tune import signing
from cluster.tune.signing import KEY_FILE, LEDGER, UnsignedState, signed_filesystem
from jobs.sweep import SPEC_FILE, resume_sweep


class Planted:
    """Unpickling it runs code: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mknod, (self.marker,))


def write(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def read(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.readall()


def test_state_files_are_signed_when_written_and_checked_when_read(tmp_path):
    key = tmp_path / "home" / KEY_FILE
    fs, root = signed_filesystem(str(tmp_path / "exp"), key)
    fs.create_dir(root)
    write(fs, f"{root}/tuner.pkl", b"v1")
    write(fs, f"{root}/result.json", b"{}")  # not pickled state: passes through, unsigned
    assert read(fs, f"{root}/tuner.pkl") == b"v1" and read(fs, f"{root}/result.json") == b"{}"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    ledger = json.loads((tmp_path / "exp" / LEDGER).read_text())
    assert list(ledger) == ["tuner.pkl"] and key.read_bytes().hex() not in pickle.dumps(fs).hex()
    write(fs, f"{root}/tuner.pkl", b"v2")
    (tmp_path / "exp" / "tuner.pkl").write_bytes(b"v1")  # a kill after the ledger, before the file
    assert read(fs, f"{root}/tuner.pkl") == b"v1"
    plain = pafs.LocalFileSystem()
    for rel, data in [("tuner.pkl", b"v3"), ("experiment_state-2099.json", b"{}"), ("t1/error.pkl", b"x")]:
        (tmp_path / "exp" / rel).parent.mkdir(exist_ok=True)
        write(plain, f"{root}/{rel}", data)  # written by someone else: altered, or planted
        with pytest.raises(UnsignedState, match=f"{rel}: its {len(data)} bytes are not what this sweep"):
            read(fs, f"{root}/{rel}")
    # Tune's sync copies its staged directory with pyarrow: each state file is signed on the way
    staged = tmp_path / "staged"
    (staged / "t2").mkdir(parents=True)
    (staged / "experiment_state-2100.json").write_bytes(b'{"trial_data": []}')
    (staged / "t2" / "error.pkl").write_bytes(b"err")
    pafs.copy_files(str(staged), root, source_filesystem=plain, destination_filesystem=fs)
    assert read(fs, f"{root}/experiment_state-2100.json") == b'{"trial_data": []}'
    assert read(fs, f"{root}/t2/error.pkl") == b"err"


@pytest.fixture
def victim(tmp_path, tiny_model_dir, sample_dir):
    """A sweep's storage as `sweep resume` finds it: its spec file, a signed tuner.pkl."""
    registry, storage = Registry(), tmp_path / "store"
    data = DataSpec(path=str(sample_dir / "validation.parquet"))
    spec = SweepSpec(name="victim", model=str(tiny_model_dir), train=data, validation=data,
                     storage_path=str(storage), num_samples=1)  # fmt: skip
    run_id = registry.start_run("sweep", spec.model_dump(mode="json"), name="victim")
    exp = storage / "victim"
    exp.mkdir(parents=True)
    fs, root = signed_filesystem(str(exp), registry.home / KEY_FILE)
    write(
        fs,
        f"{root}/{SPEC_FILE}",
        json.dumps({"spec": spec.model_dump(mode="json"), "run_id": run_id}).encode(),
    )
    write(fs, f"{root}/tuner.pkl", pickle.dumps({"a": "tuner state"}))
    return registry, storage, exp, run_id


def test_a_planted_tuner_pkl_is_refused_before_anything_loads_it(victim, tmp_path):
    registry, storage, exp, run_id = victim
    marker = tmp_path / "planted-code-ran"
    (exp / "tuner.pkl").write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(UserError) as err:
        resume_sweep("victim", registry, storage=str(storage))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("sweep victim: ") and "tuner.pkl: its" in msg, msg
    assert "not resumed (Tune would unpickle it)" in msg
    assert not marker.exists()
    assert registry.get_run(run_id)["status"] == "running"  # refused before anything was recorded


def test_an_altered_spec_file_is_refused(victim):
    """The sweep's spec file says what a resume runs (its model, data, storage): signed too."""
    registry, storage, exp, run_id = victim
    saved = json.loads((exp / SPEC_FILE).read_text())
    saved["spec"]["model"] = "/elsewhere/model"
    (exp / SPEC_FILE).write_text(json.dumps(saved))
    with pytest.raises(UserError, match=f"sweep victim: .*{SPEC_FILE}: its .* bytes are not what this sweep"):
        resume_sweep("victim", registry, storage=str(storage))
    assert registry.get_run(run_id)["status"] == "running"
    assert SPEC_FILE == signing.SPEC_FILE  # jobs/sweep.py's name for it is the one signed


def test_unsigned_state_and_a_missing_key_are_refused(victim, tmp_path):
    registry, storage, exp, _ = victim
    (registry.home / KEY_FILE).rename(tmp_path / "elsewhere.key")
    with pytest.raises(UserError, match=f"this machine has no {registry.home / KEY_FILE}: resume it there"):
        resume_sweep("victim", registry, storage=str(storage))
    (exp / LEDGER).unlink()
    with pytest.raises(UserError, match=f"holds no {LEDGER}: its pickled state was not signed"):
        resume_sweep("victim", registry, storage=str(storage))


def test_signing_works_on_an_object_store(s3_server, tmp_path):
    """Sweep storage may be a bucket: the ledger is written whole (a PUT), reads are checked."""
    key = tmp_path / KEY_FILE
    fs, root = signed_filesystem(f"s3://{s3_server.bucket}/signed-{os.getpid()}/exp", key)
    write(fs, f"{root}/searcher-state-1.pkl", b"state")
    assert read(fs, f"{root}/searcher-state-1.pkl") == b"state"
    write(fs.handler.inner, f"{root}/searcher-state-1.pkl", b"planted")
    with pytest.raises(UnsignedState, match="searcher-state-1.pkl: its 7 bytes"):
        read(fs, f"{root}/searcher-state-1.pkl")
