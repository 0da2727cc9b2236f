"""Is model B really better than model A on this dataset? Paired statistics of two evaluations.

Both runs must be evaluations of the same dataset (same fingerprint), so their
predictions line up row by row. We stream both runs' predictions in aligned
batches (any source with ``num_rows`` and ``batches(columns, rows)``, e.g.
cluster/registry/predictions.py) and accumulate, per Poisson-bootstrap replicate, the two
confusion matrices under the *same* row weights (a paired bootstrap), plus McNemar's
discordant counts. Nothing that grows with the dataset is kept.

Also here: where two runs disagree (:func:`disagreements`), their per-class and
per-slice differences read off their metrics.json (:func:`per_class_deltas`,
:func:`slice_deltas`), and a leaderboard's test of a run against the leader from the
two runs' bootstrap intervals alone (:func:`versus_leader`).

    b = rows A got right and B got wrong,  c = rows A got wrong and B got right
    McNemar's exact test: two-sided binomial test of b vs c with p = 1/2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from cluster.errors import UserError
from cluster.stats import codec
from cluster.stats.metrics import paired_metrics, scores_from_confusion
from cluster.stats.rowhash import poisson_weights


class PredictionSource(Protocol):
    """A run's predictions in row order (cluster/registry/predictions.py ``Predictions``)."""

    num_rows: int

    def batches(self, columns: Sequence[str], rows: int) -> Iterator[pa.RecordBatch]: ...


@dataclass
class PairedCounts:
    """Confusion matrices of A and B, per replicate, and McNemar's discordant counts."""

    cm_a: np.ndarray  # (k, k)
    cm_b: np.ndarray
    boot_a: np.ndarray  # (B, k, k) under the same Poisson row weights as boot_b
    boot_b: np.ndarray
    b: int = 0  # A right, B wrong
    c: int = 0  # A wrong, B right


codec.register(PairedCounts)  # robustness part files hold them (cluster/stats/codec.py)


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
    source_a: PredictionSource,
    source_b: PredictionSource,
    labels: list[str],
    replicates: int = 1000,
    seed: int = 0,
    batch_rows: int = 65536,
) -> tuple[PairedCounts, dict]:
    """Stream two runs' aligned predictions; returns counts and per-metric differences."""
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    total = PairedCounts(
        np.zeros((k, k), np.int64),
        np.zeros((k, k), np.int64),
        np.zeros((replicates, k, k), np.int64),
        np.zeros((replicates, k, k), np.int64),
    )
    for ta, tb in _aligned(source_a, source_b, ["row", "label", "pred"], batch_rows):
        y = _ids(ta.column("label").to_pylist(), index)
        part = paired_counts(
            y,
            _ids(ta.column("pred").to_pylist(), index),
            _ids(tb.column("pred").to_pylist(), index),
            ta.column("row").to_numpy(),
            k,
            replicates,
            seed,
        )
        total = merge(total, part)
    return total, differences(total)


def _aligned(a: PredictionSource, b: PredictionSource, columns: list[str], rows: int):
    """Both sources' batches side by side, checked to hold the same rows."""
    if a.num_rows != b.num_rows:
        raise UserError(
            f"the runs predicted different numbers of rows ({a.num_rows} vs "
            f"{b.num_rows}); compare evaluations of the same full dataset"
        )
    for ta, tb in zip(a.batches(columns, rows), b.batches(columns, rows), strict=True):
        if not np.array_equal(ta.column("row").to_numpy(), tb.column("row").to_numpy()):
            raise UserError("the runs' predictions are not aligned row by row; were they on the same data?")
        yield ta, tb


