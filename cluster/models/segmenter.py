"""A loaded segmentation model behind the operations the shared code calls.

The names are :class:`cluster.models.modality.Classifier`'s, so the training loop
(cluster/train/loop.py), a sweep's export (cluster/tune/export.py) and the scorer (serve/app.py)
take either; where segmentation differs, the model brings its own step:

  prepare(values, rows)   images (bytes, paths, URIs) -> uint8 (n, 3, S, S); decoded arrays pass as they are
  encode(inputs, idx)     a training batch -> {"pixel_values": float (b, 3, S, S)}
  logits(batch)           (b, K, S, S)
  loss(batch, y, hp)      pixel cross-entropy (255 = unlabelled, left out) + hp.dice_weight x soft Dice
  validate(val, ...)      the validation split's miou, pixel accuracy, ... (at the input size)
  predict_proba(inputs)   per-pixel class probabilities (n, K, S, S) float32
  save(out, lineage)      a model directory (cluster/models/segmentation.py)

Masks at an image's own size: :func:`masks_at` upsamples the probabilities bilinearly and takes
the most probable class per pixel; offline evaluation and the scorer both call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.data.images import IMAGE_SIZE
from cluster.errors import UserError

IGNORE = 255  # unlabelled pixels, whatever the data's own ignore_index (cluster/data/masks.py)
DICE_SMOOTH = 1.0  # added to the soft Dice's numerator and denominator: an absent class scores ~1


@dataclass
class Prepared:
    """Inputs ready for the model and the rows that could not be prepared (as Classifier.prepare's)."""

    inputs: np.ndarray  # uint8 (n, 3, S, S)
    kept: np.ndarray  # positions in the given values that were kept, ascending
    bad: list = field(default_factory=list)  # cluster.data.images.BadRow


@dataclass
class Segmenter:
    """A segmentation model, its class names, and the Classifier attributes shared code reads."""

    model: object  # cluster.models.segmentation.SegmentationModel
    labels: list[str]
    modality: str = "image"
    task: str = "segmentation"
    tokenizer: object = field(default=None, repr=False)

    # -------------------------------------------------------------- inputs

    def prepare(self, values, rows=None, *, skip_bad_rows: bool = False, base_dir=None):
        """Encoded images -> Prepared (uint8 (n, 3, S, S)); an already decoded array is kept as is."""
        from cluster.data.images import decode_images

        if isinstance(values, np.ndarray) and values.dtype == np.uint8 and values.ndim == 4:
            # A trial's splits come read-only from Ray's object store; torch warns on every batch made
            # from a read-only array, so the trial holds one writable copy.
            return Prepared(values if values.flags.writeable else values.copy(), np.arange(len(values)))
        prep = self.model.config.preprocessing
        d = decode_images(values, prep, rows=rows, skip_bad_rows=skip_bad_rows, base_dir=base_dir)
        return Prepared(d.pixels, d.kept, d.bad)

    def lengths(self, inputs) -> np.ndarray:
        return np.zeros(len(inputs))

    def encode(self, inputs, idx, *, max_length: int = 0) -> dict:
        from cluster.data.images import normalize

        device = next(self.model.parameters()).device
        return {"pixel_values": normalize(inputs[idx], self.model.config.preprocessing).to(device)}

    def logits(self, batch: dict):
        return self.model(**batch).logits

    # -------------------------------------------------------------- training

    def loss(self, batch: dict, y, hp) -> object:
        """Mean cross-entropy over the labelled pixels, plus ``dice_weight`` x (1 - soft Dice) when
        the trial's hyperparameters (``hp``, TrialParams) set it. ``y``: (b, S, S) integer masks."""
        import torch
        from torch.nn import functional as F

        logits = self.logits(batch).float()
        y = y.long()
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
        weight = float(getattr(hp, "dice_weight", 0.0))
        if weight:
            loss = loss + weight * soft_dice_loss(torch.softmax(logits, 1), y)
        return loss

    def validate(self, val, max_length: int, precision: str) -> dict:
        """The segmentation scores of the (prepared) validation split, at the input size."""
        from cluster.stats.segmentation import SCORES, compute_metrics

        probs = self.predict_proba(val.inputs, precision=precision, batch_size=64)
        preds = list(probs.argmax(1).astype(np.uint8))
        m = compute_metrics(list(val.y), preds, self.labels)
        return {k: float(m[k]) for k in (*SCORES, "mean_image_iou")}

    # -------------------------------------------------------------- inference

    def predict_proba(self, inputs, *, precision: str = "fp32", batch_size: int = 64, max_length: int = 0):
        """Per-pixel class probabilities (n, K, S, S) float32 of uint8 images (n, 3, S, S)."""
        import torch

        from cluster.data.images import normalize
        from cluster.models.device import autocast

        model = self.model
        device = next(model.parameters()).device
        side = model.config.preprocessing.image_size
        out = np.empty((len(inputs), len(self.labels), side, side), dtype=np.float32)
        model.eval()
        with torch.inference_mode(), autocast(precision, device.type):
            for start in range(0, len(inputs), batch_size):
                x = normalize(inputs[start : start + batch_size], model.config.preprocessing).to(device)
                probs = torch.softmax(model(x).logits.float(), dim=1)
                out[start : start + len(x)] = probs.cpu().numpy()
        return out

    def predict_masks(
        self, pixels, sizes: Sequence[tuple[int, int]], *, precision: str = "fp32", batch_size: int = 64
    ):
        """Class-id masks (H, W) uint8 at each image's own size (``sizes``: (width, height) each)."""
        masks = []
        for start in range(0, len(pixels), batch_size):
            probs = self.predict_proba(
                pixels[start : start + batch_size], precision=precision, batch_size=batch_size
            )
            masks += [
                masks_at(p, size) for p, size in zip(probs, sizes[start : start + batch_size], strict=True)
            ]
        return masks

    # -------------------------------------------------------------- saving

    def save(self, out: str | Path, lineage: dict) -> Path:
        from cluster.models.segmentation import save_segmentation_model_dir

        return save_segmentation_model_dir(self.model, out, lineage)


def masks_at(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, S, S) probabilities -> (height, width) uint8 class ids: bilinear upsampling to the image's
    ``size`` = (width, height) (no resampling when it is already S x S), then the most probable class."""
    import torch
    from torch.nn import functional as F

    w, h = size
    if probs.shape[-2:] == (h, w):
        return probs.argmax(0).astype(np.uint8)
    t = torch.from_numpy(np.ascontiguousarray(probs))[None]
    up = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0]
    return up.argmax(0).numpy().astype(np.uint8)


def soft_dice_loss(probs, y):
    """1 - mean over classes of the soft Dice (2 sum p*t + s) / (sum p + sum t + s) over the batch's
    labelled pixels; ``probs`` (b, K, H, W), ``y`` (b, H, W) with 255 = unlabelled."""
    import torch

    valid = (y != IGNORE).unsqueeze(1)
    target = torch.zeros_like(probs).scatter_(1, torch.where(y == IGNORE, 0, y).unsqueeze(1), 1.0) * valid
    p = probs * valid
    inter = (p * target).sum((0, 2, 3))
    dice = (2 * inter + DICE_SMOOTH) / (p.sum((0, 2, 3)) + target.sum((0, 2, 3)) + DICE_SMOOTH)
    return 1 - dice.mean()


# ------------------------------------------------------------------ loading


def load_segmenter(path: str | Path, device: str = "cpu") -> Segmenter:
    """A segmentation model directory -> Segmenter."""
    from cluster.models.segmentation import load_segmentation_model

    model = load_segmentation_model(path, device=device)
    return Segmenter(model, list(model.config.labels))


def segmenter_for_training(
    path: str | Path,
    labels: list[str],
    *,
    seed: int = 0,
    device: str = "cpu",
    init: str = "pretrained",
    image_size: int = IMAGE_SIZE,
) -> Segmenter:
    """The model a segmentation trial starts from: a segmentation model directory's weights (a
    checkpoint's, or a model being fine-tuned further), else a new model on the ImageNet encoder
    (``init: pretrained``) or randomly initialised throughout (``init: random``)."""
    import json

    from cluster.models.segmentation import new_segmentation_model

    path = Path(path)
    has_config = (path / "config.json").is_file()
    task = json.loads((path / "config.json").read_text()).get("task") if has_config else None
    if has_config and task != "segmentation":
        raise UserError(
            f"model {path} is a {task or 'classification'} model; a segmentation sweep starts from "
            "efficientnet-lite0 or a segmentation model"
        )
    if has_config and init == "pretrained":
        seg = load_segmenter(path, device=device)
        if seg.labels != list(labels):
            raise UserError(
                f"segmentation model {path} predicts {seg.labels}, not the spec's classes {list(labels)}"
            )
        return seg
    model = new_segmentation_model(labels, pretrained=init == "pretrained", image_size=image_size, seed=seed)
    return Segmenter(model.to(device), list(labels))
