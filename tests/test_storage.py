"""Locations, the artifact store, the model cache and the --out lock, against moto's S3 (no Ray)."""

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from cluster.data.storage import check_location, join, resolve
from cluster.errors import UserError
from cluster.models.cache import ModelSource, cache_root, fetch_model, store_model
from cluster.registry.artifacts import ArtifactStore, dir_checksum, fetch_dir, publish, read_text
from tests.test_registry_cli import assert_user_error
from tests.test_registry_cli import cli as cli  # noqa: F401  (a fixture)


def test_locations_resolve_to_a_filesystem_and_a_path(tmp_path, s3_server):
    fs, path = resolve(str(tmp_path / "x.parquet"))
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "x.parquet")
    fs, path = resolve(f"file://{tmp_path}/x.parquet")
    assert isinstance(fs, pafs.LocalFileSystem) and path == f"{tmp_path}/x.parquet"
    fs, path = resolve("s3://evalcluster/data/x.parquet")
    assert isinstance(fs, pafs.S3FileSystem) and path == "evalcluster/data/x.parquet"
    # the endpoint comes from AWS_ENDPOINT_URL (pyarrow's S3FileSystem() alone would go to AWS)
    s3_server.write("probe/a.txt", b"hello")
    assert fs.open_input_stream("evalcluster/probe/a.txt").read() == b"hello"
    assert join("s3://b/p/", "runs", "r1") == "s3://b/p/runs/r1"
    assert join("/a/b", "runs", "r1") == "/a/b/runs/r1"


def test_credentials_inside_a_uri_are_refused_without_being_repeated():
    with pytest.raises(UserError, match=r"credentials inside a URI are refused") as err:
        check_location("s3://AKIAXXXX:sup3rsecret@bucket/data")
    assert "sup3rsecret" not in str(err.value) and "AKIAXXXX" not in str(err.value)
    with pytest.raises(UserError, match="credentials inside a URI"):
        resolve("s3://key:secret@bucket/x")


def test_publish_then_fetch_gives_the_same_files_and_checksum(tmp_path, s3_server):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text('{"a": 1}')
    (src / "sub" / "b.bin").write_bytes(os.urandom(3000))
    dest = "s3://evalcluster/t-publish/run1"
    publish(src, dest, last="a.json")
    assert s3_server.keys("t-publish/") == ["t-publish/run1/a.json", "t-publish/run1/sub/b.bin"]
    assert read_text(join(dest, "a.json")) == '{"a": 1}'
    fetch_dir(dest, tmp_path / "back")
    assert dir_checksum(tmp_path / "back") == dir_checksum(src)
    (tmp_path / "back" / "a.json").write_text('{"a": 2}')  # any change changes the checksum
    assert dir_checksum(tmp_path / "back") != dir_checksum(src)


def _model_dir(root: Path) -> Path:
    d = root / "model"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (d / "model.safetensors").write_bytes(os.urandom(5000))
    return d


