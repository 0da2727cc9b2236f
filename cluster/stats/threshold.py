"""Threshold metrics from mergeable statistics: ROC-AUC, average precision, top-k accuracy, Brier.

AUC and AP need the order of the scores, not a sum. Per class we keep *cells*:
each distinct score value (key) with how many rows of that class (``pos``) and
of the other classes (``neg``) scored exactly that, split by a row-hash bucket
for the bootstrap. Merging is the union of cells with summed counts: exact,
commutative and associative, so every number below is bitwise the same however
the rows were sharded and in whatever order the shards are added. Definitions
are scikit-learn's (``roc_auc_score(multi_class="ovr")``, ``average_precision_score``
on the one-hot labels, ``top_k_accuracy_score``, ``brier_score_loss``), equal to
1e-9 (tested), with these choices where scikit-learn returns nan:

- ROC-AUC of a class with no positive or no negative rows is None; the macro and
  weighted averages run over the classes where it is defined (scikit-learn 1.9
  returns nan for the whole average). AP of a class with no positives is 0, as
  in scikit-learn (it is included in the macro average).
- top-k accuracy uses k = 2 and exists only with 3+ classes (None otherwise).
- Brier: mean over rows of sum over classes (p - y)^2, halved for 2 classes
  (scikit-learn 1.9's ``scale_by_half="auto"``).

Size: ``predict_proba`` computes the softmax in float32, so every probability is
exactly a float32 (tested); keys are stored as float32 when that is lossless
(else float64). A cell costs 21 bytes (4 key + 1 bucket + 2 x 8 counts) and a
class holds at most min(rows, distinct values x buckets) cells; see docs/benchmarks.md
for the measured sizes. Past ``max_cells`` cells in a class, keys are coarsened
(:mod:`cluster.stats.threshold_cells`): the result is still independent of sharding,
``exact`` turns False and ``roc_auc_max_error`` bounds the AUC error.

Example::

    >>> import numpy as np
    >>> y = np.array([0, 1, 2, 2])
    >>> p = np.array([[.5, .1, .4], [.3, .6, .1], [.2, .2, .6], [.6, .3, .1]])
    >>> m = compute_threshold_metrics(y_true=y, probs=p, labels=["a", "b", "c"], bootstrap=0)
    >>> round(m["roc_auc_macro"], 4), m["top_k"], m["top_k_accuracy"], round(m["brier_score"], 4)
    (0.7639, 2, 0.75, 0.545)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cluster.errors import UserError
from cluster.stats import codec
from cluster.stats.exact import SHIFT, exact_sums
from cluster.stats.threshold_cells import (
    BUCKETS,
    Cells,
    by_key,
    make_cells,
    merge_cells,
    ranking_from_counts,
    row_buckets,
    to_float,
)
from cluster.stats.threshold_ci import bootstrap_ci

MAX_CELLS = 1 << 19  # per class: ~11 MB at 21 bytes a cell; exact up to ~500k rows of distinct scores
TOP_K = 2


@dataclass
class ThresholdStats:
    """Mergeable statistics of the threshold metrics (``a + b`` is exact and order-free)."""

    classes: list[Cells]  # one per class, in model label order
    n: np.ndarray  # (BUCKETS,) int64 rows per bootstrap bucket
    top_k_hits: np.ndarray  # (BUCKETS,) int64 rows whose class is in the top k (3+ classes)
    brier: np.ndarray  # (BUCKETS,) object: exact sums of per-row squared errors (integers, see exact_sums)
    max_cells: int = MAX_CELLS

    def __add__(self, other: ThresholdStats) -> ThresholdStats:
        if len(self.classes) != len(other.classes):
            raise ValueError(f"cannot add statistics of {len(self.classes)} and {len(other.classes)} classes")
        return ThresholdStats(
            [merge_cells(a, b, self.max_cells) for a, b in zip(self.classes, other.classes, strict=True)],
            self.n + other.n,
            self.top_k_hits + other.top_k_hits,
            self.brier + other.brier,
            self.max_cells,
        )

    @property
    def num_rows(self) -> int:
        return int(self.n.sum())


def threshold_stats(
    *, y_true: np.ndarray, probs: np.ndarray, rows: np.ndarray | None = None, max_cells: int = MAX_CELLS
) -> ThresholdStats:
    """Statistics of one batch: y_true (n,) class ids, probs (n, k), rows (n,) input positions.

    ``rows`` seed the bootstrap buckets, so CIs do not depend on the sharding (default 0..n-1).
    """
    y, p = _check(y_true, probs)
    n, k = p.shape
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.shape != (n,):
        raise UserError(f"rows must have one entry per row ({n}), got shape {rows.shape}")
    bucket = row_buckets(rows)
    hits = _top_k_hits(y, p, TOP_K) if k >= 3 else np.zeros(n, bool)
    sq_err = ((p - np.eye(k)[y]) ** 2).sum(1)  # (n,) per-row Brier term, unscaled
    return ThresholdStats(
        [make_cells(p[:, c], bucket, y == c, max_cells) for c in range(k)],
        np.bincount(bucket, minlength=BUCKETS).astype(np.int64),
        np.bincount(bucket[hits], minlength=BUCKETS).astype(np.int64),
        exact_sums(sq_err, bucket, BUCKETS),
        max_cells,
    )


def empty_threshold_stats(*, num_classes: int, max_cells: int = MAX_CELLS) -> ThresholdStats:
    return threshold_stats(
        y_true=np.zeros(0, np.int64), probs=np.zeros((0, num_classes)), max_cells=max_cells
    )


def _check(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if p.ndim != 2 or p.shape[1] < 2:
        raise UserError(f"probs must have shape (rows, classes >= 2), got {p.shape}")
    if y.shape != (p.shape[0],):
        raise UserError(f"y_true must have one class id per row ({p.shape[0]}), got shape {y.shape}")
    if not np.all((p >= 0) & (p <= 1)):  # also False for nan
        raise UserError("probs must be probabilities in [0, 1] (no nan)")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise UserError(f"y_true holds class ids outside 0..{p.shape[1] - 1}")
    return y.astype(np.int64), p + 0.0  # + 0.0 turns -0.0 into 0.0


def _top_k_hits(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's tie rule: a stable ascending sort reversed, so among equal scores the
    higher class index ranks first. The true class is a hit when fewer than k rank above it."""
    own = p[np.arange(len(y)), y][:, None]
    above = (p > own) | ((p == own) & (np.arange(p.shape[1])[None, :] > y[:, None]))
    return above.sum(1) < k


