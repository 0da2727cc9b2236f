"""Is model B really better than model A on this dataset? Paired statistics of two evaluations.

Both runs must be evaluations of the same dataset (same fingerprint), so their
predictions.parquet files line up row by row. We stream both files in aligned
batches and accumulate, per Poisson-bootstrap replicate, the two confusion
matrices under the *same* row weights (a paired bootstrap), plus McNemar's
discordant counts. Nothing that grows with the dataset is kept.

    b = rows A got right and B got wrong,  c = rows A got wrong and B got right
    McNemar's exact test: two-sided binomial test of b vs c with p = 1/2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import UserError
from cluster.stats.metrics import paired_metrics, poisson_weights, scores_from_confusion


@dataclass
class PairedCounts:
    """Confusion matrices of A and B, per replicate, and McNemar's discordant counts."""

    cm_a: np.ndarray  # (k, k)
    cm_b: np.ndarray
    boot_a: np.ndarray  # (B, k, k) under the same Poisson row weights as boot_b
    boot_b: np.ndarray
    b: int = 0  # A right, B wrong
    c: int = 0  # A wrong, B right


def paired_counts(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    rows: np.ndarray,
    k: int,
    replicates: int,
    seed: int = 0,
) -> PairedCounts:
    """Counts of one aligned batch (class ids in model label order)."""
    w = poisson_weights(rows, replicates, seed) if replicates else np.zeros((0, len(rows)), np.int64)
    out = PairedCounts(
        np.zeros((k, k), np.int64),
        np.zeros((k, k), np.int64),
        np.zeros((replicates, k, k), np.int64),
        np.zeros((replicates, k, k), np.int64),
    )
    for pred, cm, boot in ((pred_a, out.cm_a, out.boot_a), (pred_b, out.cm_b, out.boot_b)):
        cell = y * k + pred
        cm += np.bincount(cell, minlength=k * k).reshape(k, k)
        for c in np.unique(cell):
            boot[:, c // k, c % k] += w[:, cell == c].sum(1)
    right_a, right_b = pred_a == y, pred_b == y
    out.b, out.c = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    return out


def merge(x: PairedCounts, y: PairedCounts) -> PairedCounts:
    return PairedCounts(
        x.cm_a + y.cm_a, x.cm_b + y.cm_b, x.boot_a + y.boot_a, x.boot_b + y.boot_b, x.b + y.b, x.c + y.c
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: P(|X - n/2| >= |b - n/2|), X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def differences(counts: PairedCounts, confidence: float = 0.95) -> dict[str, dict]:
    """B - A per metric with the paired-bootstrap percentile interval of the difference."""
    a, b = scores_from_confusion(counts.cm_a), scores_from_confusion(counts.cm_b)
    reps_a, reps_b = scores_from_confusion(counts.boot_a), scores_from_confusion(counts.boot_b)
    alpha = (1 - confidence) / 2
    out = {}
    for m in paired_metrics():
        diff = reps_b[m] - reps_a[m]
        ci = [float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))] if len(diff) else None
        out[m] = {"a": float(a[m]), "b": float(b[m]), "diff": float(b[m] - a[m]), "ci95": ci}
    return out


def verdict(metric: str, diff: dict, p_value: float) -> str:
    """One line, e.g. 'B better on f1_macro: +2.1 [+1.4, +2.8] points, McNemar p < 0.001'."""
    d, (lo, hi) = diff["diff"] * 100, [x * 100 for x in diff["ci95"]]
    p = "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
    if lo > 0:
        head = f"B better on {metric}"
    elif hi < 0:
        head = f"A better on {metric}"
    else:
        head = f"no significant difference on {metric}"
    return f"{head}: {d:+.1f} [{lo:+.1f}, {hi:+.1f}] points, McNemar {p}"


def compare_predictions(
    path_a: Path | pa.NativeFile,
    path_b: Path | pa.NativeFile,
    labels: list[str],
    replicates: int = 1000,
    seed: int = 0,
    batch_rows: int = 65536,
) -> tuple[PairedCounts, dict]:
    """Stream two aligned predictions.parquet files (paths, or open files from any filesystem);
    returns counts and per-metric differences."""
    index = {lab: i for i, lab in enumerate(labels)}
    fa, fb = pq.ParquetFile(path_a), pq.ParquetFile(path_b)
    if fa.metadata.num_rows != fb.metadata.num_rows:
        raise UserError(
            f"the runs predicted different numbers of rows ({fa.metadata.num_rows} vs "
            f"{fb.metadata.num_rows}); compare evaluations of the same full dataset"
        )
    k = len(labels)
    total = PairedCounts(
        np.zeros((k, k), np.int64),
        np.zeros((k, k), np.int64),
        np.zeros((replicates, k, k), np.int64),
        np.zeros((replicates, k, k), np.int64),
    )
    cols = ["row", "label", "pred"]
    for ta, tb in zip(
        fa.iter_batches(batch_rows, columns=cols), fb.iter_batches(batch_rows, columns=cols), strict=True
    ):
        rows = ta.column("row").to_numpy()
        if not np.array_equal(rows, tb.column("row").to_numpy()):
            raise UserError("the runs' predictions are not aligned row by row; were they on the same data?")
        y = _ids(ta.column("label").to_pylist(), index)
        part = paired_counts(
            y,
            _ids(ta.column("pred").to_pylist(), index),
            _ids(tb.column("pred").to_pylist(), index),
            rows,
            k,
            replicates,
            seed,
        )
        total = merge(total, part)
    return total, differences(total)


def _ids(names: list[str], index: dict[str, int]) -> np.ndarray:
    return np.array([index[n] for n in names], dtype=np.int64)
