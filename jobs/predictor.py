"""The inference actor: one model, a shard of rows in, predictions + sufficient statistics out.

:class:`Predictor` holds one model (a classifier, or a bare encoder for drift checks) and
turns a table of rows into predictions plus the rows' sufficient statistics
(cluster/metrics.py) and, when asked, the analyses' mergeable statistics
(cluster/analyses.py); :class:`ModelActor` is the Ray actor around it, which reads its
shards itself and can stay loaded between evaluations (cluster/warmpool.py).
jobs/pipeline.py schedules shards onto these actors and streams their output to Parquet
in input order.
"""

from __future__ import annotations

import logging
import os
import pickle
import time

import numpy as np
import pyarrow as pa

from cluster.config import DataSpec, PipelineSpec
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
        self.actor_id, self.node_id = where()  # recorded with each shard
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
        # The shard's statistics ride along in its first row (a few KB whatever the rows), with
        # which shard it is (its input offset: the driver takes each shard once) and who computed it.
        payload = pickle.dumps(
            {
                "stats": stats,
                "offset": int(rows[0]),
                "rows": len(rows),
                "actor": self.actor_id,
                "node": self.node_id,
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


class ModelActor:
    """A Ray actor holding one :class:`Predictor`: shards in, prediction tables out.

    The run's settings (batch size, max length, bootstrap, ...), its data and its analyses
    come with each call, so a warm actor serves any evaluation of its model at its precision.
    """

    def __init__(self, model: ModelSource, labels, spec: PipelineSpec, gpus: float, threads: int):
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

    def score(self, shard: dict, spec: PipelineSpec, data: DataSpec, analyses=None) -> pa.Table:
        """Read one shard of ``data`` (cluster/shards.py) and predict it under ``spec``'s settings,
        with ``analyses`` (cluster/analyses.py; None: the core statistics only)."""
        from cluster.shards import Shard, read_shard

        self.predictor.spec, self.predictor.analyses = spec, analyses
        return self.predictor(read_shard(Shard(**shard), data))


def where() -> tuple[str | None, str | None]:
    """(Ray actor id, Ray node id) of the calling process; (None, None) outside Ray."""
    import ray

    if not ray.is_initialized():
        return None, None
    ctx = ray.get_runtime_context()
    return ctx.get_actor_id(), ctx.get_node_id()
