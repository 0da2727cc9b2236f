"""The evaluation pipeline: Ray Data reads shards into a pool of inference actors.

Each actor (:class:`Predictor`) holds one model and turns a shard into predictions
plus the shard's sufficient statistics (cluster/metrics.py). The driver streams the
predictions into Parquet in input order and adds up the statistics, so nothing that
grows with the dataset is held on the driver.
"""

from __future__ import annotations

import logging
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.config import EvaluateSpec
from cluster.errors import UserError
from cluster.modelcache import ModelSource

log = logging.getLogger(__name__)


class Predictor:
    """One model per actor: text batch in, predictions + sufficient statistics out."""

    def __init__(self, model: ModelSource, labels: list[str], spec: EvaluateSpec, gpus: float):
        import ray
        import torch

        from cluster.modeling import load_classifier, pick_device, resolve_precision
        from cluster.runtime import worker_threads

        torch.set_num_threads(worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.device = pick_device(gpus)
        # A model in the artifact store is downloaded once per node (and verified) before loading.
        self.model, self.tokenizer, _ = load_classifier(model.local_path(), device=self.device)
        self.precision = resolve_precision(spec.precision, self.device)
        self.labels = np.array(labels, dtype=object)
        self.label2id = {lab: i for i, lab in enumerate(labels)}
        self.spec = spec
        ctx = ray.get_runtime_context()
        self.actor_id, self.node_id = ctx.get_actor_id(), ctx.get_node_id()  # recorded per block
        self.ready_at = time.time()  # wall clock: model loaded, inference can start

    def __call__(self, batch: pa.Table) -> pa.Table:
        from cluster.metrics import batch_stats
        from cluster.modeling import predict_proba

        s = self.spec
        probs = predict_proba(
            self.model,
            self.tokenizer,
            batch["text"].to_pylist(),
            max_length=s.max_length,
            precision=self.precision,
            batch_size=s.batch_size,
        )
        rows = batch["row"].to_numpy()
        y_true = np.array([self.label2id[lab] for lab in batch["label"].to_pylist()], dtype=np.int64)
        slices = batch["slice"].to_numpy(zero_copy_only=False) if "slice" in batch.column_names else None
        stats = batch_stats(y_true, probs, rows=rows, bootstrap=s.bootstrap, seed=s.seed, slices=slices)
        pred = probs.argmax(1)
        k = probs.shape[1]
        out = {
            "row": batch["row"],
            "label": batch["label"],
            "pred": pa.array(self.labels[pred].tolist()),
            "score": pa.array(probs[np.arange(len(pred)), pred]),
            "probs": pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(pred) * k + 1, k, dtype=np.int32)), pa.array(probs.ravel())
            ),
        }
        if "id" in batch.column_names:
            out["id"] = batch["id"]
        # The block's statistics ride along in its first row (a few KB whatever the rows), with
        # which shard it is (its input offset: the driver takes each shard once) and who computed it.
        payload = pickle.dumps(
            {
                "stats": stats,
                "offset": int(rows[0]),
                "rows": len(rows),
                "actor": self.actor_id,
                "node": self.node_id,
                "precision": self.precision,
                "device": self.device,
                "ready_at": self.ready_at,
            }
        )
        out["_stats"] = pa.array([payload] + [b""] * (len(pred) - 1), pa.binary())
        return pa.table(out)


def run_pipeline(spec: EvaluateSpec, model: ModelSource, labels: list[str], pred_path: Path, timings: dict):
    """Ray Data read -> actor-pool inference -> streamed Parquet + merged statistics; a pipeline
    that loses a node is followed by one over the shards not taken yet (jobs/eval_stream.py)."""
    from cluster.runtime import init_ray
    from cluster.shards import plan_shards
    from jobs.eval_stream import ShardLedger, stream_with_recovery, wait_for_lost_nodes

    t0 = time.perf_counter()
    init_ray()
    timings["ray_init_s"] = time.perf_counter() - t0
    _, shards = plan_shards(spec.data, spec.limit, spec.rows_per_shard)
    sink = _Sink(spec, len(labels), pred_path, ShardLedger())

    def run(todo: list) -> None:
        plan = plan_workers(spec, len(todo))
        log.info("%d shards, %d inference actors (%g CPUs, %g GPUs each)", len(todo), *plan)
        sink.plan = sink.plan or plan
        sink.consume(_dataset(spec, todo, model, labels, plan))

    try:
        recoveries = stream_with_recovery(
            shards, sink.ledger, run, settle=lambda exc: wait_for_lost_nodes(exc, sink.ledger)
        )
    finally:
        sink.close()
    t_start = t0 + timings["ray_init_s"]
    timings["pipeline_s"] = time.perf_counter() - t_start  # actors' model loading included
    timings["rows_per_s"] = sink.stats.n / timings["pipeline_s"]
    timings.update(_steady_rate(sink.first_ready, sink.stats.n))
    return sink.stats, sink.run_info(recoveries)