# ------------------------------------------------------------------ scores from per-key counts


def roc_curve(cells: Cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of one class, equal to sklearn's ``roc_curve(drop_intermediate=False)``."""
    keys, pos, neg = by_key(cells)
    tps = np.concatenate([[0], np.cumsum(pos[::-1])]).astype(float)
    fps = np.concatenate([[0], np.cumsum(neg[::-1])]).astype(float)
    thresholds = np.concatenate([[np.inf], to_float(keys)[::-1]])
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def pr_curve(cells: Cells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) of one class, equal to sklearn's ``precision_recall_curve``."""
    keys, pos, neg = by_key(cells)
    tps, fps = np.cumsum(pos[::-1]).astype(float), np.cumsum(neg[::-1]).astype(float)
    precision = np.divide(tps, tps + fps, out=np.zeros(tps.shape), where=tps + fps > 0)
    recall = tps / tps[-1] if len(tps) and tps[-1] > 0 else np.ones(tps.shape)
    return np.append(precision[::-1], 1.0), np.append(recall[::-1], 0.0), to_float(keys)


# ------------------------------------------------------------------ finalize


def threshold_metrics(
    stats: ThresholdStats,
    *,
    labels: list[str],
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    curve_points: int = 101,
) -> dict:
    """The threshold metrics (a metrics.json section) from merged statistics.

    ``bootstrap`` replicates of a cluster Poisson bootstrap give percentile CIs
    (see :mod:`cluster.stats.threshold_ci`); 0 turns them off.
    ``curve_points`` caps the points kept per plotted curve.
    """
    if len(labels) != len(stats.classes):
        raise UserError(f"{len(labels)} labels for statistics of {len(stats.classes)} classes")
    point = point_scores(stats)
    out = {key: _num(v) for key, v in point.items() if key != "per_class"}
    out["top_k"] = TOP_K if len(labels) >= 3 else None
    out["per_class"] = {
        lab: {k: _num(v) for k, v in point["per_class"][i].items()} for i, lab in enumerate(labels)
    }
    out["exact"] = all(c.level == 0 for c in stats.classes)
    out["cells"] = int(sum(len(c.key) for c in stats.classes))
    if not out["exact"]:
        for lab, cells in zip(labels, stats.classes, strict=True):
            out["per_class"][lab]["roc_auc_max_error"] = _num(_auc_tie_bound(cells))
    out["ci95"] = {}
    if bootstrap:
        out["ci95"] = bootstrap_ci(stats, point, bootstrap, seed, confidence)
        for lab, ci in zip(labels, out["ci95"].pop("per_class"), strict=True):
            out["per_class"][lab].update(
                roc_auc_ci95=ci["roc_auc"], average_precision_ci95=ci["average_precision"]
            )
    out["curves"] = {lab: _curves(c, curve_points) for lab, c in zip(labels, stats.classes, strict=True)}
    return out


def point_scores(stats: ThresholdStats) -> dict:
    """Headline values (floats, nan where undefined) and per-class values."""
    per, support = [], []
    for cells in stats.classes:
        _, pos, neg = by_key(cells)
        auc, ap = ranking_from_counts(pos[::-1].astype(float), neg[::-1].astype(float))
        per.append({"roc_auc": float(auc), "average_precision": float(ap)})
        per[-1].update(positives=int(pos.sum()), negatives=int(neg.sum()))
        support.append(pos.sum())
    auc = np.array([c["roc_auc"] for c in per])
    ap = np.array([c["average_precision"] for c in per])
    n = stats.num_rows
    scale = 0.5 if len(per) < 3 else 1.0
    return {
        "roc_auc_macro": _mean(auc, np.ones(len(per))),
        "roc_auc_weighted": _mean(auc, np.array(support)),
        "average_precision_macro": _mean(ap, np.ones(len(per))),
        "average_precision_weighted": _mean(ap, np.array(support)),
        "top_k_accuracy": int(stats.top_k_hits.sum()) / n if n and len(per) >= 3 else float("nan"),
        # exact integer sum / integer: one correctly rounded division
        "brier_score": scale * (sum(stats.brier) / (n << SHIFT)) if n else float("nan"),
        "per_class": per,
    }


def _mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean over the entries that are defined (not nan); nan if none is or weights sum to 0."""
    ok = ~np.isnan(values)
    w = weights[ok].astype(float)
    return float((values[ok] * w).sum() / w.sum()) if ok.any() and w.sum() > 0 else float("nan")


def _auc_tie_bound(cells: Cells) -> float:
    """Largest possible AUC error of coarsened keys: pairs sharing a key count 1/2 but could be 0 or 1."""
    _, pos, neg = by_key(cells)
    den = float(pos.sum()) * float(neg.sum())
    return 0.5 * float((pos.astype(float) * neg).sum()) / den if den else float("nan")


def _curves(cells: Cells, points: int) -> dict:
    fpr, tpr, _ = roc_curve(cells)
    precision, recall, _ = pr_curve(cells)
    roc, pr = _thin(len(fpr), points), _thin(len(recall), points)
    return {
        "roc": {"fpr": _list(fpr[roc]), "tpr": _list(tpr[roc])},
        "pr": {"recall": _list(recall[pr]), "precision": _list(precision[pr])},
    }


def _thin(length: int, points: int) -> np.ndarray:
    """At most ``points`` indices spread evenly along a curve, both ends kept."""
    if length <= points:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, max(points, 2)).round().astype(int))


def _num(v) -> float | int | None:
    """JSON-safe: nan -> None (metrics.json must stay valid JSON)."""
    if isinstance(v, (int, np.integer)):
        return int(v)
    return None if v is None or np.isnan(v) else float(v)


def _list(a: np.ndarray) -> list[float | None]:
    return [None if np.isnan(x) else float(x) for x in a]


def compute_threshold_metrics(
    *, y_true: np.ndarray, probs: np.ndarray, labels: list[str], bootstrap: int = 1000, seed: int = 0
) -> dict:
    """All threshold metrics of one in-memory set of rows."""
    stats = threshold_stats(y_true=y_true, probs=probs)
    return threshold_metrics(stats, labels=labels, bootstrap=bootstrap, seed=seed)


codec.register(ThresholdStats)  # part files hold them (cluster/stats/codec.py)
