"""The mergeable cells behind the threshold metrics: distinct scores x bootstrap buckets, with counts.

A class's :class:`Cells` hold, sorted by (key, bucket), each distinct score value
(key) that rows of one bootstrap bucket got, with how many were of the class
(``pos``) and of the other classes (``neg``). ``merge_cells`` is a union with
summed counts: integer arithmetic only, so any sharding and any merge order give
the same arrays bit for bit.

Bounded size: past ``max_cells`` a class's keys are *coarsened*. Level L zeroes
the low 29 + L bits of the float64 key (29 bits are what float64 has beyond
float32, so level 1 drops one float32 mantissa bit). Probabilities are >= 0,
where zeroing low bits is monotone (bit order = value order), and levels nest
(level L+1 of a level-L key = level L+1 of the original key). A merge coarsens
to the smallest level, at least both inputs', at which the union fits; since a
subset never needs more cells than the whole, every merge order ends at the
same level: the smallest one at which all rows fit. Level 23 keeps only the
exponent, so at most (binary exponents used) x BUCKETS cells remain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from cluster.stats import codec
from cluster.stats.rowhash import hash64

BUCKETS = 256  # bootstrap clusters of rows (see cluster.stats.threshold_ci)
BUCKET_SALT = 0x7468726573686F6C  # decorrelates the buckets from other uses of the row hash
MAX_LEVEL = 23


@dataclass
class Cells:
    """Counts per (score key, bucket) of one class; arrays of one length m, sorted by (key, bucket)."""

    key: np.ndarray  # (m,) float32 when that holds every key exactly, else float64
    bucket: np.ndarray  # (m,) uint8
    pos: np.ndarray  # (m,) int64 rows of this class
    neg: np.ndarray  # (m,) int64 rows of other classes
    level: int = 0  # key coarsening level, 0 = exact

    @property
    def nbytes(self) -> int:
        return self.key.nbytes + self.bucket.nbytes + self.pos.nbytes + self.neg.nbytes


def row_buckets(rows: np.ndarray) -> np.ndarray:
    """(n,) uint8 bootstrap bucket of each row id: a pure function of the id."""
    return (hash64(rows, BUCKET_SALT) >> np.uint64(56)).astype(np.uint8)


def make_cells(scores: np.ndarray, bucket: np.ndarray, is_pos: np.ndarray, max_cells: int) -> Cells:
    """Cells of one batch: scores (n,) in [0, 1], bucket (n,) uint8, is_pos (n,) bool."""
    is_pos = np.asarray(is_pos, bool)
    cells = _canonical(scores, bucket, is_pos.astype(np.int64), (~is_pos).astype(np.int64), 0)
    return _fit(cells, max_cells)


def merge_cells(a: Cells, b: Cells, max_cells: int) -> Cells:
    """The union of two classes' cells with summed counts (exact, order-free), coarsened to fit."""
    level = max(a.level, b.level)
    a, b = coarsen(a, level), coarsen(b, level)
    cells = _canonical(
        np.concatenate([to_float(a.key), to_float(b.key)]),
        np.concatenate([a.bucket, b.bucket]),
        np.concatenate([a.pos, b.pos]),
        np.concatenate([a.neg, b.neg]),
        level,
    )
    return _fit(cells, max_cells)


def coarsen(cells: Cells, level: int) -> Cells:
    if level == cells.level:
        return cells
    mask = ~np.uint64((1 << (29 + level)) - 1)
    keys = (to_float(cells.key).view(np.uint64) & mask).view(np.float64)
    return _canonical(keys, cells.bucket, cells.pos, cells.neg, level)


def _fit(cells: Cells, max_cells: int) -> Cells:
    while len(cells.key) > max_cells and cells.level < MAX_LEVEL:
        cells = coarsen(cells, cells.level + 1)
    return cells


