"""Segmentation metrics (cluster/stats/segmentation.py) against scikit-learn on the flattened pixels,
whatever the sharding; the bootstrap over images; the worst images kept by any merge order."""

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, jaccard_score

import cluster.stats.segmentation as seg

IGNORE = 255


def test_doctest():
    assert doctest.testmod(seg).failed == 0


@st.composite
def image_sets(draw):
    """k classes; 1..12 images of differing sizes; true masks with some ignored pixels; predictions."""
    k = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 12))
    rng = np.random.default_rng(seed)
    trues, preds = [], []
    for _ in range(n):
        h, w = rng.integers(1, 9, size=2)
        t = rng.integers(0, k, (h, w))
        t[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.2, 1.0]))] = IGNORE
        # predictions near the truth, sometimes a class the image does not have
        p = np.where(rng.random((h, w)) < 0.6, np.where(t == IGNORE, 0, t), rng.integers(0, k, (h, w)))
        trues.append(t.astype(np.uint8))
        preds.append(p.astype(np.uint8))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return k, trues, preds, cuts


def _flat(trues, preds):
    t = np.concatenate([x.ravel() for x in trues]).astype(np.int64)
    p = np.concatenate([x.ravel() for x in preds]).astype(np.int64)
    keep = t != IGNORE
    return t[keep], p[keep]


def _reference(k, trues, preds) -> dict:
    """The definitions, from scikit-learn's confusion matrix and jaccard_score on the kept pixels."""
    t, p = _flat(trues, preds)
    cm = confusion_matrix(t, p, labels=list(range(k))) if t.size else np.zeros((k, k), int)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    iou = np.full(k, np.nan)
    if t.size:
        iou[present] = jaccard_score(t, p, labels=np.arange(k)[present], average=None, zero_division=0)
    dice = np.where(present, 2 * tp / np.maximum(support + predicted, 1), np.nan)
    acc = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    total = support.sum()
    return {
        "cm": cm,
        "miou": np.nanmean(iou) if present.any() else np.nan,
        "pixel_accuracy": tp.sum() / total if total else np.nan,
        "mean_class_accuracy": np.nanmean(acc) if (support > 0).any() else np.nan,
        "fw_iou": np.nansum(support / max(total, 1) * iou) if total else np.nan,
        "mean_dice": np.nanmean(dice) if present.any() else np.nan,
        "iou": iou,
    }


def _close(a, b):
    a, b = float(a), float(b)
    assert (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-9, (a, b)


@settings(max_examples=150, deadline=None)
@given(image_sets())
def test_equal_to_sklearn_whatever_the_sharding(case):
    k, trues, preds, cuts = case
    ref = _reference(k, trues, preds)
    bounds = [0, *cuts, len(trues)]
    parts = [
        seg.batch_stats(trues[a:b], preds[a:b], k, rows=range(a, b), bootstrap=20, seed=3)
        for a, b in zip(bounds, bounds[1:], strict=False)
    ]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged + part
    whole = seg.batch_stats(trues, preds, k, bootstrap=20, seed=3)
    np.testing.assert_array_equal(merged.confusion, ref["cm"])
    np.testing.assert_array_equal(merged.boot_confusion, whole.boot_confusion)  # CIs do not depend on shards
    m = seg.finalize(merged, [f"c{i}" for i in range(k)])
    for name in seg.SCORES:
        _close(m[name], ref[name])
    for i in range(k):
        got = m["per_class"][f"c{i}"]["iou"]
        _close(np.nan if got is None else got, ref["iou"][i])
    assert m["ci95"] == seg.finalize(whole, [f"c{i}" for i in range(k)])["ci95"]


def test_per_image_iou_and_sparse_cells():
    t = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    p = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    cm = seg.image_confusion(t, p, 4)
    # class 0: tp 1, fn 1 -> 1/2; class 1: tp 2, fp 1 -> 2/3; class 2: 1; class 3 absent: left out
    assert seg.image_iou(cm) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    cells, counts = seg.sparse_cells(cm)
    assert cells.dtype == np.int32 and len(cells) == 4
    np.testing.assert_array_equal(seg.dense_cells(cells, counts, 4), cm)
    assert np.isnan(seg.image_iou(seg.image_confusion(np.full((2, 2), 255), p[:, :2], 4)))


def test_out_of_range_class_is_refused():
    with pytest.raises(ValueError, match="outside 0..2"):
        seg.image_confusion(np.array([[0, 3]]), np.array([[0, 1]]), 3)


def test_bootstrap_interval_covers_the_point_and_resamples_images():
    rng = np.random.default_rng(0)
    trues = [rng.integers(0, 3, (6, 6)) for _ in range(40)]
    preds = [np.where(rng.random((6, 6)) < 0.7, t, rng.integers(0, 3, (6, 6))) for t in trues]
    m = seg.compute_metrics(trues, preds, ["a", "b", "c"], bootstrap=300)
    lo, hi = m["ci95"]["miou"]
    assert lo < m["miou"] < hi and hi - lo > 0.005
    # every pixel of an image shares its weight: a replicate's pixel count is a sum of whole images
    stats = seg.batch_stats(trues, preds, 3, bootstrap=5)
    assert set(stats.boot_confusion.sum((1, 2)) % 36) == {0}


def test_worst_images_do_not_depend_on_merge_order():
    rng = np.random.default_rng(1)
    trues = [rng.integers(0, 2, (4, 4)) for _ in range(30)]
    preds = [rng.integers(0, 2, (4, 4)) for _ in range(30)]
    parts = [
        seg.batch_stats(trues[i : i + 7], preds[i : i + 7], 2, rows=range(i, i + 7), payloads=[b"x"] * 7)
        for i in range(0, 28, 7)
    ]
    a = parts[0] + parts[1] + parts[2] + parts[3]
    b = parts[3] + (parts[1] + (parts[2] + parts[0]))
    assert [w[1] for w in sorted(a.worst)] == [w[1] for w in sorted(b.worst)]
    assert len(a.worst) == seg.WORST
    ious = seg.image_iou(
        np.stack([seg.image_confusion(t, p, 2) for t, p in zip(trues[:28], preds[:28], strict=True)])
    )
    assert max(w[0] for w in a.worst) <= sorted(ious)[seg.WORST - 1] + 1e-12
