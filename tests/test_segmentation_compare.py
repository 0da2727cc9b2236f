"""Paired comparison of two segmentation evaluations over images (cluster/stats/segmentation_compare.py)."""

import doctest

import numpy as np
import pyarrow as pa
import pytest

import cluster.stats.segmentation_compare as sc
from cluster.errors import UserError
from cluster.stats import segmentation as seg
from cluster.stats.metrics import poisson_weights


def predictions(cms: np.ndarray, rows) -> pa.Table:
    cells = [seg.sparse_cells(cm) for cm in cms]
    return pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            "cm_cells": pa.array([c.tolist() for c, _ in cells], pa.list_(pa.int32())),
            "cm_counts": pa.array([n.tolist() for _, n in cells], pa.list_(pa.int64())),
        }
    )


def test_doctest():
    assert doctest.testmod(sc).failed == 0


def runs(n=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    trues = [rng.integers(0, k, (5, 5)) for _ in range(n)]
    good = [np.where(rng.random((5, 5)) < 0.9, t, rng.integers(0, k, (5, 5))) for t in trues]
    poor = [np.where(rng.random((5, 5)) < 0.6, t, rng.integers(0, k, (5, 5))) for t in trues]
    a = np.stack([seg.image_confusion(t, p, k) for t, p in zip(trues, poor, strict=True)])
    b = np.stack([seg.image_confusion(t, p, k) for t, p in zip(trues, good, strict=True)])
    return a, b


def test_paired_bootstrap_weights_whole_images_the_same_for_both_models():
    a, b = runs()
    rows = np.arange(100, 160)
    shuffled = np.random.default_rng(3).permutation(60)  # part files come in any order
    out = sc.paired_images(
        predictions(a[shuffled], rows[shuffled]), predictions(b, rows), 3, replicates=300, seed=2
    )
    w = poisson_weights(rows, 300, 2)
    ra = seg.scores_from_confusion((w @ a.reshape(60, 9)).reshape(-1, 3, 3))["miou"]
    rb = seg.scores_from_confusion((w @ b.reshape(60, 9)).reshape(-1, 3, 3))["miou"]
    m = out["metrics"]["miou"]
    assert m["ci95"] == pytest.approx([np.quantile(rb - ra, 0.025), np.quantile(rb - ra, 0.975)])
    assert m["diff"] == pytest.approx(
        seg.scores_from_confusion(b.sum(0))["miou"] - seg.scores_from_confusion(a.sum(0))["miou"]
    )
    assert m["ci95"][0] > 0 and out["wilcoxon"]["p_value"] < 1e-4 and out["wilcoxon"]["b_better"] > 40
    assert sc.verdict("miou", m, out["wilcoxon"]["p_value"]).startswith("B better on miou: +")


def test_the_same_run_twice_is_no_difference_and_other_images_are_refused():
    a, _ = runs()
    out = sc.paired_images(predictions(a, range(60)), predictions(a, range(60)), 3, replicates=50)
    assert out["metrics"]["miou"]["ci95"] == [0.0, 0.0] and out["wilcoxon"]["p_value"] == 1.0
    assert sc.verdict("miou", out["metrics"]["miou"], 1.0).startswith("no significant difference")
    with pytest.raises(UserError, match="scored different images"):
        sc.paired_images(predictions(a, range(60)), predictions(a[:59], range(59)), 3, replicates=10)
