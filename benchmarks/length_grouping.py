"""Training rows/s with length-grouped batches vs plainly shuffled batches, in one script.

    python benchmarks/length_grouping.py [--rows 2000] [--repeats 2]

Both run jobs/train_loop.fine_tune bare (MiniLM, both cores, the precision
`auto` picks) on the same rows with the same hyperparameters; the only
difference is train_loop.MEGABATCH (1 = each batch is a random draw, as a plain
shuffled loader gives; 50 = batches drawn from length-sorted groups of 50
batches, as Hugging Face's group_by_length). Runs alternate to spread machine
noise. Prints training rows/s (validation excluded) and the validation
macro-F1 each reaches after one epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "benchmarks"))


def run(megabatch: int, train, val, labels, model_path) -> tuple[float, float]:
    """(training rows/s, final validation macro-F1) of one epoch with ``MEGABATCH = megabatch``."""
    from trial_overhead import fine_tune_bare

    from cluster.train import loop as train_loop

    train_loop.MEGABATCH = megabatch  # fine_tune reads it at each epoch
    last = fine_tune_bare(train, val, labels, model_path, evals_per_epoch=1)[-1]
    return last["train_rows_per_s"], last["f1_macro"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()

    from trial_overhead import sample_train_val

    from cluster.models.modeldir import base_model_dir

    tmp = Path(tempfile.mkdtemp(prefix="grouping-"))
    train, val, labels = sample_train_val(tmp, opts.rows, 1000)
    out: dict[str, list] = {"shuffled": [], "grouped": []}
    for _ in range(opts.repeats):
        for name, mb in (("shuffled", 1), ("grouped", 50)):
            rate, f1 = run(mb, train, val, labels, base_model_dir())
            out[name].append((rate, f1))
            print(f"{name:>8}: {rate:6.1f} rows/s, validation macro-F1 {f1:.4f}", flush=True)
    s, g = (np.mean([r for r, _ in out[k]]) for k in ("shuffled", "grouped"))
    print(f"grouped / shuffled training rows/s: {g / s:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
