"""Image + mask pairs for semantic segmentation: decoding and checking them, tables and folder trees.

A mask is a label map: a single-channel image (mode L, or P whose palette indices are the values,
as PASCAL VOC's masks; 1, I;16 and I are read as their integer values), pixel value = class index
0..K-1 of the spec's ``classes``, ``ignore_index`` (default 255) = an unlabelled pixel, left out of
the loss and the metrics; it is read as 255 from then on (a class index is < 255). Images are
decoded by cluster/data/images.py (the classifier's own path).

A pair that cannot be used is a UserError naming its row (and file, for a folder tree), or with
``skip_bad_rows`` is left out, counted and listed (``DecodedPairs.bad``):
  - the image or the mask cannot be read or decoded (or is empty, zero-size, above the limits);
  - the mask is not a label map (RGB, RGBA, ...);
  - the mask's size differs from its image's;
  - the mask holds a value outside 0..K-1 that is not ``ignore_index``;
  - (folder trees) an image has no mask.

Datasets of pairs (tables, folder trees) as a whole: cluster/data/pairs.py.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.data.images import (
    MAX_BYTES,
    MAX_PIXELS,
    BadImage,
    BadRow,
    Preprocessing,
    open_image,
    read_source,
    to_array,
)
from cluster.errors import UserError, first_items

log = logging.getLogger(__name__)
IGNORE_INDEX = 255
MASK_MODES = ("L", "P", "1", "I;16", "I")  # single-channel modes whose values are class indices
SKIP_HINT = "fix or drop that row, or skip bad rows (--skip-bad-rows counts and reports them)"


@dataclass(frozen=True)
class MaskRules:
    """What a valid mask holds: values 0..num_classes-1, or ignore_index."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        if not 2 <= self.num_classes <= IGNORE_INDEX:
            raise UserError(f"segmentation needs 2 to {IGNORE_INDEX} classes, got {self.num_classes}")
        if 0 <= self.ignore_index < self.num_classes:
            raise UserError(
                f"ignore_index {self.ignore_index} is a class index (0..{self.num_classes - 1}); "
                "choose a value outside them (default 255)"
            )


@dataclass
class DecodedPairs:
    """The usable pairs of a batch: model input, masks, and the rows that could not be used."""

    pixels: np.ndarray  # (n_ok, 3, S, S) uint8 RGB, the model's input size
    masks: list  # n_ok masks: (H, W) uint8 at the image's own size, or (S, S) with ``resize_masks``
    sizes: list  # n_ok (width, height) of each image as given
    kept: np.ndarray  # (n_ok,) int64 positions in the input, ascending
    bad: list[BadRow] = field(default_factory=list)


# ------------------------------------------------------------------ one mask


def open_mask(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a label-map mask -> (H, W) int64 class indices, refusing what is no label map."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=("PNG", "BMP", "GIF", "WEBP"))
    except Image.DecompressionBombError as exc:
        raise BadImage(f"is above the pixel limit ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImage(
            "cannot be decoded as a mask (a PNG label map: one channel, value = class index)"
        ) from exc
    w, h = img.size
    if w == 0 or h == 0:
        raise BadImage(f"has zero size ({w}x{h})")
    if w * h > max_pixels:
        raise BadImage(f"is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
    if img.mode not in MASK_MODES:
        raise BadImage(
            f"has mode {img.mode}, not a label map: a mask has one channel (mode L or P), "
            "pixel value = class index"
        )
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"is corrupt or truncated ({img.format}: {str(exc).splitlines()[0]})") from exc
    return np.asarray(img, dtype=np.int64)  # P: the palette indices, not the colours


def check_mask(mask: np.ndarray, image_size: tuple[int, int], rules: MaskRules) -> np.ndarray:
    """The mask as uint8, its unlabelled pixels 255, if it fits its image (``image_size`` = (width,
    height)) and the classes."""
    h, w = mask.shape
    if (w, h) != tuple(image_size):
        raise BadImage(f"is {w}x{h}, its image {image_size[0]}x{image_size[1]}: a mask must match its image")
    values = np.unique(mask)
    outside = values[((values < 0) | (values >= rules.num_classes)) & (values != rules.ignore_index)]
    if outside.size:
        raise BadImage(
            f"has value(s) {first_items(outside.tolist(), 3)} outside the {rules.num_classes} classes "
            f"0..{rules.num_classes - 1} (and not ignore_index {rules.ignore_index})"
        )
    return np.where(mask == rules.ignore_index, IGNORE_INDEX, mask).astype(np.uint8)


def resize_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """(H, W) uint8 -> (side, side) by nearest neighbour (a label is never blended with another)."""
    from PIL import Image

    if mask.shape == (side, side):
        return mask
    return np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.NEAREST), dtype=np.uint8)


# ------------------------------------------------------------------ batches


def decode_pairs(
    images: Sequence,
    masks: Sequence,
    prep: Preprocessing,
    rules: MaskRules,
    *,
    rows: Sequence[int] | None = None,
    skip_bad_rows: bool = False,
    base_dir: str | Path | None = None,
    resize_masks: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> DecodedPairs:
    """Decode and check a batch of (image, mask) pairs. Images become the model's input (``prep``);
    masks stay at their image's size (what the metrics compare with), or with ``resize_masks`` are
    resized to the input size (training targets). A bad pair raises UserError naming its row (and
    file), unless ``skip_bad_rows``: then it is left out and listed in ``bad``."""
    rows = range(len(images)) if rows is None else rows
    side = prep.image_size
    pixels = np.empty((len(images), 3, side, side), dtype=np.uint8)
    out, sizes, kept, bad = [], [], [], []
    for i, (image, mask, row) in enumerate(zip(images, masks, rows, strict=True)):
        try:
            img, m = _pair(image, mask, rules, base_dir, max_pixels, max_bytes)
        except BadImage as exc:
            reason = str(exc)
            if not skip_bad_rows:
                raise UserError(f"row {row}{_file(image, mask, reason)}: {reason}; {SKIP_HINT}") from exc
            bad.append(BadRow(int(row), reason))
            continue
        pixels[len(kept)] = to_array(img, prep)
        out.append(resize_mask(m, side) if resize_masks else m)
        sizes.append(img.size)
        kept.append(i)
    return DecodedPairs(pixels[: len(kept)], out, sizes, np.array(kept, dtype=np.int64), bad)


def _pair(image, mask, rules: MaskRules, base_dir, max_pixels: int, max_bytes: int):
    try:
        img = open_image(read_source(image, base_dir, max_bytes), max_pixels)
    except BadImage as exc:
        raise BadImage(f"image {exc}") from exc
    if mask is None:
        raise BadImage("image has no mask")
    try:
        return img, check_mask(open_mask(read_source(mask, base_dir, max_bytes), max_pixels), img.size, rules)
    except BadImage as exc:
        raise BadImage(f"mask {exc}") from exc


def _file(image, mask, reason: str) -> str:
    """' (FILE)' naming the file a reason is about, when the pair was given by path."""
    source = mask if reason.startswith("mask") else image
    return f" ({source})" if isinstance(source, str | Path) and len(str(source)) < 300 else ""
