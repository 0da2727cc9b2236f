"""The segmentation task's pipeline columns (cluster/evaluation/segment.py, segment_model.py).

Besides ``row`` and the task seam's ``_bad``/``_batch`` (cluster/evaluation/task.py): the input
columns as the data spec names them, then the task's own ``_`` columns between stages, and the
two helpers both stages build them with.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster.data.images import Preprocessing

IMAGE, MASK, ID = "image", "mask", "id"
PIXELS = "_pixels"  # decoded uint8 (3, S, S) model input, fixed-size binary (null for a bad row)
TRUE = "_true"  # the true mask at the image's size, a PNG label map (255 = unlabelled)
SIZE = "_size"  # (width, height) of the image as given
CELLS, COUNTS = "_cm_cells", "_cm_counts"  # the image's pixel confusion matrix, non-zero cells
PRED = "_pred"  # the predicted mask at the image's size, a palette PNG label map
THUMB = "_thumb"  # the model input at thumb_side(), uint8 (3, T, T), for the worst images' overlays
THUMB_SIDE = 96  # at most


def thumb_side(prep: Preprocessing) -> int:
    return min(prep.image_size, THUMB_SIDE)


def fixed_binary(pixels: np.ndarray, kept: np.ndarray, size: int) -> pa.Array:
    """(n,) binary of ``size`` bytes each: the uint8 arrays of ``pixels`` (the ``kept`` rows' ones, in
    order) at those rows, null elsewhere; the type is the same whichever rows were kept."""
    n = len(kept)
    full = np.zeros((n, size), np.uint8)
    if len(pixels):
        full[kept] = pixels.reshape(len(pixels), size)
    validity = pa.array(kept, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        pa.binary(size), n, [validity, pa.py_buffer(full)], null_count=int((~kept).sum())
    )