def test_a_stored_model_is_downloaded_once_per_node_and_verified(tmp_path, s3_server, monkeypatch):
    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://evalcluster/t-cache")
    store = ArtifactStore.from_env(tmp_path)
    src = _model_dir(tmp_path)

    def copy(out: Path) -> Path:
        import shutil

        return Path(shutil.copytree(src, out))

    location, checksum = store_model(copy, "m-cache-1", store, tmp_path / "staging")
    assert location == "s3://evalcluster/t-cache/models/m-cache-1" and checksum == dir_checksum(src)
    assert not any((tmp_path / "staging").iterdir())  # the staging copy is gone
    first, got = fetch_model(ModelSource(location, "m-cache-1", checksum))
    assert first == cache_root() / "models" / "m-cache-1" and got == checksum
    s3_server.write("t-cache/models/m-cache-1/model.safetensors", b"tampered")
    again, _ = fetch_model(ModelSource(location, "m-cache-1", checksum))  # the verified copy: no download
    assert again == first and dir_checksum(again) == checksum
    with pytest.raises(UserError, match=r"does not match the checksum recorded at registration") as err:
        fetch_model(ModelSource(location, "m-cache-2", checksum))  # another node's first download
    assert "nothing was loaded" in str(err.value)
    assert not (cache_root() / "models" / "m-cache-2").exists()
    assert sorted(p.name for p in (cache_root() / "models").iterdir() if not p.name.endswith(".lock")) == [
        "m-cache-1",
        "m-cache-1.verified",
    ]


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("no bucket", "bucket no-such-bucket does not exist"),
        ("no credentials", "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ("wrong secret", "access denied for these credentials"),
    ],
)
def test_an_unwritable_store_is_one_clear_line(tmp_path, s3_server, monkeypatch, case, fragment):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials
    monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://evalcluster/t-bad")
    if case == "no bucket":
        monkeypatch.setenv("EVALCLUSTER_ARTIFACTS", "s3://no-such-bucket/x")
    elif case == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    else:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(UserError) as err:
        ArtifactStore.from_env(tmp_path).check_writable()
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert s3_server.secret_key not in str(err.value)


# ------------------------------------------------------------------ --out lock (issue 16.6)


def _hold(directory: str, run_id: str, hold_s: float, started, results) -> None:
    from cluster.registry.outlock import hold

    started.wait(60)
    try:
        with hold(Path(directory), run_id):
            results.put(("held", run_id, time.time()))
            time.sleep(hold_s)
            results.put(("released", run_id, time.time()))
    except UserError as exc:
        results.put(("refused", run_id, str(exc)))


@pytest.mark.heavy  # several processes
def test_concurrent_writers_one_holds_the_others_are_refused(tmp_path):
    from cluster.registry.outlock import LOCK_FILE

    ctx = mp.get_context("fork")
    started, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_hold, args=(str(tmp_path), f"run-{i}", 3.0, started, results)) for i in range(6)
    ]
    for p in procs:
        p.start()
    started.set()
    events = [results.get(timeout=60) for _ in range(7)]  # 1 held + 5 refused + 1 released
    for p in procs:
        p.join(60)
    held = [e for e in events if e[0] == "held"]
    refused = [e for e in events if e[0] == "refused"]
    assert len(held) == 1 and len(refused) == 5, events
    for _, _, message in refused:
        assert f"is in use by run {held[0][1]}" in message and "\n" not in message
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    from cluster.registry.heartbeat import owner_process
    from cluster.registry.outlock import LOCK_FILE, hold
    from cluster.registry.record import now

    ctx = mp.get_context("fork")
    dead = ctx.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    host, _ = owner_process()
    (tmp_path / LOCK_FILE).write_text(
        json.dumps({"run_id": "r-dead", "host": host, "pid": dead.pid, "since": now()})
    )
    with hold(tmp_path, "r-new"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == "r-new"
    live = {"run_id": "r-live", "host": host, "pid": os.getpid(), "since": now()}
    (tmp_path / LOCK_FILE).write_text(json.dumps(live))
    with (
        pytest.raises(UserError, match=f"in use by run r-live \\(pid {os.getpid()} on {host}"),
        hold(tmp_path, "r-2"),
    ):
        pass


@pytest.mark.cli
def test_evaluate_into_a_directory_another_writer_holds_is_refused(tmp_path, tiny_model_dir, sample_dir, cli):
    import signal
    import subprocess
    import sys

    from cluster.registry.record import Registry

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ("evaluate", "--model", tiny_model_dir, "--data", sample_dir / "test.parquet", "--out", out)
        proc = cli(*args, "--overwrite", "--limit", "20")
        assert_user_error(proc, f"--out {out} is in use by run evaluate-holder (pid {holder.pid} on")
        assert Registry().list_runs() == []  # refused before anything was recorded
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)


HOLDER = """
import sys, time
from pathlib import Path
from cluster.registry.outlock import hold
with hold(Path(sys.argv[1]), "evaluate-holder"):
    print("held", flush=True)
    time.sleep(600)
"""
