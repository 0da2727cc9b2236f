"""Pure functions of a row id: Poisson(1) bootstrap weights and a well-mixed 64-bit hash.

Counter-based (splitmix64), never a stateful RNG: whichever block, worker or node computes a row,
its weights and hashes are the same, so bootstrap CIs, perturbations and samples do not depend on
how the rows were split.

    >>> poisson_weights(np.arange(3), replicates=2).shape
    (2, 3)
"""

from __future__ import annotations

import numpy as np

_POISSON1_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, i + 1)) for i in range(20)])


def poisson_weights(rows: np.ndarray, replicates: int, seed: int = 0) -> np.ndarray:
    """Poisson(1) weights, shape (replicates, len(rows)), a pure function of (seed, row, replicate).

    A counter-based hash (splitmix64) replaces a stateful RNG: any shard can
    compute any row's weights alone, and the result is the same however rows
    are split across batches or workers.
    """
    rows = np.asarray(rows, dtype=np.uint64)
    b = np.arange(replicates, dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        x = (rows[None, :] * np.uint64(0x9E3779B97F4A7C15)) ^ (b * np.uint64(0xBF58476D1CE4E5B9))
        x ^= np.uint64(seed) * np.uint64(0x94D049BB133111EB)
        x = _splitmix64(x)
    u = (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # uniform in [0, 1)
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.int64)


def hash64(values: np.ndarray, salt: int = 0) -> np.ndarray:
    """A well-mixed uint64 hash of each non-negative integer in ``values`` (splitmix64), salted.

    The same counter-based hash as :func:`poisson_weights`, for anything that must be a pure
    function of a row id (bootstrap buckets, per-row perturbation seeds).
    """
    x = np.asarray(values, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF) * np.uint64(
            0xD6E8FEB86659FD93
        )
        return _splitmix64(x)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
