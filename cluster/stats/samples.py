"""Small mergeable summaries for drift checks: a hash sample of rows and counts of distinct values.

:class:`HashSample` keeps the ``size`` rows with the smallest hash of (seed, row id) and
a vector per row (embeddings): a uniform random sample that is a pure function of the
row ids, so ``a + b`` gives the same rows whatever the sharding. :class:`ValueCounts`
counts each distinct value (top-class probabilities are float32 values, so there are
at most as many as rows and usually far fewer); a test on the values rebuilds them
with ``np.repeat``.

Example::

    >>> import numpy as np
    >>> a = hash_sample(rows=np.arange(0, 50), vectors=np.zeros((50, 2)), size=5, seed=1)
    >>> b = hash_sample(rows=np.arange(50, 100), vectors=np.zeros((50, 2)), size=5, seed=1)
    >>> c = hash_sample(rows=np.arange(100), vectors=np.zeros((100, 2)), size=5, seed=1)
    >>> bool(((a + b).rows == c.rows).all())
    True
    >>> (value_counts(np.array([.5, .9, .5])) + value_counts(np.array([.9]))).to_array().tolist()
    [0.5, 0.5, 0.9, 0.9]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cluster.stats import codec
from cluster.stats.rowhash import hash64

SAMPLE_SALT = 0x73616D706C65


@dataclass
class HashSample:
    """Rows with the smallest hashes (ascending), their ids and vectors (n, d)."""

    size: int
    hashes: np.ndarray  # (n,) uint64
    rows: np.ndarray  # (n,) int64
    vectors: np.ndarray  # (n, d) float32

    def __add__(self, other: HashSample) -> HashSample:
        if not len(other.rows) or not len(self.rows):  # an empty side may not know the vector size
            return other if len(other.rows) else self
        return _smallest(
            self.size,
            np.concatenate([self.hashes, other.hashes]),
            np.concatenate([self.rows, other.rows]),
            np.concatenate([self.vectors, other.vectors]),
        )


def row_hashes(rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n,) uint64 hash of each row id under ``seed``: the sample's order."""
    return hash64(np.asarray(rows, np.int64), SAMPLE_SALT ^ int(seed))


def sampled(rows: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """(n,) bool: rows whose hash falls in the lowest ``fraction`` of the hash range (candidates,
    so a worker embeds only about fraction x its rows; the merge then keeps the smallest)."""
    if fraction >= 1.0:
        return np.ones(len(rows), bool)
    return row_hashes(rows, seed) < np.uint64(int(fraction * 2.0**64))


def hash_sample(*, rows: np.ndarray, vectors: np.ndarray, size: int, seed: int = 0) -> HashSample:
    """The sample of one batch (rows (n,), vectors (n, d))."""
    vectors = np.asarray(vectors, np.float32).reshape(len(rows), -1)
    return _smallest(size, row_hashes(rows, seed), np.asarray(rows, np.int64), vectors)


def _smallest(size: int, hashes: np.ndarray, rows: np.ndarray, vectors: np.ndarray) -> HashSample:
    order = np.lexsort((rows, hashes))[:size]
    return HashSample(size, hashes[order], rows[order], vectors[order])


@dataclass
class ValueCounts:
    """Distinct values (sorted) and how often each occurred."""

    values: np.ndarray  # (u,) float64
    counts: np.ndarray  # (u,) int64

    def __add__(self, other: ValueCounts) -> ValueCounts:
        values, inv = np.unique(np.concatenate([self.values, other.values]), return_inverse=True)
        counts = np.bincount(inv.ravel(), weights=np.concatenate([self.counts, other.counts]))
        return ValueCounts(values, counts.astype(np.int64))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def to_array(self) -> np.ndarray:
        return np.repeat(self.values, self.counts)


def value_counts(values: np.ndarray) -> ValueCounts:
    values, counts = np.unique(np.asarray(values, np.float64), return_counts=True)
    return ValueCounts(values, counts.astype(np.int64))


codec.register(HashSample, ValueCounts)  # part files hold them (cluster/stats/codec.py)