def disagreements(
    source_a: PredictionSource, source_b: PredictionSource, labels: list[str], examples: int = 20
) -> dict:
    """Where A and B predict differently: ``matrix`` (rows: A's class, columns: B's), how many rows
    each got right alone (``a_only``, ``b_only``), both, neither; the first ``examples`` rows
    (in row order) where they differ, with the true label, both predictions and scores."""
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    matrix = np.zeros((k, k), np.int64)
    counts = dict.fromkeys(("both_right", "a_only", "b_only", "both_wrong"), 0)
    shown: list[dict] = []
    for ta, tb in _aligned(source_a, source_b, ["row", "label", "pred", "score"], 65536):
        y = _ids(ta.column("label").to_pylist(), index)
        pa_, pb = _ids(ta.column("pred").to_pylist(), index), _ids(tb.column("pred").to_pylist(), index)
        np.add.at(matrix, (pa_, pb), 1)
        ra, rb = pa_ == y, pb == y
        for key, hit in (("both_right", ra & rb), ("a_only", ra & ~rb), ("b_only", ~ra & rb)):
            counts[key] += int(hit.sum())
        counts["both_wrong"] += int((~ra & ~rb).sum())
        for i in np.flatnonzero(pa_ != pb)[: max(0, examples - len(shown))]:
            shown.append(
                {
                    "row": int(ta.column("row")[i].as_py()),
                    "label": labels[y[i]],
                    "pred_a": labels[pa_[i]],
                    "pred_b": labels[pb[i]],
                    "score_a": float(ta.column("score")[i].as_py()),
                    "score_b": float(tb.column("score")[i].as_py()),
                }
            )
    disagree = int(matrix.sum() - np.trace(matrix))
    return {"matrix": matrix.tolist(), "disagree": disagree, **counts, "examples": shown}


def per_class_deltas(ma: dict, mb: dict) -> list[dict]:
    """Per class of A's labels: precision, recall and F1 of A and B and B - A (metrics.json dicts)."""
    out = []
    for lab in ma["labels"]:
        a, b = ma["per_class"].get(lab, {}), mb["per_class"].get(lab, {})
        row = {"label": lab, "support": a.get("support")}
        for m in ("precision", "recall", "f1"):
            row[m] = {"a": a.get(m), "b": b.get(m), "diff": _diff(a.get(m), b.get(m))}
        out.append(row)
    return out


def slice_deltas(ma: dict, mb: dict, metrics: Sequence[str] = ("accuracy", "f1_macro")) -> list[dict]:
    """Slices both runs scored (slice-column values, and weak-slice candidates), with each run's
    score and interval and B - A. The slices' rows are the same in both runs, but only the point
    difference is given: a paired interval would need each row's slice, which predictions do not keep."""
    out = []
    sa, sb = ma.get("slices", {}).get("slices", {}), mb.get("slices", {}).get("slices", {})
    for name in [n for n in sa if n in sb]:
        for m in metrics:
            a, b = sa[name], sb[name]
            out.append(
                _slice_row(name, m, a.get(m), b.get(m), a["ci95"].get(m), b["ci95"].get(m), a.get("n"))
            )
    aa, ab = ma.get("auto_slices", {}), mb.get("auto_slices", {})
    if aa and ab and aa.get("metric") == ab.get("metric"):
        m = aa["metric"]
        sa, sb = aa.get("slices", {}), ab.get("slices", {})
        for name in [n for n in sa if n in sb]:
            a, b = sa[name], sb[name]
            out.append(_slice_row(name, m, a.get(m), b.get(m), a.get("ci95"), b.get("ci95"), a.get("n")))
    return out


def _slice_row(name, metric, a, b, ci_a, ci_b, n) -> dict:
    return {
        "slice": name,
        "metric": metric,
        "n": n,
        "a": a,
        "b": b,
        "diff": _diff(a, b),
        "ci_a": ci_a,
        "ci_b": ci_b,
    }


def _diff(a, b) -> float | None:
    return None if a is None or b is None else b - a


def versus_leader(
    leader: float, leader_ci: Sequence[float] | None, value: float, ci: Sequence[float] | None
) -> dict | None:
    """How far a run is from the leader, and whether that is more than chance: a two-sided z-test of
    the difference with each run's standard error read off its 95% percentile bootstrap interval
    (width / (2 x 1.96)). The two runs are taken as independent, which is conservative for runs
    on the same rows (their errors correlate, which a paired test uses: `evalctl compare`).
    None without both intervals."""
    if not leader_ci or not ci:
        return None
    se = math.hypot((leader_ci[1] - leader_ci[0]) / (2 * Z95), (ci[1] - ci[0]) / (2 * Z95))
    gap = leader - value
    if se == 0:
        return {"gap": gap, "z": None, "p_value": 1.0 if gap == 0 else 0.0}
    z = gap / se
    return {"gap": gap, "z": z, "p_value": math.erfc(abs(z) / math.sqrt(2))}


Z95 = 1.959963984540054  # the normal quantile of 0.975


def _ids(names: list[str], index: dict[str, int]) -> np.ndarray:
    return np.array([index[n] for n in names], dtype=np.int64)
