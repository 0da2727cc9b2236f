"""The classification task's model (cluster/evaluation/classify.py), as a model-stage actor holds it.

``predict`` gets one model batch: rows of one ``_batch`` value, ordered and tokenised (text) or
decoded (images) by the CPU stage. It adds ``probs`` and what the analyses need of the model:

    _probs@KIND   robustness: the perturbed texts' probabilities (a row whose tokens did not change
                  keeps its clean ones: cluster/stats/analyses.py ``perturbed_probs``)
    _embedding    drift: mean-pooled embeddings of the hash-sampled rows
    _tokens       mistakes: token attributions (gradient x input, cluster/models/explain.py) of each
                  row that enters this actor's running top-``mistakes`` of its confused pair. A row of
                  the run's final top-k is in its actor's running top-k when it arrives, so every
                  example the report shows has them, at the cost of a few candidates per actor
                  (about k log(blocks) per pair), not a second model load after the run.
"""

from __future__ import annotations

import heapq
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from cluster.evaluation.classify_columns import (
    EMBED,
    EMBEDDING,
    ENC,
    LABEL,
    PERTURBED,
    PIXELS,
    PROBS,
    TEXT,
    TOKENS,
)
from cluster.evaluation.task import BAD, ROW, EvalTask
from cluster.models.device import autocast, resolve_precision
from cluster.models.text import load_encoder, predict_proba
from cluster.stats.analyses import Analyses, perturbed_probs

ATTRIBUTION_THREADS = 1  # the same numbers whatever thread count inference runs with


