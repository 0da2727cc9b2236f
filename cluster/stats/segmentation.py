"""Semantic segmentation metrics from a per-pixel confusion matrix that adds up over batches.

Each batch of images becomes a :class:`SegStats`: the (k, k) pixel confusion matrix
(rows = true class, columns = predicted; pixels whose true value is ``ignore_index``
left out), the same under each Poisson-bootstrap replicate (weights hashed from
(seed, image row), cluster/stats/metrics.py ``poisson_weights``: an image is the
resampling unit, so the intervals say how the scores vary over images), the sum of
per-image IoU, and the worst images seen. Stats add up exactly in any order and
any sharding; :func:`finalize` turns the sum into metrics.json's scores:

  IoU_c     = TP / (TP + FP + FN)        per class; NaN for a class in neither truth nor prediction
  miou      = mean of IoU_c over the classes where it is defined (mmsegmentation's nanmean)
  dice_c    = 2 TP / (2 TP + FP + FN)     mean_dice likewise
  pixel_accuracy      = trace / pixels
  mean_class_accuracy = mean over classes with true pixels of TP / true pixels
  fw_iou    = sum_c (true pixels_c / pixels) IoU_c

They equal scikit-learn's ``confusion_matrix`` (and ``jaccard_score``) on the flattened pixels
to 1e-9 however the images are batched (tests/test_segmentation_metrics.py).

Example::

    >>> import numpy as np
    >>> true = [np.array([[0, 0], [1, 255]])]   # 255: an unlabelled pixel, left out
    >>> pred = [np.array([[0, 1], [1, 1]])]
    >>> m = compute_metrics(true, pred, ["background", "cat"])
    >>> round(m["miou"], 4), round(m["pixel_accuracy"], 4), m["per_class"]["cat"]["iou"]
    (0.5, 0.6667, 0.5)
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cluster.stats import codec
from cluster.stats.exact import as_float, exact_sum
from cluster.stats.metrics import poisson_weights

IGNORE_INDEX = 255  # the mask value of an unlabelled pixel (PASCAL VOC's convention)
WORST = 8  # images kept for the report's overlays (the lowest per-image IoU)
SCORES = ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou", "mean_dice")


@dataclass
class SegStats:
    """Sufficient statistics of a set of images (arrays add elementwise; ``worst`` keeps the lowest)."""

    confusion: np.ndarray  # (k, k) int64 pixels, rows = true class, cols = predicted
    images: int = 0
    iou_sum: int = 0  # sum over images of the per-image IoU (mean_image_iou), exact: cluster/stats/exact.py
    boot_confusion: np.ndarray | None = None  # (B, k, k) int64 Poisson-weighted pixel counts
    worst: list = field(default_factory=list)  # [(iou, row, payload)] at most WORST, any order

    def __add__(self, other: SegStats) -> SegStats:
        return SegStats(
            self.confusion + other.confusion,
            self.images + other.images,
            self.iou_sum + other.iou_sum,
            _add(self.boot_confusion, other.boot_confusion),
            keep_worst(self.worst + other.worst),
        )

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())


def _add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return b if a is None else a if b is None else a + b


def keep_worst(items: list, n: int = WORST) -> list:
    """The ``n`` items of lowest IoU, ties broken by row (so any merge order keeps the same ones)."""
    return heapq.nsmallest(n, items, key=lambda t: (t[0], t[1]))


# ------------------------------------------------------------------ per image


def image_confusion(
    true: np.ndarray, pred: np.ndarray, k: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(k, k) int64 pixel counts of one image; ``true`` and ``pred`` are (H, W) class ids."""
    true, pred = np.asarray(true).ravel(), np.asarray(pred).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"mask has {true.size} pixels, prediction {pred.size}")
    keep = true != ignore_index
    t, p = true[keep].astype(np.int64), pred[keep].astype(np.int64)
    if t.size and (t.max() >= k or t.min() < 0 or p.max() >= k or p.min() < 0):
        raise ValueError(f"a class id outside 0..{k - 1} (and not ignore_index {ignore_index})")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def image_iou(cm: np.ndarray) -> np.ndarray:
    """Per-image IoU: the mean IoU over the classes present in the image's truth or prediction,
    for each (..., k, k) matrix (NaN for an image whose every pixel is ignored)."""
    iou = class_ratio(*_tp_fp_fn(cm))
    with np.errstate(invalid="ignore"):
        present = ~np.isnan(iou)
        total = np.where(present, iou, 0.0).sum(-1)
        return np.where(present.any(-1), total / np.maximum(present.sum(-1), 1), np.nan)


