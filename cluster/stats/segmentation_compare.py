"""Is segmentation model B really better than A on these images? A paired comparison over images.

Both evaluations' predictions hold each image's pixel confusion matrix (``cm_cells``/``cm_counts``,
cluster/evaluation/segment.py) by input row. The paired bootstrap resamples *images*: replicate b
weights image r by the same Poisson(1) weight for both models (hashed from (seed, r) as every
bootstrap here, cluster/stats/metrics.py ``poisson_weights``), so each replicate's difference
B - A compares the two models on one resampled set of images, pixels of an image together.
Beside it, the Wilcoxon signed-rank test on the per-image IoU differences (images where either
IoU is undefined left out) says whether one model wins on images more often than chance.

    >>> import numpy as np, pyarrow as pa
    >>> def run(preds):
    ...     rows = [{"row": r, "cm_cells": [0, 1], "cm_counts": [p, 4 - p]} for r, p in enumerate(preds)]
    ...     return pa.Table.from_pylist(rows)
    >>> out = paired_images(run([1] * 30), run([3] * 30), 2, replicates=200)
    >>> round(out["metrics"]["pixel_accuracy"]["diff"], 2), out["metrics"]["pixel_accuracy"]["ci95"][0] > 0
    (0.5, True)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cluster.errors import UserError
from cluster.stats.metrics import poisson_weights
from cluster.stats.segmentation import SCORES, image_iou, scores_from_confusion

COLUMNS = ["row", "cm_cells", "cm_counts"]
CHUNK = 4096  # images per bootstrap step (bounds the (B, chunk) weight matrix)


def image_confusions(table: pa.Table, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows ascending, (n, k, k) int64 confusion matrices) of a predictions table."""
    order = np.argsort(table["row"].to_numpy(), kind="stable")
    rows = table["row"].to_numpy()[order]
    cells, counts = table["cm_cells"].to_pylist(), table["cm_counts"].to_pylist()
    cms = np.zeros((len(order), k * k), np.int64)
    for j, i in enumerate(order):
        cms[j, cells[i]] = counts[i]
    return rows, cms.reshape(-1, k, k)


def paired_images(
    a: pa.Table, b: pa.Table, k: int, replicates: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """B - A on each segmentation score with its paired-bootstrap interval over images, and the
    Wilcoxon signed-rank test on per-image IoU. ``a``/``b``: predictions with COLUMNS."""
    rows_a, cm_a = image_confusions(a, k)
    rows_b, cm_b = image_confusions(b, k)
    if not np.array_equal(rows_a, rows_b):
        raise UserError(
            f"the runs scored different images ({len(rows_a)} vs {len(rows_b)} rows, or other rows: skipped "
            "bad pairs differ); compare evaluations of the same images"
        )
    boot_a = np.zeros((replicates, k, k), np.int64)
    boot_b = np.zeros((replicates, k, k), np.int64)
    for start in range(0, len(rows_a), CHUNK):
        w = poisson_weights(rows_a[start : start + CHUNK], replicates, seed)
        boot_a += (w @ cm_a[start : start + CHUNK].reshape(-1, k * k)).reshape(-1, k, k)
        boot_b += (w @ cm_b[start : start + CHUNK].reshape(-1, k * k)).reshape(-1, k, k)
    sa, sb = scores_from_confusion(cm_a.sum(0)), scores_from_confusion(cm_b.sum(0))
    ra, rb = scores_from_confusion(boot_a), scores_from_confusion(boot_b)
    alpha = (1 - confidence) / 2
    diffs = {}
    for m in SCORES:
        d = rb[m] - ra[m]
        d = d[~np.isnan(d)]
        ci = [float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))] if len(d) else None
        diffs[m] = {"a": float(sa[m]), "b": float(sb[m]), "diff": float(sb[m] - sa[m]), "ci95": ci}
    return {"n": int(len(rows_a)), "metrics": diffs, "wilcoxon": wilcoxon_iou(cm_a, cm_b)}


def wilcoxon_iou(cm_a: np.ndarray, cm_b: np.ndarray) -> dict:
    """Wilcoxon signed-rank test (two-sided) of per-image IoU, B against A."""
    from scipy.stats import wilcoxon

    ia, ib = image_iou(cm_a), image_iou(cm_b)
    ok = ~(np.isnan(ia) | np.isnan(ib))
    d = ib[ok] - ia[ok]
    b_better, a_better = int((d > 0).sum()), int((d < 0).sum())
    p = 1.0 if not (b_better + a_better) else float(wilcoxon(ib[ok], ia[ok], zero_method="wilcox").pvalue)
    return {"images": int(ok.sum()), "b_better": b_better, "a_better": a_better, "p_value": p}


def compare_sources(a, b, labels: list[str], metric: str, replicates: int = 1000, seed: int = 0) -> dict:
    """:func:`paired_images` of two runs' predictions (``batches(columns, rows)`` sources in row order,
    cluster/registry/predictions.py), with the one-line verdict on ``metric``."""
    tables = []
    for source in (a, b):
        batches = list(source.batches(COLUMNS, 65536))
        tables.append(pa.Table.from_batches(batches) if batches else pa.table({c: [] for c in COLUMNS}))
    out = paired_images(*tables, len(labels), replicates, seed)
    if metric not in out["metrics"]:
        raise UserError(f"segmentation runs are compared on {', '.join(out['metrics'])}, not {metric}")
    out["verdict"] = verdict(metric, out["metrics"][metric], out["wilcoxon"]["p_value"])
    return out


def verdict(metric: str, diff: dict, p_value: float) -> str:
    """One line, e.g. 'B better on miou: +4.1 [+3.2, +5.0] points, Wilcoxon p < 0.001'."""
    d, (lo, hi) = diff["diff"] * 100, [x * 100 for x in diff["ci95"]]
    p = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
    head = (
        f"B better on {metric}"
        if lo > 0
        else f"A better on {metric}"
        if hi < 0
        else f"no significant difference on {metric}"
    )
    return f"{head}: {d:+.1f} [{lo:+.1f}, {hi:+.1f}] points (paired over images), Wilcoxon {p}"
