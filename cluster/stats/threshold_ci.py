"""Confidence intervals of the threshold metrics: a cluster Poisson bootstrap over row-hash buckets.

Why not one Poisson(count) weight per merged cell? For one class alone that is
exact (the sum of c Poisson(1) row weights is Poisson(c)), but a row sits in
one cell of *every* class, and its weight must move those cells together.
Drawn independently per class, the macro-AUC spread came out about 23% too
narrow on simulated 3-class data (500 rows: bootstrap SD 0.0100 against 0.0129
across fresh samples), so a nominal 95% interval would cover only ~87%
(+-1.96 x 0.77 SDs, normal approximation).

So rows are hashed into BUCKETS = 256 clusters (a pure function of the row id,
:func:`cluster.stats.threshold_cells.row_buckets`) and each (bucket, replicate) gets
one Poisson(1) weight (:func:`cluster.stats.rowhash.poisson_weights` of the bucket
id): a cluster bootstrap. Rows are exchangeable and the buckets a random
partition of them, so it estimates the same sampling spread as a row bootstrap;
its variance estimate has ~255 degrees of freedom, which costs a fraction of a
point of coverage (checked by simulation in tests/test_threshold.py). The
replicates depend only on the merged cells and the seed: not on the sharding.
Percentile intervals, as cluster.stats.metrics.bootstrap_ci.

Cost: per class, replicates x min(distinct keys, BOOT_BINS) floating-point
work, done in chunks of about 2M values (~8 MB in float32) at a time.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from cluster.stats.exact import SHIFT
from cluster.stats.rowhash import poisson_weights
from cluster.stats.threshold_cells import BUCKETS, Cells, by_key, key_index, ranking_from_counts

CHUNK_VALUES = 1 << 21  # replicate x bin values computed at once
BOOT_BINS = 4096  # replicates use at most this many score bins per class (see _score_bins)


def replicate_scores(stats, replicates: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-replicate values: roc_auc, average_precision, support (classes, B); top_k_accuracy,
    brier_score (B,). ``stats`` is a ThresholdStats."""
    w = poisson_weights(np.arange(BUCKETS), replicates, seed).astype(np.float64)  # (B, BUCKETS)
    per = [_class_replicates(cells, w) for cells in stats.classes]
    n = w @ stats.n  # (B,) rows per replicate
    brier = np.array([int(b) / (1 << SHIFT) for b in stats.brier])  # each correctly rounded
    scale = 0.5 if len(per) < 3 else 1.0
    return {
        "roc_auc": np.array([p[0] for p in per]),
        "average_precision": np.array([p[1] for p in per]),
        "support": np.array([p[2] for p in per]),
        "top_k_accuracy": _ratio(w @ stats.top_k_hits, n) if len(per) >= 3 else np.full(replicates, np.nan),
        "brier_score": scale * _ratio(w @ brier, n),
    }


