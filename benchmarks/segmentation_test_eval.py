"""Test mIoU of segmentation models with 95% intervals, against the all-background baseline and each
other, computed in this process by the evaluation task's own steps (no Ray).

    python benchmarks/segmentation_test_eval.py --data TEST.parquet --model PRETRAINED_DIR
        [--model RANDOM_DIR] [--bootstrap 1000] [--out FILE.json]

Each model's test split goes through cluster/evaluation/segment.py as the Ray Data pipeline runs
it (preprocess blocks, the model stage per ``_batch``, statistics and predictions, finalize), only
in one process: the same numbers `evalctl evaluate` writes (its predictions hold each image's
confusion cells, which the paired comparisons here read). The baseline predicts background (class
0) everywhere. Pairs: the first model against the baseline and against each other model, paired
over images (cluster/stats/segmentation_compare.py: bootstrap over images + Wilcoxon signed-rank on
per-image IoU). For the figures while `evalctl evaluate` of a segmentation model needs the Ray Data
engine (issue 23); segmentation_pvr.py runs the CLI path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BLOCK = 256


def evaluate(model_dir: Path, data: Path, bootstrap: int) -> tuple[dict, pa.Table, float]:
    """(metrics, predictions, seconds) of one model on ``data`` through the task's steps."""
    from cluster.evaluation.segment import BAD, BATCH, segment_task
    from cluster.models.resolve import resolve_model
    from cluster.specs.workloads import DataSpec, PipelineSpec

    t0 = time.perf_counter()
    ref = resolve_model(str(model_dir))
    spec = PipelineSpec(batch_size=64, bootstrap=bootstrap, precision="auto")
    task = segment_task(spec, ref, ref.labels, DataSpec(path=str(data), id_column="id"))
    model = task.load("cpu")
    table = pq.read_table(data, columns=["image", "mask", "id"])
    table = table.append_column("row", pa.array(np.arange(table.num_rows)))
    merged, parts = None, []
    for start in range(0, table.num_rows, BLOCK):
        pre = task.preprocess(table.slice(start, BLOCK))
        batches = sorted(set(pre[BATCH].to_pylist()))
        out = pa.concat_tables([model.predict(pre.filter(pc.equal(pre[BATCH], b))) for b in batches])
        rows = out.filter(pc.invert(pc.is_valid(out[BAD])))
        stats = task.statistics(rows)["segmentation"]
        merged = stats if merged is None else merged + stats
        parts.append(task.predictions(rows))
    metrics = task.finalize({"segmentation": merged})
    return metrics, pa.concat_tables(parts), time.perf_counter() - t0


def background_baseline(predictions: pa.Table, k: int, bootstrap: int) -> tuple[dict, pa.Table]:
    """The all-background predictor on the same images: its scores and its predictions' cells (a
    confusion cell t*k + p with p = 0 for each true class t, from the model's cells)."""
    from cluster.data.segmentation_sample import CLASSES
    from cluster.stats import segmentation as seg

    cms = []
    for cells, counts in zip(
        predictions["cm_cells"].to_pylist(), predictions["cm_counts"].to_pylist(), strict=True
    ):
        cm = seg.dense_cells(cells, counts, k)
        base = np.zeros((k, k), np.int64)
        base[:, 0] = cm.sum(1)  # every true pixel predicted background
        cms.append(base)
    cms = np.stack(cms)
    rows = predictions["row"].to_numpy()
    metrics = seg.finalize(seg.stats_from_confusions(cms, rows, bootstrap=bootstrap), CLASSES[:k])
    cells = [seg.sparse_cells(cm) for cm in cms]
    table = pa.table(
        {
            "row": pa.array(rows),
            "cm_cells": pa.array([c.tolist() for c, _ in cells], pa.list_(pa.int32())),
            "cm_counts": pa.array([n.tolist() for _, n in cells], pa.list_(pa.int64())),
        }
    )
    return metrics, table


def summary(m: dict) -> dict:
    keys = ("n", "miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou", "mean_dice", "mean_image_iou")
    return {
        **{k: m[k] for k in keys},
        "ci95": m["ci95"],
        "per_class_iou": {c: v["iou"] for c, v in m["per_class"].items()},
    }


def main() -> None:
    from cluster.stats.segmentation_compare import paired_images, verdict

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument(
        "--model", type=Path, action="append", required=True, help="Model dirs; the first is compared."
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    runs = {}
    for d in args.model:
        m, p, secs = evaluate(d, args.data, args.bootstrap)
        runs[str(d)] = (m, p)
        print(json.dumps({"model": str(d), "seconds": round(secs, 1), **summary(m)}), flush=True)
    first, (m0, p0) = str(args.model[0]), runs[str(args.model[0])]
    k = len(m0["labels"])
    base_m, base_p = background_baseline(p0, k, args.bootstrap)
    pairs = {}
    for name, other in [("all-background", base_p), *[(n, p) for n, (_, p) in runs.items() if n != first]]:
        out = paired_images(other, p0, k, replicates=args.bootstrap)  # A = the other, B = the first model
        d = out["metrics"]["miou"]
        pairs[name] = {
            "miou": d,
            "wilcoxon": out["wilcoxon"],
            "verdict": verdict("miou", d, out["wilcoxon"]["p_value"]),
        }
    result = {
        "data": str(args.data),
        "models": {n: summary(m) for n, (m, _) in runs.items()},
        "all_background": summary(base_m),
        "first_model_against": pairs,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
