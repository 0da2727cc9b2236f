"""Paired statistics of a robustness run: clean vs perturbed predictions of the same rows.

Built on cluster.stats.compare's paired machinery (A = clean, B = perturbed): per-metric
deltas with paired Poisson-bootstrap CIs and McNemar's exact test, plus the flip
rate (share of rows whose predicted class changes, with its bootstrap CI) and the
k most damaging examples, kept in a bounded, mergeable top-k (largest drop in the
probability of the true class; ties by row id, so the merge is order-free).

Example::

    >>> import numpy as np
    >>> y = np.array([0, 1, 1]); clean = np.array([[.9, .1], [.2, .8], [.4, .6]])
    >>> s = robustness_stats(y_true=y, probs_clean=clean, probs_perturbed=clean[:, ::-1], rows=np.arange(3),
    ...                      replicates=0)
    >>> r = robustness_summary(s, labels=["neg", "pos"])
    >>> r["flip_rate"], r["mcnemar_p"], [w["row"] for w in r["worst"]]
    (1.0, 0.25, [0, 1, 2])
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from cluster.errors import UserError
from cluster.stats import codec
from cluster.stats.compare import PairedCounts, differences, mcnemar_exact, merge, paired_counts
from cluster.stats.rowhash import poisson_weights
from cluster.stats.threshold_ci import percentile_ci

TOP = 20  # most damaging examples kept


@dataclass(order=True, frozen=True)
class Damage:
    """One row's damage; ordered by (damage, -row) so the top-k is a total order."""

    damage: float  # p_clean[true] - p_perturbed[true]
    neg_row: int
    label: int = field(compare=False)
    pred_clean: int = field(compare=False)
    pred_perturbed: int = field(compare=False)
    p_true_clean: float = field(compare=False)
    p_true_perturbed: float = field(compare=False)
    text: str | None = field(compare=False, default=None)
    perturbed_text: str | None = field(compare=False, default=None)


@dataclass
class RobustnessStats:
    """Mergeable (``a + b``) statistics of clean vs perturbed predictions."""

    paired: PairedCounts
    flips: int
    boot_flips: np.ndarray  # (B,) Poisson-weighted flips, same row weights as the paired counts
    worst: list[Damage]
    top: int = TOP

    def __add__(self, other: RobustnessStats) -> RobustnessStats:
        return RobustnessStats(
            merge(self.paired, other.paired),
            self.flips + other.flips,
            self.boot_flips + other.boot_flips,
            heapq.nlargest(self.top, self.worst + other.worst),
            self.top,
        )


def robustness_stats(
    *,
    y_true: np.ndarray,
    probs_clean: np.ndarray,
    probs_perturbed: np.ndarray,
    rows: np.ndarray,
    texts: list[str] | None = None,
    perturbed_texts: list[str] | None = None,
    replicates: int = 1000,
    seed: int = 0,
    top: int = TOP,
) -> RobustnessStats:
    """Statistics of one batch: y_true (n,), probs_* (n, k) in model label order, rows (n,) row ids."""
    y = np.asarray(y_true, np.int64)
    pc, pp = np.asarray(probs_clean, float), np.asarray(probs_perturbed, float)
    if pc.shape != pp.shape or pc.ndim != 2 or pc.shape[0] != len(y):
        raise UserError(f"clean {pc.shape} and perturbed {pp.shape} probabilities must be (rows={len(y)}, k)")
    rows = np.asarray(rows, np.int64)
    k = pc.shape[1]
    a, b = pc.argmax(1), pp.argmax(1)
    flipped = a != b
    w = poisson_weights(rows, replicates, seed) if replicates else np.zeros((0, len(y)), np.int64)
    return RobustnessStats(
        paired_counts(y, a, b, rows, k, replicates, seed),
        int(flipped.sum()),
        w @ flipped.astype(np.int64),
        _worst(y, pc, pp, rows, texts, perturbed_texts, top),
        top,
    )


def _worst(y, pc, pp, rows, texts, perturbed_texts, top: int) -> list[Damage]:
    idx = np.arange(len(y))
    p_clean, p_pert = pc[idx, y], pp[idx, y]
    damage = p_clean - p_pert
    keep = np.flatnonzero(damage > 0)
    keep = keep[np.lexsort((rows[keep], -damage[keep]))][:top]  # largest damage, then lowest row
    return [
        Damage(
            float(damage[i]),
            -int(rows[i]),
            int(y[i]),
            int(pc[i].argmax()),
            int(pp[i].argmax()),
            float(p_clean[i]),
            float(p_pert[i]),
            None if texts is None else texts[i],
            None if perturbed_texts is None else perturbed_texts[i],
        )
        for i in keep
    ]


def empty_robustness_stats(*, num_classes: int, replicates: int = 1000, top: int = TOP) -> RobustnessStats:
    z = np.zeros((0, num_classes))
    e = np.zeros(0, np.int64)
    return robustness_stats(
        y_true=e, probs_clean=z, probs_perturbed=z, rows=e, replicates=replicates, top=top
    )


def robustness_summary(stats: RobustnessStats, *, labels: list[str], confidence: float = 0.95) -> dict:
    """Flip rate (+ CI), B - A metric deltas with paired CIs, McNemar p and the worst examples."""
    p = stats.paired
    n = int(p.cm_a.sum())
    reps_n = p.boot_a.sum((1, 2))
    rate_reps = np.divide(stats.boot_flips, reps_n, out=np.full(len(reps_n), np.nan), where=reps_n > 0)
    return {
        "n": n,
        "flips": stats.flips,
        "flip_rate": stats.flips / n if n else None,
        "flip_rate_ci95": percentile_ci(rate_reps, confidence) if len(rate_reps) else None,
        "metrics": differences(p, confidence),  # a = clean, b = perturbed, diff = perturbed - clean
        "mcnemar": {"clean_right_perturbed_wrong": p.b, "clean_wrong_perturbed_right": p.c},
        "mcnemar_p": mcnemar_exact(p.b, p.c),
        "worst": [_example(d, labels) for d in sorted(stats.worst, reverse=True)],
    }


def _example(d: Damage, labels: list[str]) -> dict:
    return {
        "row": -d.neg_row,
        "label": labels[d.label],
        "pred_clean": labels[d.pred_clean],
        "pred_perturbed": labels[d.pred_perturbed],
        "p_true_clean": d.p_true_clean,
        "p_true_perturbed": d.p_true_perturbed,
        "damage": d.damage,
        "text": d.text,
        "perturbed_text": d.perturbed_text,
    }


codec.register(Damage, RobustnessStats)  # part files hold them (cluster/stats/codec.py)
