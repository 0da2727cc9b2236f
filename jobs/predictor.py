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
    """One model per actor: a batch of texts or images in, predictions + sufficient statistics out.

    The modality's own step (tokenise, or decode and preprocess) is cluster/modality.py's;
    everything after the probabilities is the same for both. A bad image raises a
    UserError naming its row, or with ``skip_bad_rows`` leaves the predictions and the
    statistics and is listed with them.
    """

    def __init__(self, model: ModelSource, labels: list[str], spec: EvaluateSpec, gpus: float):
        import torch

        from cluster.modality import load_trained
        from cluster.modeling import pick_device, resolve_precision
        from cluster.runtime import worker_threads

        torch.set_num_threads(worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.device = pick_device(gpus)
        # A model in the artifact store is downloaded once per node (and verified) before loading.
        self.clf = load_trained(model.local_path(), device=self.device)
        self.precision = resolve_precision(spec.precision, self.device)
        self.labels = np.array(labels, dtype=object)
        self.label2id = {lab: i for i, lab in enumerate(labels)}
        self.spec = spec
        self.ready_at = time.time()  # wall clock: model loaded, inference can start

    @property
    def modality(self) -> str:
        return self.clf.modality

    def __call__(self, batch: pa.Table) -> pa.Table:
        from cluster.metrics import batch_stats

        s = self.spec
        prepared = self.clf.prepare(
            batch[self.modality].to_pylist(),
            batch["row"].to_pylist(),
            skip_bad_rows=s.skip_bad_rows,
            base_dir=data_base_dir(s.data.path),
        )
        if len(prepared.kept) < batch.num_rows:  # skipped rows leave the predictions and statistics
            batch = batch.take(pa.array(prepared.kept, pa.int64()))
        probs = self.clf.predict_proba(
            prepared.inputs, precision=self.precision, batch_size=s.batch_size, max_length=s.max_length
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
        # The batch's statistics ride along in the first row (a few KB whatever the rows).
        info = {"precision": self.precision, "device": self.device, "ready_at": self.ready_at}
        payload = pickle.dumps({"stats": stats, **info, "bad": [(b.row, b.reason) for b in prepared.bad]})
        out["_stats"] = pa.array([payload] + [b""] * (len(pred) - 1), pa.binary())
        schema = _output_schema(out)
        if not len(pred):  # every row skipped: a placeholder row (row -1) carries the statistics
            out = {f.name: pa.nulls(1, f.type) for f in schema}
            out.update(row=pa.array([PLACEHOLDER_ROW]), _stats=pa.array([payload], pa.binary()))
        return pa.table(out, schema=schema)


PLACEHOLDER_ROW = -1  # dropped by the driver (jobs/pipeline.py) before writing predictions


def _output_schema(out: dict) -> pa.Schema:
    """Explicit types: a batch whose every row was skipped still has the others' schema."""
    types = {"row": pa.int64(), "pred": pa.string(), "score": pa.float64(), "probs": pa.list_(pa.float64())}
    return pa.schema([(k, types.get(k, v.type)) for k, v in out.items()])


def data_base_dir(path: str) -> str | None:
    """Where relative image paths in a dataset are resolved: the data file's directory."""
    from pathlib import Path

    if "://" in path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_dir() else p.parent)


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
        """Answered once the model is loaded: when, and the memory this process holds."""
        from cluster.clock import rss_bytes

        return {"at": time.time(), "rss": rss_bytes(), "pid": os.getpid()}

    def score(self, shard: dict, spec: EvaluateSpec) -> pa.Table:
        """Read one shard (cluster/shards.py) and predict it under ``spec``'s settings."""
        from cluster.shards import Shard, read_shard

        self.predictor.spec = spec
        return self.predictor(read_shard(Shard(**shard), spec.data, modality=self.predictor.modality))
