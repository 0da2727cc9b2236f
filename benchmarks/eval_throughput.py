"""Evaluation throughput: Hugging Face pipeline (one process) vs evalcluster on Ray Data.

    python benchmarks/eval_throughput.py [--model best] [--rows 4000]

Everything runs in one script on the same rows of the sample test split and
the same model, and prints measured ratios:
  - baseline: transformers.pipeline("text-classification", batch_size=64), in this
    process, torch on all cores; steady-state rows/s after a warm-up
  - evalcluster fp32 and auto (bf16 on CPUs with AVX-512 BF16/AMX), each as a
    separate driver process (`run_evaluate`): steady-state rows/s from the first
    actor's model being loaded to the last output (Ray start-up and model loading
    excluded), and the whole command's wall time
  - argmax agreement between fp32 and auto, and their accuracy delta
  - the driver's peak RSS at 1x and 10x rows (the 10x input repeats the rows)
The model should be fine-tuned (default: alias `best`) for the accuracy delta to
mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def baseline_pipeline(model_path: Path, texts: list[str]) -> tuple[float, float]:
    """(steady rows/s after a warm-up batch, wall s including model load) of the HF pipeline."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(os.cpu_count())
    t_load = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, local_files_only=True)
    clf = pipeline("text-classification", model=model, tokenizer=tok, batch_size=64, device="cpu")
    clf(texts[:64], truncation=True, max_length=128)  # warm-up
    t0 = time.perf_counter()
    clf(texts, truncation=True, max_length=128)
    t1 = time.perf_counter()
    return len(texts) / (t1 - t0), t1 - t_load


def driver(args: list[str]) -> None:
    """Child mode: one evaluation as its own driver process; prints a JSON line."""
    from cluster.evaluation.run import run_evaluate
    from cluster.specs.workloads import DataSpec, EvaluateSpec

    model, path, out, precision = args
    t0 = time.perf_counter()
    result = run_evaluate(
        EvaluateSpec(
            model=model,
            data=DataSpec(path=path),
            out=out,
            precision=precision,
            bootstrap=1000,
            overwrite=True,
        )
    )
    wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "wall_s": wall,
                "peak_rss_mib": peak_mib,
                **result.metrics["timings"],
                "precision": result.metrics["precision_mode"],
                "accuracy": result.metrics["accuracy"],
            }
        )
    )


def run_driver(model: str, path: Path, out: Path, precision: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--driver", model, str(path), str(out), precision],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"evaluation failed:\n{proc.stderr[-3000:]}")
    # The child prints one JSON line; Ray may print other lines around it.
    result = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))
    result["process_wall_s"] = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="best")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--skip-10x", action="store_true")
    opts = parser.parse_args()

    from cluster.data.corpus import sample_splits
    from cluster.models.resolve import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="evalbench-"))
    sample_splits(tmp / "sample")
    df = pd.read_parquet(tmp / "sample" / "test.parquet").head(opts.rows)
    df.to_parquet(tmp / "x1.parquet", row_group_size=1024)
    pd.concat([df] * 10, ignore_index=True).to_parquet(tmp / "x10.parquet", row_group_size=1024)
    ref = resolve_model(opts.model)
    if ref.labels is None:  # a bare encoder: give it a (random) head so it can be evaluated
        from cluster.data.corpus import LABELS
        from cluster.models.text import load_classifier, save_model_dir

        model, tok, _ = load_classifier(ref.path, labels=LABELS)
        ref.path = save_model_dir(model, tok, tmp / "headed", {"base_model": ref.model_id})
        print("note: not a fine-tuned model; the fp32/bf16 accuracy delta is not meaningful")
    print(
        f"model {ref.model_id} ({ref.path}); {len(df)} rows of the sample test split; {os.cpu_count()} CPUs"
    )

    base, base_wall = baseline_pipeline(ref.path, df["text"].tolist())
    print(f"baseline HF pipeline batch 64: {base:.1f} rows/s; {base_wall:.1f}s with model load")
    fp32 = run_driver(str(ref.path), tmp / "x1.parquet", tmp / "fp32", "fp32")
    auto = run_driver(str(ref.path), tmp / "x1.parquet", tmp / "auto", "auto")
    for name, r in (("fp32", fp32), (f"auto ({auto['precision']})", auto)):
        print(
            f"evalcluster {name}: steady {r['steady_rows_per_s']:.1f} rows/s "
            f"= {r['steady_rows_per_s'] / base:.2f}x baseline; whole run {r['wall_s']:.1f}s "
            f"(process {r['process_wall_s']:.1f}s)"
        )
    from cluster.registry.predictions import read_predictions

    p32, pau = (read_predictions(tmp / mode / "predictions") for mode in ("fp32", "auto"))
    agree = float(np.mean(p32["pred"].to_numpy() == pau["pred"].to_numpy()))
    print(
        f"argmax agreement fp32 vs auto: {agree:.4f}; accuracy fp32 {fp32['accuracy']:.4f}, "
        f"auto {auto['accuracy']:.4f}, delta {auto['accuracy'] - fp32['accuracy']:+.4f}"
    )
    summary = {"baseline_rows_per_s": base, "fp32": fp32, "auto": auto, "agreement": agree}
    if not opts.skip_10x:
        x10 = run_driver(str(ref.path), tmp / "x10.parquet", tmp / "x10", "auto")
        growth = x10["peak_rss_mib"] / auto["peak_rss_mib"] - 1
        print(
            f"driver peak RSS: 1x {auto['peak_rss_mib']:.0f} MiB, 10x {x10['peak_rss_mib']:.0f} MiB "
            f"(+{growth:.1%}); 10x steady {x10['steady_rows_per_s']:.1f} rows/s"
        )
        summary["x10"] = x10
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        driver(sys.argv[2:])
    else:
        main()