def _dataset(spec: EvaluateSpec, shards, model: ModelSource, labels: list[str], plan: tuple):
    import ray

    from cluster.shards import shards_dataset

    workers, cpus, gpus = plan
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # input order out
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts only through **ray_remote_args, which it marks as
        # deprecated for Ray 2.64 (pyproject pins ray < 2.61).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return _map(ray, spec, shards_dataset(spec.data, shards), model, labels, plan)


def _map(ray, spec: EvaluateSpec, ds, model: ModelSource, labels: list[str], plan: tuple):
    workers, cpus, gpus = plan
    return ds.map_batches(
        Predictor,
        fn_constructor_args=(model, labels, spec, gpus),
        batch_format="pyarrow",
        batch_size=None,  # one shard per actor call; texts length-sorted within it
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus,
        num_gpus=gpus,
        # No actor restarts: restarts with constructor arguments in the object store are not
        # reliable (ray-project/ray #53727), and a restarted actor waits for a free CPU that the
        # surviving actors hold until the end (measured: 27 s of waiting after a node loss on a
        # 2 x 1-CPU cluster). A lost actor fails this pipeline instead, and the driver runs a
        # new one over the shards it has not taken yet (jobs/eval_stream.py).
        max_restarts=0,
    )


class _Sink:
    """Writes predictions in input order and adds up the statistics riding in each block,
    each shard once (its ``ledger``), across the pipelines of one run."""

    def __init__(self, spec: EvaluateSpec, k: int, pred_path: Path, ledger):
        from cluster.metrics import empty_stats

        self.stats, self.info, self.ledger = empty_stats(k, spec.bootstrap), {}, ledger
        self.pred_path, self.writer, self.plan = pred_path, None, None
        self.first_ready = None  # wall-clock time the first actor had its model loaded
        self.rename = {"id": spec.data.id_column} if spec.data.id_column else {}

    def consume(self, ds) -> None:
        from jobs.eval_stream import segments

        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            for part, table in segments(batch):
                log.info(
                    "shard at row %d (%d rows) from actor %s on node %s",
                    *(part["offset"], part["rows"], part["actor"], part["node"]),
                )
                if self.ledger.take(part):
                    self._write(table)
                    self.stats, self.info = self.stats + part["stats"], part
                    self.first_ready = min(self.first_ready or part["ready_at"], part["ready_at"])

    def _write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        table = table.rename_columns([self.rename.get(c, c) for c in table.column_names])
        self.writer = self.writer or pq.ParquetWriter(self.pred_path, table.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer:
            self.writer.close()

    def run_info(self, recoveries: list[dict]) -> dict:
        """How it ran: precision, device, the planned pool, and per actor its node and rows."""
        workers, cpus, gpus = self.plan
        return {
            "precision": self.info.get("precision"),
            "device": self.info.get("device"),
            "workers": list(self.ledger.workers.values()),
            "worker_plan": {"actors": workers, "cpus_per_actor": cpus, "gpus_per_actor": gpus},
            "recovery": {
                "pipelines": 1 + len(recoveries),
                "shards": self.ledger.shards,
                "rows": self.ledger.rows,
                "duplicate_blocks_dropped": self.ledger.duplicates,
                "lost_workers": recoveries,
            },
        }


def _steady_rate(ready_at: float | None, n: int) -> dict[str, float]:
    """Rows/s from the first actor's model being ready to the last output (conservative:
    excludes Ray start-up and the first model load, includes any later actor's load)."""
    if ready_at is None:
        return {}
    return {"steady_rows_per_s": n / max(time.time() - ready_at, 1e-9)}


def plan_workers(spec: EvaluateSpec, shards: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for the connected cluster.

    GPU clusters: one actor per GPU. CPU only: one single-threaded actor per CPU
    (measured on 2 cores, bf16: 2 actors x 1 thread gave 585-613 rows/s against
    520-542 for 1 actor x 2 threads, on the same 3,725 tweets). Never more actors
    than shards: an actor without a shard only loads a model for nothing.
    """
    from cluster.runtime import cluster_resources, max_gpus_per_node

    res = cluster_resources()
    total_gpus = res.get("GPU", 0.0)
    gpus = spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if total_gpus else 0.0)
    if gpus > 0 and gpus > max_gpus_per_node():
        raise UserError(
            f"--gpus-per-worker {gpus:g}: no node has that many GPUs (largest: {max_gpus_per_node():g})"
        )
    cpus_total = max(1, int(res.get("CPU", 1)))
    if gpus > 0:
        return min(spec.workers or max(1, int(total_gpus // gpus)), shards), 1.0, gpus
    workers = min(spec.workers or cpus_total, max(1, shards))
    return workers, float(max(1, cpus_total // workers)), 0.0
