"""What the exact threshold metrics cost: cells and bytes held, and time against the existing metrics.

    python benchmarks/threshold_memory.py [--pipeline-rows 3725]

Probabilities at the model's precision (float32 softmax, as cluster.models.text.predict_proba):
  - "tfidf-lr": a TF-IDF + logistic-regression classifier trained on the sample train split
    (a trained, confident model; cheap on CPU), its logits through a float32 softmax;
  - "pipeline": predict_proba of the base model with a seeded new head, on the first
    --pipeline-rows test rows (the real code path; checks that every value is a float32).
Sets measured: the test split (3,725 rows), the test split 10x (37,250 rows, as the issue's
benchmark), and the whole corpus (37,243 distinct texts). Rows go in 1,024-row batches
(the evaluation's shard size), merged with MergeTree as the driver would.
Printed: distinct scores and cells per class, bytes held (arrays) and pickled, bytes per cell and
per row, and time of threshold_stats + merge + threshold_metrics(bootstrap=1000) as a ratio of
cluster.stats.metrics' batch_stats + sum + finalize (bootstrap=1000) on the same batches.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH = 1024


def softmax32(logits: np.ndarray) -> np.ndarray:
    import torch

    return torch.softmax(torch.from_numpy(logits).float(), dim=-1).double().numpy()


def tfidf_probs(train, texts: list[str], labels: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(min_df=2, ngram_range=(1, 2), sublinear_tf=True)
    clf = LogisticRegression(C=10, max_iter=2000).fit(vec.fit_transform(train["text"]), train["label"])
    order = [list(clf.classes_).index(lab) for lab in labels]
    return softmax32(clf.decision_function(vec.transform(texts))[:, order])


def pipeline_probs(texts: list[str], labels: list[str]) -> np.ndarray:
    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import load_classifier, predict_proba

    model, tok, _ = load_classifier(base_model_dir(), labels=labels, seed=0)
    return predict_proba(model, tok, texts, batch_size=64)


def measure(name: str, y: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    from cluster.stats.metrics import batch_stats, finalize
    from cluster.stats.threshold import threshold_metrics, threshold_stats
    from cluster.stats.threshold_cells import MergeTree

    cuts = range(0, len(y), BATCH)
    t0 = time.perf_counter()
    base = [
        batch_stats(
            y[a : a + BATCH],
            probs[a : a + BATCH],
            rows=np.arange(a, a + len(y[a : a + BATCH])),
            bootstrap=1000,
        )
        for a in cuts
    ]
    total = sum(base[1:], base[0])
    finalize(total, labels)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = [
        threshold_stats(
            y_true=y[a : a + BATCH], probs=probs[a : a + BATCH], rows=np.arange(a, min(a + BATCH, len(y)))
        )
        for a in cuts
    ]
    t_batches = time.perf_counter() - t0
    stats = MergeTree().extend(parts).total()
    t_merge = time.perf_counter() - t0 - t_batches
    threshold_metrics(stats, labels=labels, bootstrap=1000)
    t_ours = time.perf_counter() - t0
    cells = [len(c.key) for c in stats.classes]
    held = sum(c.nbytes for c in stats.classes) + stats.n.nbytes + stats.top_k_hits.nbytes
    return {
        "set": name,
        "rows": len(y),
        "float32_exact": bool(np.array_equal(probs.astype(np.float32).astype(np.float64), probs)),
        "distinct_scores_per_class": [len(np.unique(probs[:, c])) for c in range(probs.shape[1])],
        "cells_per_class": cells,
        "bytes_held": held,
        "bytes_pickled": len(pickle.dumps(stats)),
        "bytes_per_cell": round(sum(c.nbytes for c in stats.classes) / sum(cells), 2),
        "bytes_per_row": round(held / len(y), 1),
        "batch_pickle_bytes_per_row": round(len(pickle.dumps(parts[0])) / BATCH, 1),
        "time_ratio_vs_metrics": round(t_ours / t_base, 2),
        "time_split_s": {
            "batches": round(t_batches, 2),
            "merge": round(t_merge, 2),
            "finalize": round(t_ours - t_batches - t_merge, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-rows", type=int, default=3725)
    args = parser.parse_args()

    import tempfile

    import pandas as pd

    from cluster.data.corpus import LABELS, load_corpus, sample_splits

    with tempfile.TemporaryDirectory() as tmp:
        sample_splits(tmp, seed=0)
        train, test = (pd.read_parquet(Path(tmp) / f"{s}.parquet") for s in ("train", "test"))
    corpus = load_corpus()
    ids = {lab: i for i, lab in enumerate(LABELS)}
    y_test = test["label"].map(ids).to_numpy()
    p_test = tfidf_probs(train, test["text"].tolist(), LABELS)
    results = [
        measure("test split, tfidf-lr", y_test, p_test, LABELS),
        measure("test split x10, tfidf-lr", np.tile(y_test, 10), np.tile(p_test, (10, 1)), LABELS),
        measure(
            "whole corpus, tfidf-lr",
            corpus["label"].map(ids).to_numpy(),
            tfidf_probs(train, corpus["text"].tolist(), LABELS),
            LABELS,
        ),
    ]
    if args.pipeline_rows:
        rows = test.head(args.pipeline_rows)
        results.append(
            measure(
                "test split, base + new head (predict_proba)",
                rows["label"].map(ids).to_numpy(),
                pipeline_probs(rows["text"].tolist(), LABELS),
                LABELS,
            )
        )
    for r in results:
        print(r)


if __name__ == "__main__":
    main()
