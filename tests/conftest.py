"""Shared fixtures: an isolated registry per test, a tiny random BERT, one local Ray.

Plumbing tests use a tiny randomly initialised BERT (built from a BertConfig,
with the base model's tokenizer) so they run in seconds; quality is not their
business. Tiers (markers): ``ray`` starts Ray (a test without it that calls
ray.init fails), ``cli`` runs evalctl in a subprocess, ``head`` starts and stops
a real `ray start --head` (moved to the front of the run because `ray stop` ends
every Ray process on the machine, the shared test cluster included), ``heavy``
(CPU-heavy without Ray), ``slow`` and ``real_model``. Unmarked tests are the fast
tier (`make test-fast`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["negative", "neutral", "positive"]

# Tests and the Ray workers they start never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("RAY_ADDRESS", None)


def pytest_collection_modifyitems(items):
    # `head` tests first (`ray stop` ends every Ray process); then `multinode` tests, whose
    # clusters must start before this process joins the shared local Ray (`ray_cluster`).
    items.sort(
        key=lambda item: (
            0 if item.get_closest_marker("head") else 1 if item.get_closest_marker("multinode") else 2
        )
    )


@pytest.fixture(autouse=True)
def ray_only_when_marked(request, monkeypatch):
    """Tests not marked ``ray``, ``head`` or ``multinode`` must not start Ray (they form the fast tier)."""
    if any(request.node.get_closest_marker(m) for m in ("ray", "head", "multinode")):
        return
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts Ray: mark it @pytest.mark.ray")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(autouse=True)
def evalcluster_home(tmp_path, monkeypatch):
    """Every test gets its own EVALCLUSTER_HOME (registry + artifacts)."""
    home = tmp_path / "home"
    monkeypatch.setenv("EVALCLUSTER_HOME", str(home))
    # never a developer's shared registry or artifact store
    for var in ("EVALCLUSTER_DB", "EVALCLUSTER_DB_FILE", "EVALCLUSTER_ARTIFACTS", "EVALCLUSTER_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BertForSequenceClassification (3 labels) saved as a model directory."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import save_model_dir

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    out = tmp_path_factory.mktemp("models") / "tiny"
    return save_model_dir(model, tokenizer, out, {"base_model": "tiny-random-bert"})


IMAGE_LABELS = ["zero", "one", "two"]


@pytest.fixture(scope="session")
def tiny_image_model_dir(tmp_path_factory) -> Path:
    """EfficientNet-Lite0, random init, 32x32 input, 3 labels, saved as an image model directory."""
    from cluster.models.vision import new_image_classifier, save_image_model_dir

    model = new_image_classifier(IMAGE_LABELS, pretrained=False, image_size=32, seed=0)
    out = tmp_path_factory.mktemp("models") / "tiny-image"
    return save_image_model_dir(model, out, {"note": "tiny random image model for plumbing"})


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory) -> Path:
    """150 of scikit-learn's 8x8 digits (0, 1, 2) as PNG bytes: images.parquet with
    columns picture (bytes), digit (label name) and pid (an id)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    from cluster.data.image_data import encode_png

    d = load_digits(n_class=3)
    pixels = (d.images[:150] * (255 / 16)).round().astype("uint8")  # 0..16 -> 0..255
    table = pa.table(
        {
            "picture": pa.array([encode_png(p) for p in pixels], pa.binary()),
            "digit": [IMAGE_LABELS[t] for t in d.target[:150]],
            "pid": [f"d{i:03d}" for i in range(150)],
        }
    )
    path = tmp_path_factory.mktemp("digits") / "images.parquet"
    pq.write_table(table, path, row_group_size=40)
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The real sample corpus split (train/validation/test Parquet)."""
    from cluster.data.corpus import sample_splits

    out = tmp_path_factory.mktemp("sample")
    sample_splits(out, seed=0)
    return out


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 on 127.0.0.1 with authentication enforced (tests/s3.py), for the whole session.

    Its AWS variables (endpoint, key, secret, region) are set in this process for the session,
    before the shared Ray starts (``ray_cluster`` depends on this), so Ray's workers reach it as
    a cluster's nodes reach their object store: through their own environment.
    """
    from tests.s3 import S3Server

    with S3Server() as server:
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray for the whole session (2 CPUs, token auth on as Ray's default); its workers
    see the session's S3 endpoint (``s3_server``).

    Serve's controller gives a starting proxy 3 readiness checks of 5 s, then kills it, and the
    ``serve.start`` waiting on it fails with ActorDiedError: seen here at load average 20+ on the
    2 cores (controller log: "Proxy actor readiness check ... didn't complete in 5.0s" x3). The
    proxy gets 30 s per check instead (Serve's own wait for it stays 60 s)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": str(ROOT),
                "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
            }
        },
    )
    yield ray
    ray.shutdown()


def run_evalctl(*args, timeout: float = 600, env: dict | None = None, **kwargs):
    """Run `evalctl ARGS...` in a subprocess (extra ``env`` on top of ours); returns CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


@pytest.fixture
def evalctl():
    """``run_evalctl`` as a fixture."""
    return run_evalctl


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL 15 server on 127.0.0.1 for the session (tests/pg.py), with a login
    role ``evalcluster`` whose password is random per session (``pg_server.password``)."""
    import secrets

    from tests.pg import PostgresServer

    with PostgresServer() as server:
        server.role, server.password = "evalcluster", f"pw-{secrets.token_hex(8)}"
        server.create_role(server.role, server.password)
        yield server


@pytest.fixture
def pg_url(pg_server):
    """A new empty database owned by the test role; its psycopg URL (with the password)."""
    name = pg_server.create_database(owner=pg_server.role)
    yield pg_server.url(name, pg_server.role, pg_server.password)
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch):
    """Run a test once on the SQLite file under EVALCLUSTER_HOME and once on PostgreSQL."""
    monkeypatch.delenv("EVALCLUSTER_DB_FILE", raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("EVALCLUSTER_DB", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("EVALCLUSTER_DB", raising=False)
    return request.param


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")  # one deployment per test module (Serve shut down after it)
def served(ray_cluster, tiny_model_dir, tmp_path_factory):
    """Serve on a free port; yields (deploy function, url); shuts Serve down afterwards."""
    from ray import serve

    from cluster.specs.serve import ServeSpec
    from jobs.deploy import deploy

    port = free_port()

    def deploy_model(model_dir, no_api_key=False, **kw):
        spec = ServeSpec(
            model=str(model_dir),
            port=port,
            precision="fp32",
            cpus_per_replica=0.5,
            max_texts=8,
            max_chars=200,
            **kw,
        )
        return deploy(spec, start_head=False, timeout_s=180, no_api_key=no_api_key)

    deploy_model(tiny_model_dir)
    yield deploy_model, f"http://127.0.0.1:{port}"
    serve.shutdown()
