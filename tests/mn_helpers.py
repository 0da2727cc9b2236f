"""Helpers of tests/test_multinode.py: commands, comparisons, sweeps run and killed, a load client."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import cluster.evaluation.tasks  # noqa: F401 - every task registers the statistics its part footers hold
from cluster.evaluation.parts import decode_part
from cluster.registry.predictions import read_predictions
from cluster.specs.search_space import LogUniform, SearchSpace
from cluster.specs.workloads import DataSpec, ResourcesSpec, SchedulerSpec, SweepSpec
from tests.conftest import run_evalctl
from tests.mn_cluster import LocalCluster

# how a run ran, not what it found
RUN_KEYS = ("run_id", "timings", "workers", "worker_plan", "recovery", "ray", "warm_actors")


def evaluate_args(model: Path, data: Path, out: Path, address: str) -> list[str]:
    """Each run loads its model afresh (``--keep-warm-s 0``): on a joined cluster a model left warm
    by the run before would take every block while the other node's actor still loads."""
    return [
        "evaluate", "--model", model, "--data", data, "--out", out, "--address", address,
        "--rows-per-shard", "50", "--sort-rows", "50", "--batch-size", "16", "--max-length", "64", "--bootstrap", "50",
        "--precision", "fp32", "--keep-warm-s", "0",
    ]  # fmt: skip


def same_results(a: Path, b: Path) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    strip = lambda m: {k: v for k, v in m.items() if k not in RUN_KEYS}  # noqa: E731
    assert strip(ma) == strip(mb), {k for k in strip(ma) if strip(ma)[k] != strip(mb).get(k)}
    pa_, pb = read_predictions(a / "predictions"), read_predictions(b / "predictions")
    pd.testing.assert_frame_equal(pa_, pb, check_exact=True)


def part_workers(out: Path) -> list[dict]:
    """The model actors (actor, node) named in the footers of the part files written so far under
    ``out/predictions`` (a file still being written is skipped)."""
    found = []
    for f in sorted((out / "predictions").glob("*.parquet")):
        try:
            metadata = pq.ParquetFile(f).schema_arrow.metadata
        except (pa.ArrowException, OSError):  # still being written: no footer yet
            continue
        part = decode_part(metadata, str(f))  # anything else is a failure, never skipped
        found += [json.loads(k) for k in part.workers.rows]
    return found


def tiny_sweep(tiny_model_dir, sample_dir, storage: Path, **kw) -> SweepSpec:
    spec = dict(
        model=str(tiny_model_dir),
        train=DataSpec(path=str(sample_dir / "train.parquet")),
        validation=DataSpec(path=str(sample_dir / "validation.parquet")),
        search=SearchSpace(
            learning_rate=LogUniform(loguniform=[1e-4, 1e-3]), batch_size=16, epochs=2, max_length=32
        ),
        scheduler=SchedulerSpec(kind="none"),
        num_samples=2,
        max_concurrent_trials=2,
        resources=ResourcesSpec(cpus=1),
        max_train_rows=300,
        max_validation_rows=100,
        evals_per_epoch=3,
        precision="fp32",
        storage_path=str(storage),
    )
    return SweepSpec(**{**spec, **kw})


def result_rows(trial_dir: Path) -> list[dict]:
    f = trial_dir / "result.json"
    text = f.read_text() if f.is_file() else ""
    return [json.loads(x) for x in text.splitlines() if x.strip()]


class Load:
    """A bounded client: ``clients`` threads, each sending one request at a time until stopped;
    every answer is recorded as (time, ok, what)."""

    def __init__(self, url: str, clients: int = 4):
        self.url, self.clients, self.log, self.stop = url, clients, [], threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, i: int) -> None:
        import httpx

        with httpx.Client(timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    r = http.post(f"{self.url}/v1/predict", json={"texts": [f"client {i} request {n}"]})
                    self.log.append((time.time(), r.status_code == 200, r.status_code))
                except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                    self.log.append((time.time(), False, type(exc).__name__))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def ok_since(self, t0: float) -> int:
        return sum(1 for t, ok, _ in list(self.log) if ok and t >= t0)

    def wait_ok(self, n: int, since: float, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while self.ok_since(since) < n:
            assert time.time() < deadline, f"only {self.ok_since(since)} answers since {since}"
            time.sleep(0.1)


def replicas_running() -> int:
    from ray import serve

    app = serve.status().applications.get("evalcluster")
    states = app.deployments["Scorer"].replica_states if app else {}
    return sum(v for k, v in states.items() if str(getattr(k, "value", k)) == "RUNNING")


def alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def workers(mn: LocalCluster, n: int, timeout: float = 120) -> list:
    """Exactly ``n`` live 1-CPU workers (killed ones are gone from Ray's view before returning)."""
    while len(mn.workers()) > n:
        mn.kill(mn.workers()[0])
    while len(mn.workers()) < n:
        mn.add_worker(cpus=1)
    wanted = {mn.head_id, *(w.node_id for w in mn.workers())}
    deadline = time.time() + timeout
    while alive_nodes() != wanted:
        assert time.time() < deadline, f"cluster view {alive_nodes()} never became {wanted}"
        time.sleep(0.5)
    return mn.workers()


def cluster_status(mn: LocalCluster) -> dict:
    """`evalctl cluster status --json` against the module's cluster."""
    proc = run_evalctl("cluster", "status", "--address", mn.address, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def replicas_by_node(status: dict) -> dict[str, int]:
    return {n["node_id"]: n["work"].get("serve replica", 0) for n in status["nodes"] if n["alive"]}
