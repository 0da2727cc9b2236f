"""The segmentation task's model (cluster/evaluation/segment.py), as a model-stage actor holds it.

``predict`` gets one model batch (rows of one ``_batch`` value, decoded by the CPU stage) and adds,
per good row: the predicted mask at the image's own size (per-pixel probabilities at the model's
input size, upsampled bilinearly, most probable class: cluster/models/segmenter.py ``masks_at``, as
the scorer does) as a palette PNG label map (``_pred``), its pixel confusion matrix against the
true mask (``_cm_cells``/``_cm_counts``), and a thumbnail of the input (``_thumb``) for the
report's worst images. The decoded pixels are dropped.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.evaluation.segment_columns import (
    CELLS,
    COUNTS,
    PIXELS,
    PRED,
    SIZE,
    THUMB,
    TRUE,
    fixed_binary,
    thumb_side,
)
from cluster.evaluation.task import BAD


class SegmentModel:
    """One loaded segmentation model, ready for inference (BatchNorm folded, kernels built)."""

    def __init__(self, task, device: str):
        import torch

        from cluster.models.device import resolve_precision
        from cluster.models.modality import load_trained
        from cluster.models.vision import prepare_for_inference
        from cluster.ray.runtime import worker_threads

        torch.set_num_threads(task.threads or worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.task, self.device = task, device
        self.seg = load_trained(task.model.local_path(), device=device)  # a Segmenter
        self.precision = resolve_precision(task.spec.precision, device)
        prepare_for_inference(self.seg.model, batch_size=task.spec.batch_size, precision=self.precision)

    def use(self, task) -> None:
        """A warm actor serves a later run of the same model: that run's settings from now on."""
        import torch

        self.task = task
        if task.threads and torch.get_num_threads() != task.threads:
            torch.set_num_threads(task.threads)

    def predict(self, batch: pa.Table) -> pa.Table:
        from cluster.models.segmenter import masks_at
        from cluster.report.masks import mask_png
        from cluster.stats.segmentation import image_confusion, sparse_cells

        n, k = batch.num_rows, len(self.task.labels)
        good = np.ones(n, bool)
        if BAD in batch.column_names:
            good = ~pc.is_valid(batch[BAD]).to_numpy(zero_copy_only=False)
        idx = np.flatnonzero(good)
        side = self.seg.model.config.preprocessing.image_size
        pixels = _pixels(batch, idx, side)
        probs = self.seg.predict_proba(pixels, precision=self.precision, batch_size=max(len(idx), 1))
        cells: list = [None] * n
        counts: list = [None] * n
        preds: list = [None] * n
        sizes, trues = batch[SIZE].to_pylist(), batch[TRUE].to_pylist()
        for j, i in enumerate(idx):
            pred = masks_at(probs[j], tuple(sizes[i]))
            cells[i], counts[i] = sparse_cells(image_confusion(_label_map(trues[i]), pred, k))
            preds[i] = mask_png(pred)
        out = batch.drop_columns([PIXELS])
        out = out.append_column(CELLS, pa.array(cells, pa.list_(pa.int32())))
        out = out.append_column(COUNTS, pa.array(counts, pa.list_(pa.int64())))
        out = out.append_column(PRED, pa.array(preds, pa.binary()))
        t = thumb_side(self.seg.model.config.preprocessing)
        return out.append_column(THUMB, fixed_binary(_thumbs(pixels, t), good, 3 * t * t))


def _pixels(batch: pa.Table, idx: np.ndarray, side: int) -> np.ndarray:
    """uint8 (len(idx), 3, S, S) of the good rows, from the fixed-size binary column."""
    col = batch[PIXELS].combine_chunks()
    flat = np.frombuffer(
        col.buffers()[1], np.uint8, count=len(col) * 3 * side * side, offset=col.offset * 3 * side * side
    )
    return flat.reshape(len(col), 3, side, side)[idx]


def _thumbs(pixels: np.ndarray, side: int) -> np.ndarray:
    """(n, 3, T, T) uint8: the inputs at ``side`` (as they are when already that size)."""
    if not len(pixels) or pixels.shape[-1] == side:
        return pixels
    import torch
    from torch.nn import functional as F

    t = F.interpolate(torch.from_numpy(pixels).float(), size=(side, side), mode="bilinear", antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def _label_map(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint8)