def _class_replicates(cells: Cells, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(auc, ap, support), each (B,), of one class under bucket weights w (B, BUCKETS)."""
    key_of_cell, _ = key_index(cells)
    bins, shift = _score_bins(cells)
    nb = int(bins[-1]) + 1 if len(bins) else 0
    row = nb - 1 - bins[key_of_cell]  # descending
    g = cells.bucket.astype(np.int64)
    # float32 is enough for replicate values (weighted counts are whole numbers, exact below 2**24
    # per bin; sums err ~1e-7 relative) and halves the memory traffic of this, the costly part.
    pos = sparse.csr_matrix((cells.pos.astype(np.float32), (row, g)), shape=(nb, BUCKETS))
    neg = sparse.csr_matrix((cells.neg.astype(np.float32), (row, g)), shape=(nb, BUCKETS))
    support = w @ np.bincount(g, weights=cells.pos, minlength=BUCKETS)
    # AP of a class without positives is 0 (scikit-learn); a replicate that lost them all is undefined.
    empty = np.nan if cells.pos.sum() else 0.0
    reps = len(w)
    auc, ap = np.empty(reps), np.empty(reps)
    step = max(1, CHUNK_VALUES // max(nb, 1))
    w32 = w.astype(np.float32)
    for s in range(0, reps, step):
        wc = w32[s : s + step].T  # (BUCKETS, c)
        pw, nw = np.ascontiguousarray((pos @ wc).T), np.ascontiguousarray((neg @ wc).T)  # (c, nb)
        auc[s : s + step], ap[s : s + step] = ranking_from_counts(pw, nw, empty)
    return auc + shift[0], ap + shift[1], support


def _score_bins(cells: Cells) -> tuple[np.ndarray, tuple[float, float]]:
    """(u,) ascending bin of each distinct key, and the (AUC, AP) shift from bins to exact keys.

    With more than BOOT_BINS distinct keys, the replicates run on BOOT_BINS equal-count bins of
    consecutive keys (cost: replicates x bins, not x keys). Binning only turns pairs within a bin
    into ties; with ~rows/BOOT_BINS rows a bin that moves AUC and AP by ~1e-4, nearly the same in
    every replicate, so the replicates are shifted by (exact - binned) on the unweighted data.
    """
    _, pos, neg = by_key(cells)
    u = len(pos)
    if u <= BOOT_BINS:
        return np.arange(u), (0.0, 0.0)
    count = pos + neg
    before = np.cumsum(count) - count
    bins = np.unique(before * BOOT_BINS // count.sum(), return_inverse=True)[1].ravel()
    exact = ranking_from_counts(pos[::-1].astype(float), neg[::-1].astype(float))
    nb = int(bins[-1]) + 1
    desc = nb - 1 - bins
    binned = ranking_from_counts(
        np.bincount(desc, weights=pos, minlength=nb), np.bincount(desc, weights=neg, minlength=nb)
    )
    diff = [float(e - b) if np.isfinite(e - b) else 0.0 for e, b in zip(exact, binned, strict=True)]
    return bins, (diff[0], diff[1])


def bootstrap_ci(stats, point: dict, replicates: int, seed: int, confidence: float) -> dict:
    """Percentile intervals of the headline metrics, plus ``per_class`` [{roc_auc, average_precision}]."""
    reps = replicate_scores(stats, replicates, seed)
    auc, ap, support = reps["roc_auc"], reps["average_precision"], reps["support"]
    has_auc = np.array([not np.isnan(c["roc_auc"]) for c in point["per_class"]])
    ones = np.ones_like(support)
    values = {
        "roc_auc_macro": _average(auc, has_auc, ones),
        "roc_auc_weighted": _average(auc, has_auc, support),
        "average_precision_macro": _average(ap, np.ones(len(ap), bool), ones),
        "average_precision_weighted": _average(ap, np.ones(len(ap), bool), support),
        "top_k_accuracy": reps["top_k_accuracy"],
        "brier_score": reps["brier_score"],
    }
    out = {metric: percentile_ci(v, confidence) for metric, v in values.items()}
    out["per_class"] = [
        {"roc_auc": percentile_ci(auc[c], confidence), "average_precision": percentile_ci(ap[c], confidence)}
        for c in range(len(auc))
    ]
    return out


def _average(values: np.ndarray, use: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) weighted mean over the classes in ``use``: a class of weight 0 in a replicate adds
    nothing; one that weighs but is undefined (nan) makes the replicate undefined."""
    if not use.any():
        return np.full(values.shape[1], np.nan)
    v, wt = values[use], weights[use]
    num = np.where(wt > 0, np.nan_to_num(v) * wt, 0.0).sum(0)
    out = _ratio(num, wt.sum(0))
    out[(np.isnan(v) & (wt > 0)).any(0)] = np.nan
    return out


def percentile_ci(values: np.ndarray, confidence: float) -> list[float] | None:
    """[lo, hi] percentile interval over the defined replicates; None when none is defined."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return None
    alpha = (1 - confidence) / 2
    return [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)
