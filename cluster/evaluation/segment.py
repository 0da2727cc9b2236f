"""Semantic segmentation as an evaluation task (the seam: cluster/evaluation/task.py).

    preprocess   decode each image (the model's input size) and its mask (at the image's own size,
                 checked against the classes: cluster/data/masks.py); a bad pair is a ``_bad`` row
    model        cluster/evaluation/segment_model.py: the mask at each image's size, its pixel
                 confusion matrix against the true mask, the predicted mask as a PNG, a thumbnail
    statistics   cluster/stats/segmentation.py: the pixel confusion matrix, its Poisson-bootstrap
                 replicates over images, per-image IoU, the worst images' overlays
    predictions  row, id, iou, pixel_accuracy, width, height, pred_mask (PNG), cm_cells/cm_counts
    finalize     metrics.json's scores (docs/contracts.md: segmentation)

Pipeline columns: ``image``, ``mask``, ``id`` (as the data spec names them), then the ``_``
columns of cluster/evaluation/segment_columns.py. An image's whole confusion matrix is a column
the model stage adds (``_cm_cells``, ``_cm_counts``: its non-zero cells), so the write stage only
adds matrices up: the statistics of a part file are a pure function of its rows and merge exactly.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.data.images import Preprocessing
from cluster.data.masks import MaskRules, decode_pairs
from cluster.evaluation.segment_columns import (
    CELLS,
    COUNTS,
    ID,
    IMAGE,
    MASK,
    PIXELS,
    PRED,
    SIZE,
    THUMB,
    TRUE,
    fixed_binary,
    thumb_side,
)
from cluster.evaluation.task import BAD, BATCH, CONTENT, ROW, EvalTask
from cluster.stats import segmentation as seg

BLOCK_BYTES = 64 << 20  # decoded bytes per block at most


@dataclass
class SegmentTask(EvalTask):
    """A segmentation model on image + mask data."""

    name: ClassVar[str] = "segmentation"

    model: Any  # cluster.models.cache.ModelSource
    labels: list[str]
    columns: dict[str, str]  # pipeline column -> input column
    spec: Any  # PipelineSpec: batch_size, precision, bootstrap, seed, skip_bad_rows
    preprocessing: Preprocessing
    ignore_index: int = seg.IGNORE_INDEX  # the data's unlabelled value (read as 255 from then on)
    id_name: str | None = None
    base_dir: str | None = None
    threads: int | None = None  # torch threads per model actor (None: the CPUs Ray gave it)
    run_token: str = ""  # a warm actor tells runs apart by it (cluster/evaluation/warm.py)
    content_hash: bool = False  # add ``_content`` (a ray.data.Dataset's fingerprint)

    # ------------------------------------------------------------------ driver

    def input_columns(self) -> dict[str, str]:
        return dict(self.columns)

    def block_rows(self, rows_per_block: int) -> int:
        per_row = 3 * self.preprocessing.image_size**2
        bs = self.spec.batch_size
        return max(bs, min(rows_per_block, BLOCK_BYTES // per_row) // bs * bs)

    # ------------------------------------------------------------------ CPU stage

    def preprocess(self, block: pa.Table) -> pa.Table:
        """Decode and check each pair; the rows keep their order (images are all one size)."""
        from cluster.report.masks import mask_png

        rows = block[ROW].to_pylist()
        d = decode_pairs(
            block[IMAGE].to_pylist(),
            block[MASK].to_pylist(),
            self.preprocessing,
            MaskRules(len(self.labels), self.ignore_index),
            rows=rows,
            skip_bad_rows=self.spec.skip_bad_rows,
            base_dir=self.base_dir,
        )
        n, kept = block.num_rows, np.zeros(block.num_rows, bool)
        kept[d.kept] = True
        true: list = [None] * n
        size: list = [None] * n
        for j, i in enumerate(d.kept):
            true[i], size[i] = mask_png(d.masks[j]), list(d.sizes[j])
        reasons = {b.row: b.reason for b in d.bad}
        first = int(pc.min(block[ROW]).as_py()) if n else 0
        out = block.drop_columns([IMAGE, MASK])
        if self.content_hash:
            out = out.append_column(CONTENT, content_hashes(block))
        side = self.preprocessing.image_size
        out = out.append_column(PIXELS, fixed_binary(d.pixels, kept, 3 * side * side))
        out = out.append_column(TRUE, pa.array(true, pa.binary()))
        out = out.append_column(SIZE, pa.array(size, pa.list_(pa.int32(), 2)))
        out = out.append_column(BAD, pa.array([reasons.get(r) for r in rows], pa.string()))
        batch = first + np.arange(n, dtype=np.int64) // self.spec.batch_size
        return out.append_column(BATCH, pa.array(batch, pa.int64()))

    # ------------------------------------------------------------------ model stage

    def load(self, device: str):
        from cluster.evaluation.segment_model import SegmentModel

        return SegmentModel(self, device)

    # ------------------------------------------------------------------ write stage

    def statistics(self, rows: pa.Table) -> dict[str, Any]:
        k = len(self.labels)
        cms = confusions(rows, k)
        ids = rows[ROW].to_numpy()
        s = self.spec
        stats = seg.stats_from_confusions(cms, ids, bootstrap=s.bootstrap, seed=s.seed)
        # Overlays only for this part's worst images: the merge keeps the WORST lowest of them all.
        ious = seg.image_iou(cms) if len(cms) else np.zeros(0)
        order = sorted(range(len(ids)), key=lambda i: (-1.0 if np.isnan(ious[i]) else ious[i], ids[i]))
        stats.worst = [
            (float(-1.0 if np.isnan(ious[i]) else ious[i]), int(ids[i]), self._overlay(rows, i))
            for i in order[: seg.WORST]
        ]
        return {"segmentation": stats}

    def _overlay(self, rows: pa.Table, i: int) -> bytes:
        """The thumbnail three times: as the model saw it, with the true mask, with the predicted one."""
        from cluster.report.masks import overlay

        t = thumb_side(self.preprocessing)
        thumb = np.frombuffer(rows[THUMB][i].as_py(), np.uint8).reshape(3, t, t).transpose(1, 2, 0)
        panels = [thumb]
        for col in (TRUE, PRED):
            mask = _resized_label_map(rows[col][i].as_py(), t)
            panels.append(overlay(thumb, np.where(mask == seg.IGNORE_INDEX, 0, mask), self.labels))
        return _png(np.concatenate(panels, axis=1))

    def predictions(self, rows: pa.Table) -> pa.Table:
        cms = confusions(rows, len(self.labels))
        total = cms.sum((1, 2))
        correct = np.trace(cms, axis1=1, axis2=2) if len(cms) else np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            pixel_acc = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
        sizes = np.array(rows[SIZE].to_pylist(), dtype=np.int64).reshape(-1, 2)
        cols = {
            ROW: rows[ROW],
            "iou": pa.array(seg.image_iou(cms) if len(cms) else np.zeros(0), pa.float64()),
            "pixel_accuracy": pa.array(pixel_acc, pa.float64()),
            "width": pa.array(sizes[:, 0], pa.int32()),
            "height": pa.array(sizes[:, 1], pa.int32()),
            "pred_mask": rows[PRED],
            "cm_cells": rows[CELLS],
            "cm_counts": rows[COUNTS],
        }
        if ID in rows.column_names:
            cols[self.id_name or ID] = rows[ID]
        return pa.table(cols)

    # ------------------------------------------------------------------ driver, at the end

    def finalize(self, merged: dict[str, Any]) -> dict:
        stats = merged.get("segmentation") or seg.empty_stats(len(self.labels), self.spec.bootstrap)
        metrics = seg.finalize(stats, self.labels)
        metrics["worst_images"] = [
            {
                "row": row,
                "iou": None if iou < 0 else iou,
                "overlay_png": base64.b64encode(png).decode("ascii"),
            }
            for iou, row, png in sorted(stats.worst, key=lambda t: (t[0], t[1]))
        ]
        return metrics


def refuse_classification_analyses(spec, model_id: str) -> None:
    """What a segmentation evaluation does not do, refused in one line before anything starts."""
    from cluster.errors import UserError

    asked = [
        name
        for name, on in (
            ("--slice-column", spec.data.slice_column),
            ("--auto-slices", getattr(spec, "auto_slices", False)),
            ("perturbations (robustness)", getattr(spec, "perturb", None)),
        )
        if on
    ]
    if asked:
        raise UserError(
            f"model {model_id} is a segmentation model: {', '.join(asked)} score classifiers; a "
            "segmentation evaluation reports per-class IoU, the pixel confusion matrix and the worst images"
        )


def segment_task(spec, model, labels: list[str], data, run_token: str = "") -> SegmentTask:
    """The task of a segmentation ``model`` (a cluster.models.resolve.ModelRef) on ``data`` (a DataSpec:
    image, mask and id columns, ``ignore_index``); its preprocessing from the model's config.json.
    cluster/evaluation/tasks.py ``task_for`` calls it for a model whose config.json says segmentation."""
    from cluster.data.pairs import data_dir
    from cluster.models.segmentation import read_segmentation_config

    columns = {IMAGE: data.image_column, MASK: data.mask_column}
    if data.id_column:
        columns[ID] = data.id_column
    return SegmentTask(
        model=model.source,
        labels=list(labels),
        columns=columns,
        spec=spec,
        preprocessing=read_segmentation_config(model.path).preprocessing,
        ignore_index=data.ignore_index,
        id_name=data.id_column,
        base_dir=data_dir(data.path),
        run_token=run_token,
    )


# ------------------------------------------------------------------ columns


def confusions(rows: pa.Table, k: int) -> np.ndarray:
    """(n, k, k) int64 pixel confusion matrices of the rows, from their non-zero cells."""
    cells, counts = rows[CELLS].to_pylist(), rows[COUNTS].to_pylist()
    out = np.zeros((len(cells), k * k), np.int64)
    for i, (c, n) in enumerate(zip(cells, counts, strict=True)):
        out[i, c] = n
    return out.reshape(-1, k, k)


def content_hashes(block: pa.Table) -> pa.Array:
    """(n,) uint64: a hash of each row's position, image and mask (bytes, or a path as UTF-8)."""
    out = np.empty(block.num_rows, np.uint64)
    cols = zip(block[ROW].to_pylist(), block[IMAGE].to_pylist(), block[MASK].to_pylist(), strict=True)
    for i, (row, image, mask) in enumerate(cols):
        h = hashlib.blake2b(f"{row}\x1f".encode(), digest_size=8)
        for value in (image, mask):
            h.update(value if isinstance(value, bytes) else str(value).encode())
            h.update(b"\x1f")
        out[i] = int.from_bytes(h.digest(), "little")
    return pa.array(out)


def _resized_label_map(png: bytes, side: int) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(png))
    return np.asarray(img.resize((side, side), Image.Resampling.NEAREST), dtype=np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()