class ClassifyModel:
    """One loaded classifier (or bare encoder) and its per-run state (the mistakes' candidates)."""

    def __init__(self, task: EvalTask, device: str):
        from cluster.models.modality import load_trained
        from cluster.ray.runtime import worker_threads

        torch.set_num_threads(task.threads or worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.task, self.device = task, device
        path = task.model.local_path()  # a stored model: downloaded once per node, verified
        if task.labels is None:
            self.model, self.tokenizer = load_encoder(path, device=device)
            self.clf = None
        else:
            self.clf = load_trained(path, device=device)
            self.model, self.tokenizer = self.clf.model, self.clf.tokenizer
        self.precision = resolve_precision(task.spec.precision, device)
        if task.modality == "image":  # BatchNorm folded, kernels built now rather than on the first batch
            from cluster.models.vision import prepare_for_inference

            prepare_for_inference(self.model, batch_size=task.spec.batch_size, precision=self.precision)
        self.candidates: dict[str, dict] = {}  # run token -> {(label, pred): heap of (score, -row)}

    def use(self, task: EvalTask) -> None:
        """A warm actor serves a later run of the same model: that run's settings from now on."""
        self.task = task
        if task.threads and torch.get_num_threads() != task.threads:
            torch.set_num_threads(task.threads)

    # ------------------------------------------------------------------ one model batch

    def predict(self, batch: pa.Table) -> pa.Table:
        good = np.ones(batch.num_rows, bool)
        if BAD in batch.column_names:
            good = ~pc.is_valid(batch[BAD]).to_numpy(zero_copy_only=False)
        out = batch.drop_columns([c for c in batch.column_names if c.startswith(ENC) or c == PIXELS])
        idx = np.flatnonzero(good)
        if self.clf is not None:
            probs = self._probs(batch, idx)
            out = out.append_column(PROBS, _rows(probs, idx, batch.num_rows, pa.float64()))
            out = self._analyses(out, probs, idx)
        elif EMBED in out.column_names:
            out = self._embeddings(out, idx)
        return out

    def _probs(self, batch: pa.Table, idx: np.ndarray) -> np.ndarray:
        """(len(idx), k) float64 probabilities of the batch's good rows, one forward pass."""
        if not len(idx):
            return np.zeros((0, len(self.task.labels)))
        with torch.inference_mode(), autocast(self.precision, self.device):
            if self.task.modality == "text":
                wanted = set(self.tokenizer.model_input_names)  # e.g. no token_type_ids for DistilBERT
                keys = [c for c in batch.column_names if c.startswith(ENC) and c[len(ENC) :] in wanted]
                cols = {k[len(ENC) :]: batch[k].to_pylist() for k in keys}
                feats = [{k: v[i] for k, v in cols.items()} for i in idx]
                inputs = dict(self.tokenizer.pad(feats, return_tensors="pt").to(self.device))
                logits = self.model(**inputs).logits.float()
            else:
                from cluster.data.images import normalize

                x = normalize(_pixels(batch, idx), self.model.config.preprocessing).to(self.device)
                logits = self.model(x).logits.float()
        return torch.softmax(logits, dim=-1).double().cpu().numpy()

    # ------------------------------------------------------------------ what the analyses need

    def _analyses(self, out: pa.Table, probs: np.ndarray, idx: np.ndarray) -> pa.Table:
        a, n = self.task.analyses, out.num_rows
        if EMBED in out.column_names:
            return self._embeddings(out, idx)
        if not isinstance(a, Analyses) or not len(idx):
            return out
        texts = out[TEXT].to_pylist() if TEXT in out.column_names else None
        good_texts = None if texts is None else [texts[i] for i in idx]
        rows = out[ROW].to_numpy()[idx]
        for kind in a.perturb:
            from cluster.data.perturb import perturb

            new = perturb(good_texts, kind=kind, rate=a.rate, seed=a.seed, rows=rows)
            changed = perturbed_probs(self, good_texts, new, probs, rows)
            out = out.append_column(PERTURBED + kind, _rows(changed, idx, n, pa.float64()))
        if a.mistakes and good_texts is not None and LABEL in out.column_names:
            out = out.append_column(TOKENS, self._attributions(out, probs, idx, good_texts))
        return out

    def _attributions(self, out: pa.Table, probs: np.ndarray, idx: np.ndarray, texts: list[str]) -> pa.Array:
        """Token attributions (JSON) of the rows entering this actor's running top-k of their pair."""
        from cluster.models.explain import token_attributions

        index = {lab: i for i, lab in enumerate(self.task.labels)}
        labels, rows = out[LABEL].to_pylist(), out[ROW].to_numpy()
        heaps = self.candidates.setdefault(self.task.run_token, {})
        tokens: list[str | None] = [None] * out.num_rows
        top, threads = self.task.analyses.mistakes, torch.get_num_threads()
        for j, i in enumerate(idx):
            y, pred = index.get(labels[i]), int(probs[j].argmax())
            if y is None or y == pred:
                continue
            if not _enters(heaps.setdefault((y, pred), []), (probs[j, pred], -int(rows[i])), top):
                continue
            torch.set_num_threads(ATTRIBUTION_THREADS)
            a = token_attributions(self.model, self.tokenizer, texts[j], max_length=self.task.spec.max_length)
            tokens[i] = json.dumps(a["tokens"])
        torch.set_num_threads(threads)
        return pa.array(tokens, pa.string())

    def _embeddings(self, out: pa.Table, idx: np.ndarray) -> pa.Table:
        from cluster.stats.drift import mean_pooled_embeddings

        n, texts = out.num_rows, out[TEXT].to_pylist()
        pick = idx[out[EMBED].to_numpy(zero_copy_only=False)[idx]]
        vectors: list = [None] * n
        if len(pick):
            s, chosen = self.task.spec, [texts[i] for i in pick]
            emb = mean_pooled_embeddings(
                self.model, self.tokenizer, chosen, max_length=s.max_length, batch_size=s.batch_size
            )
            for i, v in zip(pick, emb, strict=True):
                vectors[i] = v.tolist()
        return out.append_column(EMBEDDING, pa.array(vectors, pa.list_(pa.float32())))

    # ------------------------------------------------------------------ the runner of perturbed_probs

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.task.spec.max_length)["input_ids"]

    def probs(self, texts: list[str], rows: np.ndarray) -> np.ndarray:
        """Probabilities of ``texts`` (rows ``rows``), batched within their sort groups."""
        s = self.task.spec
        sizes = {"max_length": s.max_length, "batch_size": s.batch_size, "groups": rows // s.sort_rows}
        return predict_proba(self.model, self.tokenizer, texts, precision=self.precision, **sizes)


def _enters(heap: list, key: tuple, top: int) -> bool:
    """Push ``key`` into a min-heap of the ``top`` largest; whether it entered."""
    if len(heap) < top:
        heapq.heappush(heap, key)
        return True
    if key > heap[0]:
        heapq.heapreplace(heap, key)
        return True
    return False


def _rows(values: np.ndarray, idx: np.ndarray, n: int, dtype: pa.DataType) -> pa.Array:
    """(n,) list column: ``values[j]`` at row ``idx[j]``, null elsewhere (bad rows)."""
    k = values.shape[1] if values.ndim == 2 else 0
    offsets = np.zeros(n + 1, np.int32)
    lengths = np.zeros(n, np.int32)
    lengths[idx] = k
    offsets[1:] = np.cumsum(lengths)
    mask = np.ones(n, bool)
    mask[idx] = False
    flat = pa.array(values.reshape(-1), dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(mask) if mask.any() else None)


def _pixels(batch: pa.Table, idx: np.ndarray) -> np.ndarray:
    """uint8 (len(idx), 3, S, S) of the batch's good rows, from the fixed-size binary column."""
    arr = batch[PIXELS].combine_chunks()
    size = arr.type.byte_width
    side = int(round((size / 3) ** 0.5))
    data = np.frombuffer(arr.buffers()[1], np.uint8, count=(arr.offset + len(arr)) * size)
    return data.reshape(-1, 3, side, side)[arr.offset :][idx]
