"""Segmentation runs in the team's record: compare (paired over images), gate (min and max-drop on
miou) and the leaderboard, on evaluation runs whose metrics.json and predictions are the
segmentation task's own (cluster/evaluation/segment.py shapes), without Ray."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.registry.record import Registry
from cluster.stats import segmentation as seg

CLASSES = ["background", "cat", "dog"]


def fake_segmentation_eval(reg, tmp_path, name, trues, preds, model, parts=True):
    """A finished evaluation with a segmentation metrics.json and predictions: a part-file directory
    (as the Ray Data pipeline writes them), or one predictions.parquet."""
    k = len(CLASSES)
    cms = np.stack([seg.image_confusion(t, p, k) for t, p in zip(trues, preds, strict=True)])
    rows = np.arange(len(cms))
    metrics = seg.finalize(seg.stats_from_confusions(cms, rows, bootstrap=200), CLASSES)
    metrics.update(seed=0, model={"id": model}, dataset={"fingerprint": "segfp"})
    out = tmp_path / name
    out.mkdir(parents=True)
    cells = [seg.sparse_cells(cm) for cm in cms]
    table = pa.table(
        {
            "row": pa.array(rows),
            "iou": pa.array(seg.image_iou(cms)),
            "cm_cells": pa.array([c.tolist() for c, _ in cells], pa.list_(pa.int32())),
            "cm_counts": pa.array([n.tolist() for _, n in cells], pa.list_(pa.int64())),
        }
    )
    if parts:
        half = len(rows) // 2  # two part files, written out of order
        (out / "predictions").mkdir()
        pq.write_table(table.slice(half), out / "predictions" / "part-0.parquet")
        pq.write_table(table.slice(0, half), out / "predictions" / "part-1.parquet")
    else:
        pq.write_table(table, out / "predictions.parquet")
    (out / "metrics.json").write_text(json.dumps(metrics))
    run = reg.start_run(
        "evaluate", {}, dataset_fingerprint="segfp", model_id=model, dataset_path="scenes.parquet"
    )
    keep = {key: metrics[key] for key in ("n", "labels", "ci95", *seg.SCORES)}
    reg.finish_run(run, metrics=keep, artifact_path=str(out))
    return run, metrics


@pytest.fixture
def two_runs(tmp_path):
    rng = np.random.default_rng(0)
    trues = [rng.integers(0, 3, (8, 8)) for _ in range(50)]
    good = [np.where(rng.random((8, 8)) < 0.9, t, rng.integers(0, 3, (8, 8))) for t in trues]
    poor = [np.where(rng.random((8, 8)) < 0.5, t, rng.integers(0, 3, (8, 8))) for t in trues]
    reg = Registry()
    a, ma = fake_segmentation_eval(reg, tmp_path, "a", trues, poor, "m-poor", parts=False)
    b, mb = fake_segmentation_eval(reg, tmp_path, "b", trues, good, "m-good")
    return reg, a, b, ma, mb


def test_compare_is_paired_over_images_and_writes_its_report(two_runs):
    from pathlib import Path

    from jobs.team import compare_runs

    reg, a, b, ma, mb = two_runs
    result = compare_runs(reg, a, b, "miou", replicates=200)
    m = result["metrics"]["miou"]
    assert m["a"] == pytest.approx(ma["miou"]) and m["b"] == pytest.approx(mb["miou"])
    assert m["ci95"][0] > 0 and result["verdict"].startswith("B better on miou")
    assert result["wilcoxon"]["b_better"] > 40 and result["n"] == 50
    html = Path(result["report"]).read_text()
    assert "Per-class IoU" in html and "Wilcoxon" in html and html.count("<svg") == 2


def test_gate_min_and_max_drop_on_miou(two_runs):
    from cluster.specs.workloads import GateSpec
    from jobs.gate import gate_run

    reg, a, b, ma, mb = two_runs
    ok = gate_run(reg, b, GateSpec(min={"miou": 0.5}, use_ci_lower=True))
    assert ok["passed"] and ok["conditions"][0]["line"].startswith("PASS  miou >= 0.5000 by its CI lower end")
    drop = gate_run(reg, a, GateSpec(baseline=b, max_drop={"miou": 1.0}))  # the poor run against the good
    (cond,) = drop["conditions"]
    assert not drop["passed"] and "Wilcoxon p < 0.001" in cond["line"] and cond["value"] > 1.0


def test_leaderboard_ranks_segmentation_runs_by_miou(two_runs):
    from cluster.registry.leaderboard import leaderboard

    reg, a, b, *_ = two_runs
    (rows,) = leaderboard(reg, "segfp", "miou").values()
    assert [r["id"] for r in rows] == [b, a]