def sparse_cells(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero cells of a (k, k) matrix as (flat cell index int32, count int64): an image's
    confusion in predictions.parquet (a few cells of k*k)."""
    flat = cm.ravel()
    cells = np.flatnonzero(flat)
    return cells.astype(np.int32), flat[cells].astype(np.int64)


def dense_cells(cells, counts, k: int) -> np.ndarray:
    """Inverse of :func:`sparse_cells`."""
    out = np.zeros(k * k, np.int64)
    out[np.asarray(cells, np.int64)] = counts
    return out.reshape(k, k)


# ------------------------------------------------------------------ batches


def batch_stats(
    trues: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    k: int,
    rows: Sequence[int] | None = None,
    *,
    bootstrap: int = 0,
    seed: int = 0,
    ignore_index: int = IGNORE_INDEX,
    payloads: Sequence | None = None,
) -> SegStats:
    """Statistics of one batch of images. ``trues``/``preds``: (H_i, W_i) class-id maps, image by
    image (sizes may differ between images); ``rows``: each image's input position, which seeds its
    bootstrap weights (default 0..n-1); ``payloads``: what the report shows of each image when it is
    among the worst (e.g. an overlay PNG), or None."""
    rows = np.arange(len(trues)) if rows is None else np.asarray(rows, dtype=np.int64)
    if not len(trues):
        return empty_stats(k, bootstrap)
    cms = np.stack([image_confusion(t, p, k, ignore_index) for t, p in zip(trues, preds, strict=True)])
    return stats_from_confusions(
        cms.reshape(-1, k, k), rows, bootstrap=bootstrap, seed=seed, payloads=payloads
    )


def stats_from_confusions(
    cms: np.ndarray, rows: np.ndarray, *, bootstrap: int = 0, seed: int = 0, payloads: Sequence | None = None
) -> SegStats:
    """:class:`SegStats` of images given by their (n, k, k) confusion matrices."""
    n, k = cms.shape[0], cms.shape[-1]
    ious = image_iou(cms) if n else np.zeros(0)
    boot = None
    if bootstrap:
        w = poisson_weights(rows, bootstrap, seed)  # (B, n): the same weights for every pixel of an image
        boot = (w @ cms.reshape(n, k * k)).reshape(bootstrap, k, k)
    worst = []
    if payloads is not None:
        order = [
            (float(-1.0 if np.isnan(v) else v), int(r), p)
            for v, r, p in zip(ious, rows, payloads, strict=True)
        ]
        worst = keep_worst(order)
    return SegStats(cms.sum(0), n, exact_sum(ious[~np.isnan(ious)]), boot, worst)


def empty_stats(k: int, bootstrap: int = 0) -> SegStats:
    return SegStats(
        np.zeros((k, k), np.int64), 0, 0, np.zeros((bootstrap, k, k), np.int64) if bootstrap else None
    )


# ------------------------------------------------------------------ scores


def _tp_fp_fn(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    return tp, cm.sum(-2) - tp, cm.sum(-1) - tp


def class_ratio(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, dice: bool = False) -> np.ndarray:
    """IoU (or Dice) per class; NaN where the class is in neither truth nor prediction."""
    num, den = (2 * tp, 2 * tp + fp + fn) if dice else (tp, tp + fp + fn)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray) -> np.ndarray:
    present = ~np.isnan(x)
    total = np.where(present, x, 0.0).sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(present.any(-1), total / np.maximum(present.sum(-1), 1), np.nan)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The SCORES and per-class arrays of a (k, k) or batched (..., k, k) pixel confusion matrix."""
    tp, fp, fn = _tp_fp_fn(cm)
    support = tp + fn  # true pixels per class
    total = support.sum(-1)
    iou, dice = class_ratio(tp, fp, fn), class_ratio(tp, fp, fn, dice=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        pixel_accuracy = np.where(total > 0, tp.sum(-1) / np.where(total > 0, total, 1), np.nan)
        freq = support / np.where(total > 0, total, 1)[..., None]
    return {
        "miou": _nanmean(iou),
        "pixel_accuracy": pixel_accuracy,
        "mean_class_accuracy": _nanmean(acc),
        "fw_iou": np.where(total > 0, (freq * np.nan_to_num(iou)).sum(-1), np.nan),
        "mean_dice": _nanmean(dice),
        "per_class_iou": iou,
        "per_class_dice": dice,
        "per_class_accuracy": acc,
        "support": support,
        "predicted": tp + fp,
    }


def _float(x) -> float | None:
    """A JSON-safe float: None for NaN (a class absent from truth and prediction)."""
    x = float(x)
    return None if np.isnan(x) else x


def finalize(stats: SegStats, labels: list[str], confidence: float = 0.95) -> dict:
    """metrics.json's segmentation scores from merged statistics (docs/contracts.md)."""
    s = scores_from_confusion(stats.confusion)
    out = {"n": stats.images, "pixels": stats.pixels, "labels": list(labels), "task": "segmentation"}
    out.update({m: float(s[m]) for m in SCORES})
    out["mean_image_iou"] = as_float(stats.iou_sum) / stats.images if stats.images else float("nan")
    out["per_class"] = {
        lab: {
            "iou": _float(s["per_class_iou"][i]),
            "dice": _float(s["per_class_dice"][i]),
            "accuracy": _float(s["per_class_accuracy"][i]),
            "support": int(s["support"][i]),
            "predicted": int(s["predicted"][i]),
        }
        for i, lab in enumerate(labels)
    }
    out["confusion_matrix"] = stats.confusion.astype(int).tolist()
    out["ci95"] = bootstrap_ci(stats.boot_confusion, confidence) if stats.boot_confusion is not None else {}
    return out


def bootstrap_ci(boot: np.ndarray, confidence: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of SCORES (and per-class IoU) over the (B, k, k) replicates."""
    reps = scores_from_confusion(boot)
    alpha = (1 - confidence) / 2
    out = {}
    for m in SCORES:  # a score undefined in every replicate (no labelled pixel) has no interval
        if not np.isnan(reps[m]).all():
            out[m] = [float(np.nanquantile(reps[m], alpha)), float(np.nanquantile(reps[m], 1 - alpha))]
    return out


def compute_metrics(
    trues: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    labels: list[str],
    *,
    bootstrap: int = 0,
    seed: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> dict:
    """All scores of one in-memory set of images (e.g. a validation split)."""
    stats = batch_stats(trues, preds, len(labels), bootstrap=bootstrap, seed=seed, ignore_index=ignore_index)
    return finalize(stats, labels)


codec.register(SegStats)  # part files hold them (cluster/stats/codec.py)
