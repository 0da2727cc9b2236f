"""Classification, text and images, as an evaluation task (the seam: cluster/evaluation/task.py).

    preprocess   text: tokenise the block, order it by token length (batches pad little);
                 images: decode + resize (cluster/data/images.py), a bad image kept as a ``_bad`` row
    model        cluster/evaluation/classify_model.py: probabilities, and what the analyses need
                 of the model (perturbed probabilities, embeddings, the mistakes' attributions)
    statistics   cluster/stats/metrics.py ``batch_stats`` (confusion counts, log-loss, calibration,
                 bootstrap) and cluster/stats/analyses.py (threshold metrics, weak slices, mistakes,
                 robustness; or the drift checks' summaries), all from the rows of one part file
    predictions  row, label, pred, score, probs, and the id column under its own name
    finalize     metrics.json's scores and sections

Pipeline columns: ``text`` or ``image`` (the model's input), ``label``, ``id``, ``slice`` (as the
data spec names them), then this module's ``_`` columns (see the constants below).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from cluster.data.images import Preprocessing, decode_images
from cluster.errors import UserError, first_items
from cluster.evaluation.classify_columns import (
    EMBED,
    EMBEDDING,
    ENC,
    ID,
    IMAGE,
    LABEL,
    NTOK,
    NUNK,
    PERTURBED,
    PIXELS,
    PROBS,
    SLICE,
    TEXT,
    TOKENS,
)
from cluster.evaluation.task import BAD, BATCH, CONTENT, ROW, EvalTask, TaskModel
from cluster.models.cache import ModelSource
from cluster.models.text import sorted_batches
from cluster.models.tokens import encode, token_counts
from cluster.specs.workloads import PipelineSpec
from cluster.stats.analyses import Analyses, DriftAnalyses

BLOCK_BYTES = 64 << 20  # decoded image bytes per block at most


@dataclass
class ClassifyTask(EvalTask):
    """A classifier (or, with ``labels`` None, a bare text encoder for drift checks) on some data."""

    name: ClassVar[str] = "classification"

    model: ModelSource
    modality: str  # "text" | "image"
    labels: list[str] | None
    columns: dict[str, str]  # pipeline column -> input column (cluster/evaluation/run.py: task_for)
    spec: PipelineSpec  # batch_size, max_length, precision, bootstrap, seed, skip_bad_rows
    analyses: Analyses | DriftAnalyses | None = None
    id_name: str | None = None  # the id column's name in the predictions (the input's own)
    base_dir: str | None = None  # where relative image paths are resolved
    preprocessing: Preprocessing | None = None  # images: from the model's config.json
    threads: int | None = None  # torch threads per model actor (None: the CPUs Ray gave it)
    run_token: str = ""  # tells a warm actor's per-run state (the mistakes' candidates) apart
    content_hash: bool = (
        False  # add ``_content`` (a ray.data.Dataset's fingerprint, cluster/evaluation/sink.py)
    )

    # ------------------------------------------------------------------ driver

    def input_columns(self) -> dict[str, str]:
        return dict(self.columns)

    def block_rows(self, rows_per_block: int) -> int:
        if self.modality != IMAGE or self.preprocessing is None:
            return rows_per_block
        per_row = 3 * self.preprocessing.image_size**2
        bs = self.spec.batch_size
        return max(bs, min(rows_per_block, BLOCK_BYTES // per_row) // bs * bs)

    def drift_analyses(self, block: pa.Table) -> DriftAnalyses | None:
        """The drift checks' settings for the rows of ``block`` (None: no drift checks)."""
        return self.analyses if isinstance(self.analyses, DriftAnalyses) else None

    @property
    def keeps_text(self) -> bool:
        """Whether the texts travel on past the CPU stage (analyses that read them)."""
        a = self.analyses
        return isinstance(a, DriftAnalyses) or bool(a and (a.auto_slices or a.mistakes or a.perturb))

    # ------------------------------------------------------------------ CPU stage

    def preprocess(self, block: pa.Table) -> pa.Table:
        block = _strings(block, (LABEL, SLICE))
        if self.content_hash:
            block = block.append_column(
                CONTENT, _content_hashes(block, TEXT if self.modality == TEXT else IMAGE)
            )
        return self._text(block) if self.modality == TEXT else self._images(block)

    def _text(self, block: pa.Table) -> pa.Table:
        """Tokenised, and ordered and batched as cluster/models/text.py ``predict_proba`` batches: by
        length within each sort group (``row // sort_rows``), batches never spanning two groups."""
        texts = block[TEXT].cast(pa.string()).to_pylist()
        path = str(self.model.local_path())
        enc = encode(texts, path, self.spec.max_length)
        rows = block[ROW].to_numpy()
        lengths = np.array([len(x) for x in enc["input_ids"]], np.int64)
        batches = sorted_batches(lengths, rows // self.spec.sort_rows, self.spec.batch_size)
        order = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        batch_ids = np.concatenate([np.full(len(b), rows[b[0]]) for b in batches]) if batches else order
        block = block.take(pa.array(order, pa.int64())).append_column(BATCH, pa.array(batch_ids, pa.int64()))
        for key, values in enc.items():
            block = block.append_column(ENC + key, pa.array([values[i] for i in order], pa.list_(pa.int32())))
        drift = self.drift_analyses(block)
        if drift is not None:
            t, u = token_counts([texts[i] for i in order], path)
            block = block.append_column(NTOK, pa.array(t, pa.int64())).append_column(
                NUNK, pa.array(u, pa.int64())
            )
            block = block.append_column(EMBED, pa.array(drift.embedded(block[ROW].to_numpy())))
        return block.set_column(block.schema.get_field_index(TEXT), TEXT, block[TEXT].cast(pa.string()))

    def _images(self, block: pa.Table) -> pa.Table:
        rows = block[ROW].to_pylist()
        d = decode_images(
            block[IMAGE].to_pylist(),
            self.preprocessing,
            rows=rows,
            skip_bad_rows=self.spec.skip_bad_rows,
            base_dir=self.base_dir,
        )
        kept = np.zeros(block.num_rows, bool)
        kept[d.kept] = True
        reasons = {b.row: b.reason for b in d.bad}
        block = block.drop_columns([IMAGE])
        block = block.append_column(PIXELS, _pixels_column(d.pixels, kept))
        block = block.append_column(BAD, pa.array([reasons.get(r) for r in rows], pa.string()))
        # Images are all one size: batches of input rows [k * batch_size, (k + 1) * batch_size).
        batch = np.asarray(rows, np.int64) // self.spec.batch_size
        return block.append_column(BATCH, pa.array(batch, pa.int64()))

    # ------------------------------------------------------------------ model stage

    def load(self, device: str) -> TaskModel:
        from cluster.evaluation.classify_model import ClassifyModel

        return ClassifyModel(self, device)

    # ------------------------------------------------------------------ write stage

    def statistics(self, rows: pa.Table) -> dict[str, Any]:
        ids, probs = rows[ROW].to_numpy(), self._probs(rows)
        y = self._label_ids(rows) if LABEL in rows.column_names and self.labels else None
        slices = rows[SLICE].to_numpy(zero_copy_only=False) if SLICE in rows.column_names else None
        texts = rows[TEXT].to_pylist() if TEXT in rows.column_names else None
        parts: dict[str, Any] = {}
        if y is not None:
            from cluster.stats.metrics import batch_stats

            s = self.spec
            parts["core"] = batch_stats(y, probs, rows=ids, bootstrap=s.bootstrap, seed=s.seed, slices=slices)
        if isinstance(self.analyses, DriftAnalyses):
            found = {"lengths": rows[NTOK].to_numpy(), "unknown": rows[NUNK].to_numpy()}
            found["vectors"] = rows[EMBEDDING].to_pylist()
            parts.update(self.analyses.batch(rows=ids, probs=probs, **found))
        elif self.analyses is not None and y is not None:
            perturbed = {k: _matrix(rows[PERTURBED + k]) for k in self.analyses.perturb}
            tokens = rows[TOKENS].to_pylist() if TOKENS in rows.column_names else None
            found = {"perturbed": perturbed, "tokens": tokens, "slice_values": slices}
            parts.update(self.analyses.batch(texts=texts, y_true=y, probs=probs, rows=ids, **found))
        return parts

    def _probs(self, rows: pa.Table) -> np.ndarray | None:
        return _matrix(rows[PROBS]) if PROBS in rows.column_names else None

    def _label_ids(self, rows: pa.Table) -> np.ndarray:
        index = {lab: i for i, lab in enumerate(self.labels)}
        names = rows[LABEL].to_pylist()
        unknown = sorted({n for n in names if n not in index}, key=str)
        if unknown:
            known = ", ".join(self.labels)
            raise UserError(f"labels unknown to the model: {first_items(unknown)}; it predicts {known}")
        return np.fromiter((index[n] for n in names), np.int64, len(names))

    def predictions(self, rows: pa.Table) -> pa.Table:
        cols: dict[str, pa.ChunkedArray | pa.Array] = {ROW: rows[ROW]}
        if LABEL in rows.column_names:
            cols[LABEL] = rows[LABEL]
        if PROBS in rows.column_names and self.labels:
            probs = _matrix(rows[PROBS])
            pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
            cols["pred"] = pa.array(np.array(self.labels, dtype=object)[pred].tolist(), pa.string())
            cols["score"] = pa.array(probs[np.arange(len(pred)), pred], pa.float64())
            cols[PROBS] = rows[PROBS].cast(pa.list_(pa.float64()))
        if ID in rows.column_names:
            cols[self.id_name or ID] = rows[ID]
        return pa.table(cols)

    # ------------------------------------------------------------------ driver, at the end

    def finalize(self, merged: dict[str, Any]) -> dict:
        from cluster.stats.analyses import finalize as finalize_analyses
        from cluster.stats.metrics import empty_stats, finalize, slice_metrics

        stats = merged.get("core") or empty_stats(len(self.labels), self.spec.bootstrap)
        metrics = finalize(stats, self.labels)
        if SLICE in self.columns:
            metrics["slices"] = slice_metrics(stats, self.labels)
        if isinstance(self.analyses, Analyses):
            parts = {k: v for k, v in merged.items() if k != "core"}
            finalize_analyses(parts, self.spec, self.labels, metrics)
        return metrics


def _content_hashes(block: pa.Table, column: str) -> pa.Array:
    """(n,) uint64: a hash of each row's position, label and input (bytes, or text as UTF-8)."""
    rows, values = block[ROW].to_pylist(), block[column].to_pylist()
    labels = block[LABEL].to_pylist() if LABEL in block.column_names else [None] * len(rows)
    out = np.empty(len(rows), np.uint64)
    for i, (row, label, value) in enumerate(zip(rows, labels, values, strict=True)):
        h = hashlib.blake2b(f"{row}\x1f{label or ''}\x1f".encode(), digest_size=8)
        h.update(value if isinstance(value, bytes) else str(value).encode())
        out[i] = int.from_bytes(h.digest(), "little")
    return pa.array(out)


def _strings(block: pa.Table, names: tuple[str, ...]) -> pa.Table:
    for name in names:
        if name in block.column_names:
            block = block.set_column(block.schema.get_field_index(name), name, block[name].cast(pa.string()))
    return block


def _pixels_column(pixels: np.ndarray, kept: np.ndarray) -> pa.Array:
    """(n,) fixed-size binary of the decoded images (uint8 (k, 3, S, S) for the ``kept`` rows), null
    where a row was not kept; one buffer, no per-row copies."""
    n = len(kept)
    size = math.prod(pixels.shape[1:]) if pixels.ndim == 4 else 1
    full = np.zeros((n, size), np.uint8)
    full[kept] = pixels.reshape(len(pixels), size)
    validity = pa.array(kept, pa.bool_()).buffers()[1]
    nulls = int((~kept).sum())
    return pa.Array.from_buffers(pa.binary(size), n, [validity, pa.py_buffer(full)], null_count=nulls)


def _matrix(col) -> np.ndarray:
    """A list<float> column of equal-length rows -> (n, k) float64 (no per-row Python objects)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if not n:
        return np.zeros((0, 0))
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return flat.reshape(n, -1)
