"""Segmentation, pretrained vs random init with the same budget, against a trivial baseline.

    python benchmarks/segmentation_pvr.py --work DIR [--config jobs/configs/sweep_segmentation.yaml]
        [--out FILE.json] [-- EXTRA SWEEP OPTIONS, e.g. --max-train-rows 300]

In ``--work`` (a fresh EVALCLUSTER_HOME under it, the commands run there as the README's do):
  1. `evalctl data sample --segmentation data/segmentation` (unless present)
  2. `evalctl sweep --config C --name seg-pretrained` and `... --init random --name seg-random`:
     the same config and budget, each timed as a whole process (wall: the 20-minute target)
  3. `evalctl evaluate` of each sweep's registered model on the test split: test mIoU with its
     95% bootstrap interval over images
  4. `evalctl compare RANDOM PRETRAINED --metric miou`: paired over images (bootstrap + Wilcoxon)
  5. `evalctl sweep report` of both sweeps (learning curves in one figure)
  6. the trivial baseline, every pixel background, on the same test images: its mIoU with an
     interval, and the pretrained model against it paired over images
     (cluster/stats/segmentation_compare.py on its confusions and the evaluation's predictions)
Everything measured goes to the JSON (and is printed); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path("data/segmentation")


def evalctl(work: Path, *args, check: bool = True) -> tuple[float, str]:
    """Run `evalctl ARGS` in ``work`` (its own EVALCLUSTER_HOME and RAY_TMPDIR); (wall s, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVALCLUSTER_HOME": str(work / "home")}
    env.setdefault("RAY_TMPDIR", str(work / "ray"))
    Path(env["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *map(str, args)], cwd=work, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise SystemExit(
            f"evalctl {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return wall, proc.stdout


def sweep(work: Path, config: Path, init: str, extra: list[str]) -> dict:
    wall, out = evalctl(work, "sweep", "--config", config, "--name", f"seg-{init}", "--init", init, *extra)
    found = re.search(r"registered model (\S+);.*run (\S+)", out.replace("\n", " "))
    model_id, run_id = found.group(1).rstrip(";"), found.group(2)
    summary = registry(work).get_run(run_id)["metrics"]
    return {
        "init": init,
        "wall_s": round(wall, 1),
        "sweep_s": round(summary["wall_s"], 1),
        "run_id": run_id,
        "model_id": model_id,
        "trials": summary["trials"],
        "trial_epochs": summary["trial_epochs"],
        "best_config": summary["best_config"],
        "validation_miou": summary["validation"].get("miou"),
    }


def evaluate(work: Path, model_id: str, name: str) -> dict:
    out = work / "eval" / name
    wall, _ = evalctl(
        work, "evaluate", "--model", model_id, "--data", DATA / "test.parquet", "--out", out, "--overwrite"
    )
    m = json.loads((out / "metrics.json").read_text())
    keep = ("miou", "pixel_accuracy", "mean_class_accuracy", "fw_iou", "mean_dice", "mean_image_iou")
    return {
        "run_id": m["run_id"],
        "wall_s": round(wall, 1),
        "n": m["n"],
        **{k: m[k] for k in keep},
        "ci95": m["ci95"],
        "per_class_iou": {c: v["iou"] for c, v in m["per_class"].items()},
        "predictions": str(out / "predictions"),  # part files (docs/contracts.md, predictions 2)
    }


def registry(work: Path):
    from cluster.registry.record import Registry

    return Registry(work / "home")


def trivial_baseline(work: Path, best_predictions: str, bootstrap: int = 1000) -> dict:
    """Every pixel background on the test split: its scores, and the best model against it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.data.images import Preprocessing
    from cluster.data.masks import MaskRules, decode_pairs
    from cluster.data.segmentation_sample import CLASSES
    from cluster.registry.predictions import open_predictions
    from cluster.stats import segmentation as seg
    from cluster.stats.segmentation_compare import paired_images, verdict

    t = pq.read_table(work / DATA / "test.parquet")
    k = len(CLASSES)
    d = decode_pairs(
        t["image"].to_pylist(), t["mask"].to_pylist(), Preprocessing(image_size=64), MaskRules(k)
    )
    cms = np.stack([seg.image_confusion(m, np.zeros_like(m), k) for m in d.masks])
    rows = np.arange(len(cms))
    base = seg.finalize(seg.stats_from_confusions(cms, rows, bootstrap=bootstrap), CLASSES)
    cells = [seg.sparse_cells(cm) for cm in cms]
    table = pa.table(
        {
            "row": pa.array(rows),
            "cm_cells": pa.array([c.tolist() for c, _ in cells], pa.list_(pa.int32())),
            "cm_counts": pa.array([n.tolist() for _, n in cells], pa.list_(pa.int64())),
        }
    )
    best = open_predictions(best_predictions).read(["row", "cm_cells", "cm_counts"])
    paired = paired_images(table, best, k, replicates=bootstrap)
    return {
        "miou": base["miou"],
        "pixel_accuracy": base["pixel_accuracy"],
        "ci95": base["ci95"],
        "best_vs_baseline": paired["metrics"]["miou"],
        "wilcoxon": paired["wilcoxon"],
        "verdict": verdict("miou", paired["metrics"]["miou"], paired["wilcoxon"]["p_value"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="Working directory (data, home, evaluations).")
    ap.add_argument("--config", type=Path, default=ROOT / "jobs" / "configs" / "sweep_segmentation.yaml")
    ap.add_argument("--out", type=Path, help="Write the JSON here too.")
    ap.add_argument("extra", nargs="*", help="More sweep options (after --), for both sweeps.")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "config": str(args.config),
        "extra": args.extra,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    if not (work / DATA / "test.parquet").is_file():
        result["sample_s"] = round(evalctl(work, "data", "sample", "--segmentation", DATA)[0], 1)
    sweeps = {init: sweep(work, args.config.resolve(), init, args.extra) for init in ("pretrained", "random")}
    tests = {init: evaluate(work, s["model_id"], init) for init, s in sweeps.items()}
    _, compared = evalctl(
        work,
        "compare",
        tests["random"]["run_id"],
        tests["pretrained"]["run_id"],
        "--metric",
        "miou",
        "--json",
    )
    report = work / "segmentation_pretrained_vs_random.html"
    evalctl(
        work, "sweep", "report", sweeps["pretrained"]["run_id"], sweeps["random"]["run_id"], "--out", report
    )
    result.update(
        sweeps=sweeps,
        test=tests,
        compare_random_vs_pretrained=json.loads(compared),
        trivial_baseline=trivial_baseline(work, tests["pretrained"]["predictions"]),
        curves=str(report),
        load_after=os.getloadavg(),
    )
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
