"""Pictures of segmentation masks: label-map PNGs with a palette, overlays on the image, class shares.

A mask PNG written here is a label map (mode P: pixel value = class index, as PASCAL VOC's) whose
palette is PASCAL VOC's colour map, so it reads back as class indices and shows in colour. An
overlay tints each pixel of the image with its class's colour; a class named "background" is left
untinted. Used by the scorer (serve/segment.py), `evalctl query --image` and the report.
"""

from __future__ import annotations

import io

import numpy as np

ALPHA = 0.55  # the class colour's weight in an overlay


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: PASCAL VOC's colour map (class 0 black, 1 dark red, 2 dark green, ...)."""
    out = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):  # the bits of the class index, spread over the channels' high bits
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = r, g, b
    return out


PALETTE = voc_palette()


def mask_png(mask: np.ndarray) -> bytes:
    """(H, W) uint8 class ids -> a palette PNG whose pixel values are the class ids."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).convert("P")
    img.putpalette(PALETTE.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def overlay(
    image: np.ndarray, mask: np.ndarray, labels: list[str] | None = None, alpha: float = ALPHA
) -> np.ndarray:
    """(H, W, 3) uint8 image tinted by the (H, W) mask's class colours; "background" untinted."""
    tint = PALETTE[mask].astype(np.float32)
    keep = np.ones(mask.shape, bool)
    for i, name in enumerate(labels or []):
        if name.lower() == "background":
            keep &= mask != i
    out = image.astype(np.float32)
    out[keep] = (1 - alpha) * out[keep] + alpha * tint[keep]
    return out.round().clip(0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, mask: np.ndarray, labels: list[str] | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay(image, mask, labels)).save(buf, format="PNG")
    return buf.getvalue()


def image_rgb(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """Encoded image -> (H, W, 3) uint8 RGB, resized to ``size`` = (width, height) when given."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def class_shares(mask: np.ndarray, labels: list[str]) -> dict[str, float]:
    """Each class's share of the mask's pixels (0 for a class not predicted), in class order."""
    counts = np.bincount(mask.ravel(), minlength=len(labels))[: len(labels)]
    total = max(int(mask.size), 1)
    return {lab: float(c) / total for lab, c in zip(labels, counts, strict=True)}
