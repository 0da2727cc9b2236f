"""The inference actor: one model, a shard of rows in, predictions + sufficient statistics out.

:class:`Predictor` holds one model (a classifier, or a bare encoder for drift checks) and
turns a table of rows into predictions plus the rows' sufficient statistics
(cluster/stats/metrics.py) and, when asked, the analyses' mergeable statistics
(cluster/stats/analyses.py); :class:`ModelActor` is the Ray actor around it, which reads its
shards itself and can stay loaded between evaluations (cluster/ray/warmpool.py).
cluster/evaluation/pipeline.py schedules shards onto these actors and streams their output to Parquet
in input order.
"""

from __future__ import annotations

import logging
import os
import pickle
import time

import numpy as np
import pyarrow as pa

from cluster.models.cache import ModelSource
from cluster.specs.workloads import DataSpec, PipelineSpec

log = logging.getLogger(__name__)


class Predictor:
    """One model per actor: a batch of texts or images in, predictions + sufficient statistics out.

    The modality's own step (tokenise, or decode and preprocess) is cluster/models/modality.py's;
    everything after the probabilities is the same for both. A bad image raises a
    UserError naming its row, or with ``skip_bad_rows`` leaves the predictions and the
    statistics and is listed with them.

    ``labels`` None: the model is a bare text encoder (drift checks without a classifier): no
    predictions, only what ``analyses`` computes. ``analyses`` (cluster/stats/analyses.py): more
    mergeable statistics per batch, computed with this actor's model.
    """

    def __init__(
        self, model: ModelSource, labels, spec, gpus: float, analyses=None, threads: int | None = None
    ):
        import torch

        from cluster.models.device import pick_device, resolve_precision
        from cluster.models.modality import load_trained
        from cluster.models.text import load_encoder
        from cluster.ray.runtime import worker_threads

        # Set before the warm-up pass, whose kernels are then the ones inference runs.
        torch.set_num_threads(threads or worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.device = pick_device(gpus)
        # A model in the artifact store is downloaded once per node (and verified) before loading.
        path = model.local_path()
        if labels is None:
            self.clf = None
            self.model, self.tokenizer = load_encoder(path, device=self.device)
        else:
            self.clf = load_trained(path, device=self.device)
            self.model, self.tokenizer = self.clf.model, self.clf.tokenizer
        self.precision = resolve_precision(spec.precision, self.device)
        if self.modality == "image":  # BatchNorm folded, kernels built before the first shard
            from cluster.models.vision import prepare_for_inference

            prepare_for_inference(self.model, batch_size=spec.batch_size, precision=self.precision)
        self.labels = None if labels is None else np.array(labels, dtype=object)
        self.label2id = {lab: i for i, lab in enumerate(labels or [])}
        self.spec = spec
        self.analyses = analyses
        self.base_dir = None  # where relative image paths are resolved (the data file's directory)
        self.actor_id, self.node_id = where()  # recorded with each shard
        self.ready_at = time.time()  # wall clock: model loaded, inference can start

    @property
    def modality(self) -> str:
        return "text" if self.clf is None else self.clf.modality

    def probs(self, inputs, rows: np.ndarray) -> np.ndarray:
        """Class probabilities (n, k) of texts, or of prepared images (uint8 (n, 3, S, S)); texts
        batched within their sort group (``rows // sort_rows``), whatever shard brought them."""
        s = self.spec
        return self.clf.predict_proba(
            inputs,
            precision=self.precision,
            batch_size=s.batch_size,
            max_length=s.max_length,
            groups=np.asarray(rows) // s.sort_rows,
        )

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """What the model sees of each text (after truncation)."""
        return self.tokenizer(list(texts), truncation=True, max_length=self.spec.max_length)["input_ids"]

    def embed(self, texts: list[str]) -> np.ndarray:
        from cluster.stats.drift import mean_pooled_embeddings

        return mean_pooled_embeddings(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.spec.max_length,
            batch_size=self.spec.batch_size,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        from cluster.stats.metrics import batch_stats

        s = self.spec
        # Which shard this is (its input offset: the driver takes each shard once) and its size,
        # taken before any bad row is skipped: a shard whose every image was skipped has them too.
        offset, n_rows = int(batch["row"][0].as_py()), batch.num_rows
        batch, inputs, bad = self._prepare(batch)
        rows = batch["row"].to_numpy()
        probs = self.probs(inputs, rows) if self.labels is not None else None
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
            texts = inputs if self.modality == "text" else None  # images: no text analyses
            parts = self.analyses.batch(
                self, texts=texts, y_true=y_true, probs=probs, rows=rows, slice_values=slices
            )
        payload = {
            "stats": stats,
            "offset": offset,
            "rows": n_rows,
            "actor": self.actor_id,
            "node": self.node_id,
            "parts": parts,
            "analyses_s": time.perf_counter() - t0,
            "precision": self.precision,
            "device": self.device,
            "ready_at": self.ready_at,
            "bad": [(b.row, b.reason) for b in bad],
        }
        return _with_payload(self._columns(batch, probs), pickle.dumps(payload), batch.num_rows)

    def _prepare(self, batch: pa.Table) -> tuple:
        """(the batch less its skipped rows, the model's inputs, the skipped rows); texts pass as
        they are, images are decoded and preprocessed (cluster/models/modality.py)."""
        if self.clf is None:
            return batch, batch["text"].to_pylist(), []
        prepared = self.clf.prepare(
            batch[self.modality].to_pylist(),
            batch["row"].to_pylist(),
            skip_bad_rows=self.spec.skip_bad_rows,
            base_dir=self.base_dir,
        )
        if len(prepared.kept) < batch.num_rows:  # skipped rows leave the predictions and statistics
            batch = batch.take(pa.array(prepared.kept, pa.int64()))
        return batch, prepared.inputs, prepared.bad

    def _columns(self, batch: pa.Table, probs: np.ndarray | None) -> dict:
        out = {"row": batch["row"]}
        if "label" in batch.column_names:
            out["label"] = batch["label"]
        if probs is not None:
            pred = probs.argmax(1)
            k = probs.shape[1]
            out.update(
                pred=pa.array(self.labels[pred].tolist(), pa.string()),
                score=pa.array(probs[np.arange(len(pred)), pred]),
                probs=pa.ListArray.from_arrays(
                    pa.array(np.arange(0, len(pred) * k + 1, k, dtype=np.int32)), pa.array(probs.ravel())
                ),
            )
        if "id" in batch.column_names:
            out["id"] = batch["id"]
        return out


PLACEHOLDER_ROW = -1  # dropped by the driver (cluster/evaluation/pipeline.py) before writing predictions


def _with_payload(out: dict, payload: bytes, n: int) -> pa.Table:
    """The batch's statistics ride along in the first row (a few KB whatever the rows); a batch
    whose every row was skipped sends them in a placeholder row (row -1), typed like the others."""
    out["_stats"] = pa.array([payload] + [b""] * (n - 1), pa.binary())
    types = {"row": pa.int64(), "pred": pa.string(), "score": pa.float64(), "probs": pa.list_(pa.float64())}
    schema = pa.schema([(k, types.get(k, v.type)) for k, v in out.items()])
    if not n:
        out = {f.name: pa.nulls(1, f.type) for f in schema}
        out.update(row=pa.array([PLACEHOLDER_ROW]), _stats=pa.array([payload], pa.binary()))
    return pa.table(out, schema=schema)


def data_base_dir(path: str) -> str | None:
    """Where relative image paths in a dataset are resolved: the data file's directory."""
    from pathlib import Path

    if "://" in path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_dir() else p.parent)


class ModelActor:
    """A Ray actor holding one :class:`Predictor`: shards in, prediction tables out.

    The run's settings (batch size, max length, bootstrap, ...), its data and its analyses
    come with each call, so a warm actor serves any evaluation of its model at its precision.
    """

    def __init__(self, model: ModelSource, labels, spec: PipelineSpec, gpus: float, threads: int):
        # ``threads``: warm actors reserve no CPU, so Ray's hint is not theirs.
        self.predictor = Predictor(model, labels, spec, gpus, threads=threads)

    def ready(self) -> dict:
        """Answered once the model is loaded: when, the memory this process holds, where it runs
        and the torch threads it computes with now."""
        import torch

        from cluster.clock import rss_bytes

        p = self.predictor
        return {
            "at": time.time(),
            "rss": rss_bytes(),
            "pid": os.getpid(),
            "actor": p.actor_id,
            "node": p.node_id,
            "threads": torch.get_num_threads(),
        }

    def score(
        self, shard: dict, spec: PipelineSpec, data: DataSpec, analyses=None, threads: int | None = None
    ) -> pa.Table:
        """Read one shard of ``data`` (cluster/data/shards.py) and predict it under ``spec``'s settings,
        with ``analyses`` (cluster/stats/analyses.py; None: the core statistics only), on ``threads``
        torch threads (this run's plan; None: as they are)."""
        from cluster.data.shards import Shard, read_shard

        use_threads(threads)
        p = self.predictor
        p.spec, p.analyses, p.base_dir = spec, analyses, data_base_dir(data.path)
        return p(read_shard(Shard(**shard), data, modality=p.modality))

    def explain(self, texts: list[str], max_length: int, threads: int | None = None) -> list[dict]:
        """Token attributions (cluster/models/explain.py) of ``texts`` with this actor's model (fp32,
        as loaded: the run's precision applies to its predictions only)."""
        from cluster.models.explain import token_attributions

        use_threads(threads)
        p = self.predictor
        return [token_attributions(p.model, p.tokenizer, t, max_length=max_length) for t in texts]


def use_threads(threads: int | None) -> None:
    """Compute on ``threads`` torch threads from now on (None: leave them).

    A warm actor outlives the run that created it: the run using it says how many threads
    its plan gives each actor (2 actors x 1 thread or 1 x 2 on 2 CPUs), so a reused actor
    never runs more threads than its share of the CPUs (OpenMP threads beyond the free
    cores spin and wait on each other: measured 3x the CPU seconds, benchmarks/warm_inference.py).
    """
    import torch

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def where() -> tuple[str | None, str | None]:
    """(Ray actor id, Ray node id) of the calling process; (None, None) outside Ray."""
    import ray

    if not ray.is_initialized():
        return None, None
    ctx = ray.get_runtime_context()
    return ctx.get_actor_id(), ctx.get_node_id()
