"""CPU cost of the threshold metrics and --auto-slices per evaluation, against the model's own cost.

    python benchmarks/eval_depth_cpu.py [--model base]

The companion of eval_depth_cost.py for a shared, loaded machine: wall-time ratios of
whole runs there move by +-30% with the other tenants' load, while CPU time
(``time.process_time``: this process's CPU seconds, all threads) barely does. One
process, no Ray, the same code the inference actors and the driver run, on the same
37,243 rows (the sample test split x10, cut to 37,243):
  - model: tokenisation + forward of the 3,725 test rows, single-threaded like an actor
    (x10 for the 37,243 rows, which repeat them)
  - core: cluster.stats.metrics.batch_stats with 1,000 bootstrap replicates (what a plain
    `evalctl evaluate` computes per batch), per 1,024-row shard
  - threshold: cluster.stats.threshold.threshold_stats per shard + merge + threshold_metrics
    with 1,000 replicates on the driver
  - slices: cluster.stats.slices.slice_stats per shard + merge + weak_slices on the driver
The extra share is (threshold [+ slices]) / (model + core).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARD = 1024
ROWS = 37243


def cpu(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def model_probs(model_path: str, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, local_files_only=True).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tok(texts[i : i + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), -1).numpy())
    return np.concatenate(out)


def shards(n: int):
    return [slice(i, min(i + SHARD, n)) for i in range(0, n, SHARD)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base")
    opts = parser.parse_args()

    from benchmarks.eval_depth_cost import headed_model
    from cluster.data.corpus import LABELS, sample_splits
    from cluster.stats.metrics import batch_stats
    from cluster.stats.slices import slice_stats, weak_slices
    from cluster.stats.threshold import threshold_metrics, threshold_stats

    tmp = Path(tempfile.mkdtemp(prefix="evaldepth-cpu-"))
    sample_splits(tmp / "sample")
    test = pd.read_parquet(tmp / "sample" / "test.parquet")
    model = headed_model(opts.model, tmp)
    probs1, t_model1 = cpu(lambda: model_probs(model, test["text"].tolist()))
    reps = -(-ROWS // len(test))
    texts = (test["text"].tolist() * reps)[:ROWS]
    y = np.tile(test["label"].map({lab: i for i, lab in enumerate(LABELS)}).to_numpy(), reps)[:ROWS]
    probs = np.tile(probs1, (reps, 1))[:ROWS]
    rows = np.arange(ROWS)
    t_model = t_model1 * ROWS / len(test)

    def core():
        return [batch_stats(y[s], probs[s], rows=rows[s], bootstrap=1000, seed=0) for s in shards(ROWS)]

    _, t_core = cpu(core)

    def threshold():
        parts = [threshold_stats(y_true=y[s], probs=probs[s], rows=rows[s]) for s in shards(ROWS)]
        return threshold_metrics(sum(parts[1:], parts[0]), labels=LABELS, bootstrap=1000, seed=0)

    def slices():
        parts = [
            slice_stats(texts=texts[s], y_true=y[s], pred=probs[s].argmax(1), num_classes=3)
            for s in shards(ROWS)
        ]
        merged = sum(parts[1:], parts[0])
        return weak_slices(merged, labels=LABELS, metric="accuracy", min_slice_size=50, seed=0)

    _, t_thr = cpu(threshold)
    found, t_sl = cpu(slices)
    base = t_model + t_core
    print(f"{ROWS} rows; model {opts.model}; CPU seconds (time.process_time, one process)")
    for name, t in [
        (f"model forward (3,725 rows x {ROWS / len(test):.3f})", t_model),
        ("core statistics (plain evaluate)", t_core),
        ("threshold metrics (actors + driver)", t_thr),
        ("auto-slices (actors + driver)", t_sl),
        ("threshold + auto-slices", t_thr + t_sl),
    ]:
        print(f"  {name:42s} {t:8.1f} s  = {t / base:6.1%} of model + core")
    print(f"  ({found['tested']} slices tested, {len(found['weak'])} weak)")


if __name__ == "__main__":
    main()
