"""Exact sums of float64 values, as Python integers in units of 2**-SHIFT: they add up exactly in any
order, so merged statistics do not depend on how rows were split into blocks or part files, or on
the order the driver reads them back in (float additions would differ in their last bits).

    >>> import numpy as np
    >>> a = exact_sum(np.array([0.1, 0.2]))
    >>> as_float(a + exact_sum(np.array([0.3]))) == 0.6  # exactly 0.1 + 0.2 + 0.3, then rounded once
    True
"""

from __future__ import annotations

import numpy as np

SHIFT = 1130  # >= 1074 + 53: every mantissa bit of a subnormal float64 is an integer multiple of 2**-SHIFT
HALF = 26  # mantissas are summed in halves of 27 and 26 bits: int64 / float64 sums stay exact


def _parts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mantissa < 2**53 as int64, exponent) of non-negative float64 values: v = m * 2**(e - 53)."""
    mant, exp = np.frexp(np.asarray(values, np.float64))
    return (mant * 2.0**53).astype(np.int64), exp.astype(np.int64)


def exact_sums(values: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    """(size,) object array: the exact sum of the non-negative ``values`` of each group (0..size-1).

    Mantissas are summed per (group, exponent) in two halves whose float64 bincount sums stay
    below 2**53 for up to 2**26 values a call.
    """
    values = np.asarray(values, np.float64)
    if len(values) >= 1 << 26:
        raise ValueError("exact_sums: at most 2**26 values per call")
    out = np.zeros(size, dtype=object)  # Python int 0s
    if not len(values):
        return out
    m, exp = _parts(values)
    combo = np.asarray(groups, np.int64) * 4096 + (exp + 2048)
    uniq, inv = np.unique(combo, return_inverse=True)
    hi = np.bincount(inv, weights=m >> HALF)
    lo = np.bincount(inv, weights=m & ((1 << HALF) - 1))
    for u, h, lw in zip(uniq.tolist(), hi.tolist(), lo.tolist(), strict=True):
        group, e = divmod(u, 4096)
        out[group] += ((int(h) << HALF) + int(lw)) << (e - 2048 - 53 + SHIFT)
    return out


def exact_sum(values: np.ndarray) -> int:
    """The exact sum of non-negative ``values``."""
    return int(exact_sums(values, np.zeros(len(values), np.int64), 1)[0])


def exact_weighted_sums(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(B,) object array: ``weights @ values`` exactly, for non-negative integer weights (B, n)
    (Poisson bootstrap weights, whose row sums stay below 2**25) and non-negative float64 values (n,).

    The mantissa halves are scattered into one column per exponent, so two float64 matrix
    products give every (replicate, exponent) sum exactly (each below 2**53).
    """
    weights = np.asarray(weights, np.float64)
    out = np.zeros(weights.shape[0], dtype=object)
    if not weights.size or not len(values):
        return out
    m, exp = _parts(values)
    uniq, col = np.unique(exp, return_inverse=True)
    hi, lo = np.zeros((len(m), len(uniq))), np.zeros((len(m), len(uniq)))
    hi[np.arange(len(m)), col], lo[np.arange(len(m)), col] = m >> HALF, m & ((1 << HALF) - 1)
    hi, lo = weights @ hi, weights @ lo  # (B, exponents), exact
    for j, e in enumerate(uniq.tolist()):
        h, lw = hi[:, j].astype(np.int64).astype(object), lo[:, j].astype(np.int64).astype(object)
        out += ((h << HALF) + lw) << (e - 53 + SHIFT)
    return out


def as_float(total: int) -> float:
    """An exact sum as the nearest float64 (Python's int division rounds correctly)."""
    return int(total) / (1 << SHIFT)


def as_floats(totals: np.ndarray) -> np.ndarray:
    return np.array([as_float(t) for t in np.asarray(totals, dtype=object).ravel()], np.float64).reshape(
        np.shape(totals)
    )
