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

from cluster.errors import UserError
from cluster.modelcache import ModelSource

log = logging.getLogger(__name__)


class Predictor:
    """One model per actor: text batch in, predictions + sufficient statistics out.

    ``labels`` None: the model is a bare encoder (drift checks without a classifier): no
    predictions, only what ``analyses`` computes. ``analyses`` (cluster/analyses.py): more
    mergeable statistics per batch, computed with this actor's model.
    """

    def __init__(self, model: ModelSource, labels, spec, gpus: float, analyses=None):
        import torch

        from cluster.modeling import load_classifier, load_encoder, pick_device, resolve_precision
        from cluster.runtime import worker_threads

        torch.set_num_threads(worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.device = pick_device(gpus)
        # A model in the artifact store is downloaded once per node (and verified) before loading.
        path = model.local_path()
        if labels is None:
            self.model, self.tokenizer = load_encoder(path, device=self.device)
        else:
            self.model, self.tokenizer, _ = load_classifier(path, device=self.device)
        self.precision = resolve_precision(spec.precision, self.device)
        self.labels = None if labels is None else np.array(labels, dtype=object)
        self.label2id = {lab: i for i, lab in enumerate(labels or [])}
        self.spec = spec
        self.analyses = analyses
        self.ready_at = time.time()  # wall clock: model loaded, inference can start

    def probs(self, texts: list[str]) -> np.ndarray:
        from cluster.modeling import predict_proba

        s = self.spec
        return predict_proba(
            self.model,
            self.tokenizer,
            texts,
            max_length=s.max_length,
            precision=self.precision,
            batch_size=s.batch_size,
        )

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """What the model sees of each text (after truncation)."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.spec.max_length)["input_ids"]

    def embed(self, texts: list[str]) -> np.ndarray:
        from cluster.drift import mean_pooled_embeddings

        return mean_pooled_embeddings(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.spec.max_length,
            batch_size=self.spec.batch_size,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        from cluster.metrics import batch_stats

        s = self.spec
        texts = batch["text"].to_pylist()
        probs = self.probs(texts) if self.labels is not None else None
        rows = batch["row"].to_numpy()
        y_true = None
        if probs is not None and "label" in batch.column_names:
            y_true = np.array([self.label2id[lab] for lab in batch["label"].to_pylist()], dtype=np.int64)
        slices = batch["slice"].to_numpy(zero_copy_only=False) if "slice" in batch.column_names else None
        stats = None
        if y_true is not None:
            stats = batch_stats(y_true, probs, rows=rows, bootstrap=s.bootstrap, seed=s.seed, slices=slices)
        t0 = time.perf_counter()
        parts = {}
        if self.analyses is not None:
            parts = self.analyses.batch(
                self, texts=texts, y_true=y_true, probs=probs, rows=rows, slice_values=slices
            )
        out = self._columns(batch, probs)
        # The batch's statistics ride along in the first row (a few KB whatever the rows).
        payload = pickle.dumps(
            {
                "stats": stats,
                "parts": parts,
                "analyses_s": time.perf_counter() - t0,
                "precision": self.precision,
                "device": self.device,
                "ready_at": self.ready_at,
            }
        )
        out["_stats"] = pa.array([payload] + [b""] * (batch.num_rows - 1), pa.binary())
        return pa.table(out)

    def _columns(self, batch: pa.Table, probs: np.ndarray | None) -> dict:
        out = {"row": batch["row"]}
        if "label" in batch.column_names:
            out["label"] = batch["label"]
        if probs is not None:
            pred = probs.argmax(1)
            k = probs.shape[1]
            out.update(
                pred=pa.array(self.labels[pred].tolist()),
                score=pa.array(probs[np.arange(len(pred)), pred]),
                probs=pa.ListArray.from_arrays(
                    pa.array(np.arange(0, len(pred) * k + 1, k, dtype=np.int32)), pa.array(probs.ravel())
                ),
            )
        if "id" in batch.column_names:
            out["id"] = batch["id"]
        return out


def run_pipeline(
    spec, model: ModelSource, labels, pred_path: Path | None, timings: dict, analyses=None, data=None
):
    """Ray Data read -> actor-pool inference -> streamed Parquet + merged statistics.

    ``data``: the DataSpec to read (default ``spec.data``); ``pred_path`` None writes no
    predictions. Returns (merged Stats or None without labels, run info, merged analyses parts).
    """
    from cluster.runtime import init_ray
    from cluster.shards import plan_shards

    data = data or spec.data
    t0 = time.perf_counter()
    init_ray()
    timings["ray_init_s"] = timings.get("ray_init_s", 0.0) + time.perf_counter() - t0  # the caller's too
    t0 = time.perf_counter()
    _, shards = plan_shards(data, spec.limit, spec.rows_per_shard)
    workers, cpus, gpus = plan_workers(spec, len(shards))
    log.info("%d shards, %d inference actors (%g CPUs, %g GPUs each)", len(shards), workers, cpus, gpus)
    actor_args = (model, labels, spec, gpus, analyses)
    ds = _dataset(data, shards, actor_args, (workers, cpus, gpus))
    stats, parts, info = _stream(ds, spec, data, pred_path)
    timings["pipeline_s"] = time.perf_counter() - t0  # actors' model loading included
    n = info["rows"]
    timings["rows_per_s"] = n / timings["pipeline_s"]
    if analyses is not None:
        timings["analyses_s"] = info["analyses_s"]  # wall seconds of the extras, summed over actors
    timings.update(_steady_rate(info.get("first_ready"), n))
    run_info = {"precision": info.get("precision"), "device": info.get("device"), "workers": workers}
    return stats, run_info, parts


def _dataset(data, shards, actor_args: tuple, plan: tuple):
    import ray

    from cluster.shards import shards_dataset

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # input order out
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts only through **ray_remote_args, which it marks as
        # deprecated for Ray 2.64 (pyproject pins ray < 2.61).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return _map(ray, shards_dataset(data, shards), actor_args, plan)


def _map(ray, ds, actor_args: tuple, plan: tuple):
    workers, cpus, gpus = plan
    return ds.map_batches(
        Predictor,
        fn_constructor_args=actor_args,
        batch_format="pyarrow",
        batch_size=None,  # one shard per actor call; texts length-sorted within it
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus,
        num_gpus=gpus,
        # No actor restarts: Ray Data passes an actor's constructor arguments through the
        # object store, and restarts with such arguments are not reliable (ray-project/ray
        # #53727; Ray warns about it on every actor). A lost actor fails the run, which is
        # recorded as failed and can simply be rerun.
        max_restarts=0,
    )


def _stream(ds, spec, data, pred_path: Path | None) -> tuple:
    """Write predictions in input order and add up the statistics riding in each block."""
    import pyarrow.parquet as pq

    from cluster.threshold_cells import MergeTree

    stats, trees, info, writer = None, {}, {"rows": 0, "analyses_s": 0.0}, None
    first_ready = None  # wall-clock time the first actor had its model loaded
    rename = {"id": data.id_column} if data.id_column else {}
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            for payload in batch["_stats"].to_pylist():
                if payload:
                    part = pickle.loads(payload)
                    if part["stats"] is not None:
                        stats = part["stats"] if stats is None else stats + part["stats"]
                    for name, value in part.pop("parts").items():  # MergeTree: O(log n) copies each
                        trees.setdefault(name, MergeTree()).push(value)
                    info["analyses_s"] += part["analyses_s"]
                    info.update(precision=part["precision"], device=part["device"])
                    first_ready = min(first_ready or part["ready_at"], part["ready_at"])
            info["rows"] += batch.num_rows
            if pred_path is None:
                continue
            table = batch.drop_columns(["_stats"]).rename_columns(
                [rename.get(c, c) for c in batch.column_names if c != "_stats"]
            )
            writer = writer or pq.ParquetWriter(pred_path, table.schema)
            writer.write_table(table)
    finally:
        if writer:
            writer.close()
    parts = {name: tree.total() for name, tree in trees.items()}
    return stats, parts, {**info, "first_ready": first_ready}


def _steady_rate(ready_at: float | None, n: int) -> dict[str, float]:
    """Rows/s from the first actor's model being ready to the last output (conservative:
    excludes Ray start-up and the first model load, includes any later actor's load)."""
    if ready_at is None:
        return {}
    return {"steady_rows_per_s": n / max(time.time() - ready_at, 1e-9)}


def plan_workers(spec, shards: int) -> tuple[int, float, float]:
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
