"""The inference actor: one model, a shard of rows in, predictions + sufficient statistics out.

:class:`Predictor` holds one model and turns a table of rows into predictions plus
the rows' sufficient statistics (cluster/metrics.py); :class:`ModelActor` is the Ray
actor around it, which reads its shards itself and can stay loaded between
evaluations (cluster/warmpool.py). jobs/pipeline.py schedules shards onto these
actors and streams their output to Parquet in input order.
"""

from __future__ import annotations

import logging
import os
import pickle
import time

import numpy as np
import pyarrow as pa

from cluster.config import EvaluateSpec
from cluster.modelcache import ModelSource

log = logging.getLogger(__name__)


class Predictor:
    """One model per actor: text batch in, predictions + sufficient statistics out."""

    def __init__(self, model: ModelSource, labels: list[str], spec: EvaluateSpec, gpus: float):
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
        self.actor_id, self.node_id = where()  # recorded with each shard
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
        # The shard's statistics ride along in its first row (a few KB whatever the rows), with
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


class ModelActor:
    """A Ray actor holding one :class:`Predictor`: shards in, prediction tables out.

    The run's settings (batch size, max length, bootstrap, ...) come with each call, so
    a warm actor serves any evaluation of its model at its precision.
    """

    def __init__(self, model: ModelSource, labels: list[str], spec: EvaluateSpec, gpus: float, threads: int):
        import torch

        self.predictor = Predictor(model, labels, spec, gpus)
        torch.set_num_threads(threads)  # warm actors reserve no CPU, so Ray's hint is not theirs

    def ready(self) -> dict:
        """Answered once the model is loaded: when, the memory this process holds, and where it runs."""
        from cluster.clock import rss_bytes

        p = self.predictor
        return {
            "at": time.time(),
            "rss": rss_bytes(),
            "pid": os.getpid(),
            "actor": p.actor_id,
            "node": p.node_id,
        }

    def score(self, shard: dict, spec: EvaluateSpec) -> pa.Table:
        """Read one shard (cluster/shards.py) and predict it under ``spec``'s settings."""
        from cluster.shards import Shard, read_shard

        self.predictor.spec = spec
        return self.predictor(read_shard(Shard(**shard), spec.data))


def where() -> tuple[str | None, str | None]:
    """(Ray actor id, Ray node id) of the calling process; (None, None) outside Ray."""
    import ray

    if not ray.is_initialized():
        return None, None
    ctx = ray.get_runtime_context()
    return ctx.get_actor_id(), ctx.get_node_id()
