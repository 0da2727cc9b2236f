"""Gradient x input saliency of an image classifier, at the input's size or a bounded one.

For /v1/explain: which pixels of the image the model's score for a class rests on.
The resize to the model's input size is done here with torch (differentiable), so
the gradient reaches the map's pixels: the map has the input's height and width, or,
for an image of more than ``max_map_pixels``, the largest size with its aspect ratio
within that (the image is first reduced to it with Pillow), so that a 4096x4096 input
costs what a 256x256 one does. Pixels are taken on 0..1, so gradient x input is the
first-order contribution of each map pixel relative to a black image. The model sees
exactly the input predict_proba_images gives it (from the full image); the gradient
flows back through torch's antialiased bilinear (or nearest) resize, the same linear map
as Pillow's up to its 8-bit rounding.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cluster.data.images import MAX_PIXELS, BadImage, Source, center_square, open_image, read_source, to_array
from cluster.errors import UserError


@dataclass
class Saliency:
    values: np.ndarray  # (h, w) float32, the map's size; > 0 pushes towards ``label``
    label: str  # the class explained (the predicted one unless asked for another)
    target: int  # its id
    probs: np.ndarray  # (num_labels,) float64, the model's probabilities for this image
    overlay_png: str  # base64 PNG (h, w): the image in gray, red where values > 0, blue where < 0
    image_size: tuple[int, int]  # (width, height) of the input image


def explain_image(
    model,
    image: Source,
    *,
    target: int | str | None = None,
    max_pixels: int = MAX_PIXELS,
    max_map_pixels: int,
) -> Saliency:
    """Gradient x input saliency of ``image`` (bytes, path or URI) for class ``target``, on a map
    of at most ``max_map_pixels`` pixels (the image's own size when it is within that).

    ``target``: a label or class id; None explains the predicted class.
    """
    try:
        img = open_image(read_source(image), max_pixels)
    except BadImage as exc:
        raise UserError(f"image {exc}") from exc
    device, prep = next(model.parameters()).device, model.config.preprocessing
    pixels = to_array(img, prep)  # (3, S, S) uint8 from the full image, what predict_proba_images feeds
    small = bounded(img, max_map_pixels)
    x0 = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    x0.requires_grad_(True)
    model.eval()
    with torch.enable_grad():
        logits = model(_model_input(x0, pixels, prep).to(device)).logits.float()[0]
        k = _target_id(model.config.labels, target, int(logits.argmax()))
        (grad,) = torch.autograd.grad(logits[k], x0)
    values = (grad * x0).sum(1)[0].detach().numpy().astype(np.float32)  # (h, w), summed over RGB
    probs = torch.softmax(logits.detach(), -1).double().cpu().numpy()
    gray = np.asarray(small.convert("L"), dtype=np.float32) / 255.0
    return Saliency(values, model.config.labels[k], k, probs, overlay_png(gray, values), img.size)


def bounded(img, max_map_pixels: int):
    """``img`` itself, or reduced (antialiased, aspect ratio kept) to at most ``max_map_pixels``."""
    from PIL import Image

    w, h = img.size
    if w * h <= max_map_pixels:
        return img
    scale = (max_map_pixels / (w * h)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _model_input(x0: torch.Tensor, pixels: np.ndarray, prep) -> torch.Tensor:
    """Normalised (1, 3, S, S) whose values are ``pixels`` (Pillow's resize, as predict_proba
    sees it) and whose gradient flows back to ``x0`` (1, 3, H, W) through torch's resize."""
    s = prep.image_size
    if prep.resize_mode == "center_crop":
        left, top, right, bottom = center_square(x0.shape[-1], x0.shape[-2])
        x0 = x0[..., top:bottom, left:right]
    x = x0
    if tuple(x.shape[-2:]) != (s, s):
        if prep.resample == "bilinear":  # antialiased: Pillow's filter, downscaling included
            x = F.interpolate(x0, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
        else:
            x = F.interpolate(x0, size=(s, s), mode="nearest-exact")
    # Same linear map as Pillow's up to its 8-bit fixed-point rounding (at most 1 level):
    # the forward pass takes Pillow's exact values, the backward pass torch's Jacobian.
    x = x + (torch.tensor(pixels[None], dtype=torch.float32) / 255 - x).detach()
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def _target_id(labels: list[str], target: int | str | None, predicted: int) -> int:
    if target is None:
        return predicted
    if isinstance(target, str) and target in labels:
        return labels.index(target)
    if isinstance(target, int) and 0 <= target < len(labels):
        return target
    raise UserError(f"explain target {target!r} is not a label of this model; labels: {', '.join(labels)}")


def heatmap_png(values: np.ndarray) -> tuple[str, float]:
    """(base64 16-bit grayscale PNG, scale): pixel p stands for (p - 32768) / 32767 * scale, and
    scale is max |values| (0 maps to 32768). A tenth of the JSON numbers' size, within scale/32767."""
    from PIL import Image

    scale = float(np.abs(values).max())
    levels = np.round(values.astype(np.float64) / max(scale, 1e-30) * 32767) + 32768
    buf = io.BytesIO()
    Image.fromarray(levels.astype(np.uint16)).save(buf, format="PNG")  # mode I;16: 16-bit gray
    return base64.b64encode(buf.getvalue()).decode("ascii"), scale


def overlay_png(gray: np.ndarray, values: np.ndarray) -> str:
    """Base64 PNG: ``gray`` (H, W) on 0..1 dimmed, with red (+) / blue (-) at |values| strength."""
    from PIL import Image

    strength = np.abs(values) / max(float(np.abs(values).max()), 1e-12)  # 0..1
    alpha = strength[..., None] * 0.8
    base = np.repeat(gray[..., None] * 0.6, 3, axis=2)
    color = np.where(values[..., None] >= 0, [1.0, 0.0, 0.0], [0.0, 0.3, 1.0])
    rgb = (base * (1 - alpha) + color * alpha).clip(0, 1)
    buf = io.BytesIO()
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
