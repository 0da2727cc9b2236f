"""Pretrained vs random init, same config and budget: sweep wall time, test quality, paired test.

    python benchmarks/pretrain_vs_random.py image [--home DIR] [--out FILE.json]
    python benchmarks/pretrain_vs_random.py text --config jobs/configs/demo.yaml

Through the product only (`evalctl` subprocesses, embedded Ray, an isolated
EVALCLUSTER_HOME): for each init, `evalctl sweep --config CONFIG --init INIT` (wall
time of the command), then `evalctl evaluate` of the sweep's best model on the test
split; then `evalctl compare` (paired bootstrap + McNemar's exact test) and `evalctl
sweep report` (learning curves of both sweeps in one figure). Image mode adds the
baseline (a): scikit-learn logistic regression on the raw 28x28 pixels (train split
fit, test split accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONFIGS = {"image": "jobs/configs/sweep_images.yaml", "text": "jobs/configs/sweep.yaml"}


RAY_START_FAILED = "timed out during startup"  # Ray's raylet on an overloaded machine: start again


def evalctl(home: Path, *args: str, tries: int = 5) -> str:
    for _ in range(tries):
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.cli", *map(str, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "EVALCLUSTER_HOME": str(home)},
        )
        if proc.returncode == 0 or RAY_START_FAILED not in proc.stderr:
            break
        print(f"Ray did not start for evalctl {args[0]}; again", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"evalctl {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def sweep_and_evaluate(home: Path, config: str, init: str, test: Path, tag: str) -> dict:
    from cluster.registry.record import Registry

    name = f"{tag}-{init}-{int(time.time())}"
    t0 = time.perf_counter()
    evalctl(home, "sweep", "--config", config, "--init", init, "--name", name)
    wall = time.perf_counter() - t0
    run = next(r for r in Registry(home).list_runs(kind="sweep") if r["name"] == name)
    out = home / "eval" / name
    evalctl(home, "evaluate", "--model", run["model_id"], "--data", test, "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    keep = ("accuracy", "f1_macro", "log_loss", "ece")
    return {
        "init": init,
        "sweep_run": run["id"],
        "model_id": run["model_id"],
        "sweep_wall_s": round(wall, 1),
        "trial_epochs": run["metrics"].get("trial_epochs"),
        "best_config": run["metrics"].get("best_config"),
        "eval_run": metrics["run_id"],
        "test": {k: metrics[k] for k in keep},
        "test_ci95": {k: metrics["ci95"].get(k) for k in keep if k in metrics["ci95"]},
    }


def logreg_baseline(images_dir: Path) -> dict:
    """Logistic regression on raw pixels (0..1), fit on train, accuracy on test."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    from cluster.data.images import open_image

    def load(split):  # the PNGs' own 28x28 gray pixels, no resizing
        t = pq.read_table(images_dir / f"{split}.parquet")
        px = np.stack([np.asarray(open_image(b).convert("L")) for b in t["image"].to_pylist()])
        return px.reshape(len(px), -1) / 255.0, np.array(t["label"].to_pylist())

    (xtr, ytr), (xte, yte) = load("train"), load("test")
    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=2000).fit(xtr, ytr)
    accuracy = float((clf.predict(xte) == yte).mean())
    return {"test_accuracy": accuracy, "fit_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modality", choices=["image", "text"])
    ap.add_argument("--config", help="Sweep config (default: the modality's default sweep).")
    ap.add_argument("--home", type=Path, default=Path("/tmp/img_bench/home"))
    ap.add_argument("--data", type=Path, help="Directory of the splits (default: sampled into --home).")
    ap.add_argument("--out", type=Path, help="Write the JSON here too.")
    args = ap.parse_args()
    home = args.home.absolute()
    home.mkdir(parents=True, exist_ok=True)
    data = args.data or home / ("images" if args.modality == "image" else "sample")
    if not (data / "test.parquet").is_file():
        evalctl(home, "data", "sample", "--images" if args.modality == "image" else "--out", data)
    config = _config_for(args.config or CONFIGS[args.modality], data, home)
    result = {"modality": args.modality, "config": args.config or CONFIGS[args.modality]}
    runs = []
    for init in ("pretrained", "random"):
        runs.append(sweep_and_evaluate(home, config, init, data / "test.parquet", args.modality))
        print(json.dumps(runs[-1]), flush=True)
    metric = "accuracy" if args.modality == "image" else "f1_macro"
    a, b = runs[1]["eval_run"], runs[0]["eval_run"]  # B (pretrained) vs A (random)
    result.update(runs=runs, compare=json.loads(evalctl(home, "compare", a, b, "--metric", metric, "--json")))
    report = home / f"{args.modality}_pretrained_vs_random.html"
    evalctl(home, "sweep", "report", runs[0]["sweep_run"], runs[1]["sweep_run"], "--out", report)
    result["report"] = str(report)
    if args.modality == "image":
        result["logreg_raw_pixels"] = logreg_baseline(data)
    print(json.dumps(result, indent=2, default=str))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))


def _config_for(config: str, data: Path, home: Path) -> str:
    """The config with its train/validation paths pointed at ``data``."""
    import yaml

    spec = yaml.safe_load((ROOT / config).read_text())
    spec["train"] = {**spec["train"], "path": str(data / "train.parquet")}
    spec["validation"] = {**spec["validation"], "path": str(data / "validation.parquet")}
    out = home / Path(config).name
    out.write_text(yaml.safe_dump(spec))
    return str(out)


if __name__ == "__main__":
    main()