def _canonical(keys, bucket, pos, neg, level: int) -> Cells:
    """Sort by (key, bucket), add up duplicate cells, store keys at the narrowest exact dtype."""
    keys = to_float(keys) + 0.0  # -0.0 -> 0.0
    bucket = np.asarray(bucket, np.uint8)
    k32 = keys.astype(np.float32)
    if np.array_equal(k32, keys):
        # One uint64 sort key (float32 bits, then bucket): bit order is value order for x >= 0,
        # and a stable sort (timsort) merges two sorted runs in linear time.
        composite = (k32.view(np.uint32).astype(np.uint64) << np.uint64(8)) | bucket
        order = np.argsort(composite, kind="stable")
    else:
        order = np.lexsort((bucket, keys))
    keys, bucket, pos, neg = keys[order], bucket[order], pos[order], neg[order]
    new = np.ones(len(keys), bool)
    new[1:] = (keys[1:] != keys[:-1]) | (bucket[1:] != bucket[:-1])
    if not new.all():
        starts = np.flatnonzero(new)
        keys, bucket = keys[starts], bucket[starts]
        pos, neg = np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)
    return Cells(_narrow(keys), bucket, pos.astype(np.int64), neg.astype(np.int64), level)


def _narrow(keys: np.ndarray) -> np.ndarray:
    k32 = keys.astype(np.float32)
    return k32 if np.array_equal(k32, keys) else keys


def to_float(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.float64)


def by_key(cells: Cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys ascending, pos, neg) with the buckets added up."""
    if not len(cells.key):
        return cells.key, cells.pos, cells.neg
    new = np.ones(len(cells.key), bool)
    new[1:] = cells.key[1:] != cells.key[:-1]
    starts = np.flatnonzero(new)
    return cells.key[starts], np.add.reduceat(cells.pos, starts), np.add.reduceat(cells.neg, starts)


def key_index(cells: Cells) -> tuple[np.ndarray, int]:
    """(m,) index of each cell's key among the distinct keys, and their number."""
    new = np.ones(len(cells.key), bool)
    new[1:] = cells.key[1:] != cells.key[:-1]
    idx = np.cumsum(new) - 1
    return idx, int(new.sum())


# ------------------------------------------------------------------ ranking scores from counts


def ranking_from_counts(pos: np.ndarray, neg: np.ndarray, ap_empty: float = 0.0):
    """(ROC-AUC, average precision) from counts per key, keys *descending* on the last axis.

    Works on (U,) or batched (B, U) weighted counts. With tp, fp the running counts at or
    above each key: AUC = (P N - sum pos * fp + sum pos * neg / 2) / (P N), the Mann-Whitney
    statistic with ties counted 1/2 (nan without positives or negatives);
    AP = sum pos * tp / (tp + fp) / P, scikit-learn's sum_t (R_t - R_t-1) P_t (``ap_empty``
    without positives).
    """
    tp, fp = np.cumsum(pos, -1), np.cumsum(neg, -1)
    if pos.shape[-1]:
        p_all, n_all = tp[..., -1], fp[..., -1]
    else:
        p_all = n_all = np.zeros(pos.shape[:-1], pos.dtype)
    pn = p_all * n_all
    auc_num = pn - (pos * fp).sum(-1) + 0.5 * (pos * neg).sum(-1)
    auc = np.divide(auc_num, pn, out=np.full(np.shape(pn), np.nan), where=pn > 0)
    precision = tp / np.maximum(tp + fp, 1)  # counts are whole (weighted) rows: tp + fp is 0 or >= 1
    ap_num = (pos * precision).sum(-1)
    ap = np.divide(ap_num, p_all, out=np.full(np.shape(pn), float(ap_empty)), where=p_all > 0)
    return auc, ap


# ------------------------------------------------------------------ exact float sums


# ------------------------------------------------------------------ merging many


T = TypeVar("T")


class MergeTree(Generic[T]):
    """Adds up many statistics as a binary counter (slot i holds the sum of 2**i inputs).

    Adding n batches one by one into a growing total copies the total n times; here each
    input is copied O(log n) times. Merges are exact and order-free, so the result equals
    the left-to-right sum. Memory: at most one partial sum per level.
    """

    def __init__(self, add: Callable[[T, T], T] = lambda a, b: a + b):
        self.add = add
        self.slots: list[T | None] = []

    def push(self, item: T) -> None:
        for i, held in enumerate(self.slots):
            if held is None:
                self.slots[i] = item
                return
            item, self.slots[i] = self.add(held, item), None
        self.slots.append(item)

    def extend(self, items: Iterable[T]) -> MergeTree[T]:
        for item in items:
            self.push(item)
        return self

    def total(self) -> T | None:
        held = [s for s in self.slots if s is not None]
        if not held:
            return None
        out = held[0]
        for s in held[1:]:
            out = self.add(out, s)
        return out


codec.register(Cells)  # part files hold them (cluster/stats/codec.py)
