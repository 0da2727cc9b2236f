"""Classification metrics from mergeable sufficient statistics.

Evaluation is sharded, so metrics are never computed from all rows at once.
Each batch becomes a :class:`Stats` (confusion counts, summed log-loss,
calibration-bin sums, and the same per Poisson-bootstrap replicate); stats add
up exactly, in any order and any sharding, and :func:`finalize` turns the sum
into scores. Definitions are scikit-learn's with ``zero_division=0`` and every
model class listed (so classes absent from data and predictions count as 0 in
macro averages), and the values equal scikit-learn's to 1e-9 (tested).

Example::

    >>> import numpy as np
    >>> m = compute_metrics(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]), ["neg", "pos"])
    >>> round(m["accuracy"], 4), round(m["f1_macro"], 4)
    (0.6667, 0.6667)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cluster.errors import UserError, did_you_mean
from cluster.stats import codec
from cluster.stats.exact import as_float, as_floats, exact_sum, exact_sums, exact_weighted_sums
from cluster.stats.rowhash import poisson_weights

ECE_BINS = 15  # equal-width confidence bins


# ------------------------------------------------------------------ the metric table


@dataclass(frozen=True)
class Family:
    """How a group of metrics is computed, and so what can be done with them.

    ``paired``: computable row by row from what two evaluations of the same rows share (the
    confusion cells of each row), so the paired comparison (cluster/stats/compare.py), a gate's
    ``--max-drop`` and per-slice scores cover them.
    """

    name: str
    computed: str  # how, in a phrase (docs and error messages)
    paired: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("counts", "from the confusion matrix (scores_from_confusion)", paired=True),
        Family("probability", "from each row's probability of its true class and its confidence"),
        Family("threshold", "from the order of the scores over all rows (cluster/stats/threshold.py)"),
        # Paired comparisons of translations: cluster/stats/translation_compare.py (over sentences).
        Family(
            "corpus", "from per-sentence statistics of generated text, summed (cluster/stats/translation.py)"
        ),
        Family(
            "pixels", "from each image's pixel confusion matrix (cluster/stats/segmentation.py)", paired=True
        ),
    )
}


@dataclass(frozen=True)
class MetricInfo:
    """One row of the metric table: how a metric is named, computed, ranked and reported.

    Everything that ranks, compares, gates, slices, reports or sweeps on a metric reads this
    table (leaderboard, compare, gates, slices, report, sweep ``mode``, the CLI), and the lists
    of paired, threshold and CI metrics are derived from it (:func:`metric_names`): a new
    metric is one row here (or one :func:`register` call from its own module) plus the code of
    its family that computes it.
    """

    name: str  # key in metrics.json and in the registry
    display: str  # human-readable name (reports)
    family: str  # a key of FAMILIES
    higher_is_better: bool = True
    has_ci: bool = False  # metrics.json's ci95 holds its bootstrap interval
    headline: bool = False  # shown in CLI summaries and reports
    bounds: tuple[float, float] = (0.0, 1.0)  # every value it can take (gate thresholds must lie in it)
    task: str = "classification"  # the task whose evaluations report it (cluster/models/modality.py)

    @property
    def paired(self) -> bool:
        return FAMILIES[self.family].paired


METRICS: dict[str, MetricInfo] = {}


def register(*infos: MetricInfo) -> None:
    """Add (or replace) rows of the metric table (a new family first goes into FAMILIES)."""
    for info in infos:
        if info.family not in FAMILIES:
            raise ValueError(f"metric {info.name}: unknown family {info.family!r}")
    METRICS.update({info.name: info for info in infos})


def _counts(name: str, display: str, **kw) -> MetricInfo:
    return MetricInfo(name, display, "counts", **kw)


def _corpus(name: str, display: str, **kw) -> MetricInfo:
    return MetricInfo(name, display, "corpus", has_ci=True, headline=True, task="translation", **kw)


register(
    _counts("accuracy", "Accuracy", has_ci=True, headline=True),
    _counts("f1_macro", "Macro F1", has_ci=True, headline=True),
    _counts("precision_macro", "Macro precision", has_ci=True, headline=True),
    _counts("recall_macro", "Macro recall", has_ci=True, headline=True),
    _counts("f1_weighted", "Weighted F1", has_ci=True, headline=True),
    _counts("f1_micro", "Micro F1"),
    _counts("precision_micro", "Micro precision"),
    _counts("recall_micro", "Micro recall"),
    _counts("precision_weighted", "Weighted precision"),
    _counts("recall_weighted", "Weighted recall"),
    MetricInfo(
        "log_loss", "Log-loss", "probability", higher_is_better=False, has_ci=True, headline=True,
        bounds=(0.0, math.inf),
    ),
    MetricInfo("ece", "ECE (15 bins)", "probability", higher_is_better=False, headline=True),
    MetricInfo("roc_auc_macro", "ROC-AUC (macro, one-vs-rest)", "threshold", has_ci=True, headline=True),
    MetricInfo("roc_auc_weighted", "ROC-AUC (weighted)", "threshold", has_ci=True),
    MetricInfo(
        "average_precision_macro", "Average precision (macro)", "threshold", has_ci=True, headline=True
    ),
    MetricInfo("average_precision_weighted", "Average precision (weighted)", "threshold", has_ci=True),
    MetricInfo("top_k_accuracy", "Top-2 accuracy", "threshold", has_ci=True),
    # Multiclass Brier (cluster/stats/threshold.py): the squared distance of two probability vectors.
    MetricInfo(
        "brier_score", "Brier score", "threshold", higher_is_better=False, has_ci=True, headline=True,
        bounds=(0.0, 2.0),
    ),
    # Translation (cluster/stats/translation.py): corpus scores on sacrebleu's 0-100 scale.
    _corpus("bleu", "BLEU", bounds=(0.0, 100.0)),
    _corpus("chrf", "chrF2", bounds=(0.0, 100.0)),
    _corpus("ter", "TER", higher_is_better=False, bounds=(0.0, math.inf)),  # edits can outnumber words
    # Semantic segmentation (cluster/stats/segmentation.py): from the pixel confusion matrix of each
    # image, which two evaluations of the same images share (paired over images).
    MetricInfo("miou", "Mean IoU", "pixels", has_ci=True, headline=True, task="segmentation"),
    MetricInfo("pixel_accuracy", "Pixel accuracy", "pixels", has_ci=True, headline=True, task="segmentation"),
    MetricInfo("mean_class_accuracy", "Mean class accuracy", "pixels", has_ci=True, task="segmentation"),
    MetricInfo("fw_iou", "Frequency-weighted IoU", "pixels", has_ci=True, task="segmentation"),
    MetricInfo("mean_dice", "Mean Dice", "pixels", has_ci=True, task="segmentation"),
)  # fmt: skip


def metric_info(name: str) -> MetricInfo:
    """The table row of ``name``, or a UserError naming the known metrics."""
    if name not in METRICS:
        raise UserError(
            f'unknown metric "{name}"{did_you_mean(name, METRICS)}; choose from {", ".join(METRICS)}'
        )
    return METRICS[name]


def metric_mode(name: str) -> str:
    """ "max" for a higher-is-better metric, else "min" (Ray Tune's ``mode``)."""
    return "max" if metric_info(name).higher_is_better else "min"


def metric_names(
    *,
    family: str | None = None,
    has_ci: bool | None = None,
    headline: bool | None = None,
    paired: bool | None = None,
    task: str | None = None,
) -> tuple[str, ...]:
    """Names of the table's metrics, in table order, filtered by the given attributes."""
    wanted = {"family": family, "has_ci": has_ci, "headline": headline, "paired": paired, "task": task}
    return tuple(
        m.name for m in METRICS.values() if all(v is None or getattr(m, k) == v for k, v in wanted.items())
    )


def paired_metrics(task: str | None = "classification") -> tuple[str, ...]:
    """What a paired comparison of two evaluations of ``task`` (None: any) gives a CI for (compare,
    gates' max-drop); each task's comparison is its own (cluster/stats/segmentation_compare.py)."""
    return metric_names(paired=True, has_ci=True, task=task)


def slice_metrics_allowed() -> tuple[str, ...]:
    """What per-slice scores can be ranked by: the paired headline metrics (of classification)."""
    return metric_names(paired=True, headline=True, task="classification")


@dataclass
class Stats:
    """Sufficient statistics of a set of rows (all arrays add elementwise)."""

    confusion: np.ndarray  # (k, k) int64, rows = true class, cols = predicted
    log_loss_sum: int  # sum over rows of -log(clip(p_true)), exact (cluster/stats/exact.py)
    bin_count: np.ndarray  # (ECE_BINS,) rows per confidence bin
    bin_conf: np.ndarray  # (ECE_BINS,) object: summed confidence (max probability), exact
    bin_correct: np.ndarray  # (ECE_BINS,) correct predictions
    boot_confusion: np.ndarray  # (B, k, k) Poisson-weighted confusion counts
    boot_log_loss: np.ndarray  # (B,) object: Poisson-weighted log-loss sums, exact
    slices: dict[str, Stats] = field(default_factory=dict)  # per value of a slice column

    def __add__(self, other: Stats) -> Stats:
        slices = dict(self.slices)
        for key, st in other.slices.items():
            slices[key] = slices[key] + st if key in slices else st
        return Stats(
            self.confusion + other.confusion,
            self.log_loss_sum + other.log_loss_sum,
            self.bin_count + other.bin_count,
            self.bin_conf + other.bin_conf,
            self.bin_correct + other.bin_correct,
            self.boot_confusion + other.boot_confusion,
            self.boot_log_loss + other.boot_log_loss,
            slices,
        )

    @property
    def n(self) -> int:
        return int(self.confusion.sum())


def batch_stats(
    y_true: np.ndarray,
    probs: np.ndarray,
    rows: np.ndarray | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    slices: np.ndarray | None = None,
) -> Stats:
    """Statistics of one batch.

    y_true: (n,) int class ids; probs: (n, k) probabilities in model label order;
    rows: (n,) the rows' 0-based input positions, which seed their bootstrap
    weights so the CIs do not depend on how the data was sharded.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = probs.shape
    pred = probs.argmax(1)
    conf = probs[np.arange(n), pred]
    # scikit-learn's log_loss clips to [eps, 1 - eps] of the probabilities' dtype.
    eps = np.finfo(np.float64).eps
    row_loss = -np.log(np.clip(probs[np.arange(n), y_true], eps, 1 - eps))
    bins = np.clip(np.ceil(conf * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)  # (lo, hi]
    cell = y_true * k + pred  # flat confusion-matrix cell of each row
    stats = Stats(
        confusion=np.bincount(cell, minlength=k * k).reshape(k, k),
        log_loss_sum=exact_sum(row_loss),
        bin_count=np.bincount(bins, minlength=ECE_BINS).astype(np.int64),
        bin_conf=exact_sums(conf, bins, ECE_BINS),
        bin_correct=np.bincount(bins, weights=(pred == y_true), minlength=ECE_BINS),
        boot_confusion=np.zeros((bootstrap, k, k), dtype=np.int64),
        boot_log_loss=np.zeros(bootstrap, dtype=object),
    )
    if bootstrap:
        w = poisson_weights(np.arange(n) if rows is None else np.asarray(rows), bootstrap, seed)
        for c in np.unique(cell):  # (B,) weight of each confusion cell
            stats.boot_confusion[:, c // k, c % k] = w[:, cell == c].sum(1)
        stats.boot_log_loss = exact_weighted_sums(w, row_loss)
    if slices is not None:  # each slice with its own replicates, under the same row weights
        slices = np.asarray(slices, dtype=object)
        rows = np.arange(n) if rows is None else np.asarray(rows)
        for key in dict.fromkeys(slices.tolist()):
            m = slices == key
            stats.slices[str(key)] = batch_stats(y_true[m], probs[m], rows[m], bootstrap, seed)
    return stats


def empty_stats(k: int, bootstrap: int = 0) -> Stats:
    return batch_stats(np.zeros(0, np.int64), np.zeros((0, k)), bootstrap=bootstrap)


# ------------------------------------------------------------------ Poisson bootstrap weights


# ------------------------------------------------------------------ scores


def scores_from_confusion(cm: np.ndarray) -> dict[str, float | np.ndarray]:
    """Accuracy and precision/recall/F1 (per class, macro, micro, weighted) from counts.

    Works on (k, k) or batched (..., k, k) matrices (bootstrap replicates).
    zero_division=0: a ratio with a zero denominator is 0, as in scikit-learn.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(-1)  # true count per class
    predicted = cm.sum(-2)
    total = support.sum(-1)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    f1 = _div(2 * tp, support + predicted)  # = 2PR/(P+R), 0 when tp = 0
    micro = _div(tp.sum(-1), total)  # single-label: micro P = R = F1 = accuracy
    weights = _div(support, total[..., None])
    return {
        "accuracy": micro,
        "precision_macro": precision.mean(-1),
        "recall_macro": recall.mean(-1),
        "f1_macro": f1.mean(-1),
        "precision_micro": micro,
        "recall_micro": micro,
        "f1_micro": micro,
        "precision_weighted": (precision * weights).sum(-1),
        "recall_weighted": (recall * weights).sum(-1),
        "f1_weighted": (f1 * weights).sum(-1),
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
        "support": support,
    }


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def finalize(stats: Stats, labels: list[str], confidence: float = 0.95) -> dict:
    """The metrics.json scores (without run metadata) from merged statistics."""
    s = scores_from_confusion(stats.confusion)
    out = {"n": stats.n, "labels": list(labels)}
    out.update({key: float(s[key]) for key in s if not key.startswith("per_class") and key != "support"})
    out["per_class"] = {
        lab: {
            "precision": float(s["per_class_precision"][i]),
            "recall": float(s["per_class_recall"][i]),
            "f1": float(s["per_class_f1"][i]),
            "support": int(s["support"][i]),
        }
        for i, lab in enumerate(labels)
    }
    out["confusion_matrix"] = stats.confusion.astype(int).tolist()
    out["log_loss"] = as_float(stats.log_loss_sum) / stats.n if stats.n else float("nan")
    out["ece"] = expected_calibration_error(stats)
    out["calibration"] = {
        "bin_count": stats.bin_count.astype(int).tolist(),
        "bin_confidence": _div(as_floats(stats.bin_conf), stats.bin_count).tolist(),
        "bin_accuracy": _div(stats.bin_correct, stats.bin_count).tolist(),
    }
    out["ci95"] = bootstrap_ci(stats, confidence) if len(stats.boot_log_loss) else {}
    return out


def expected_calibration_error(stats: Stats) -> float:
    """ECE over equal-width bins: sum_b (n_b / n) * |accuracy_b - confidence_b|."""
    n = stats.bin_count.sum()
    return float(np.abs(stats.bin_correct - as_floats(stats.bin_conf)).sum() / n) if n else float("nan")


def bootstrap_ci(stats: Stats, confidence: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of CI_METRICS over the Poisson bootstrap replicates."""
    reps = scores_from_confusion(stats.boot_confusion)
    reps["log_loss"] = _div(as_floats(stats.boot_log_loss), stats.boot_confusion.sum((-2, -1)))
    alpha = (1 - confidence) / 2
    return {
        m: [float(np.quantile(reps[m], alpha)), float(np.quantile(reps[m], 1 - alpha))]
        for m in metric_names(has_ci=True)
        if m in reps  # a metric from another module reports its own interval
    }


GAP_METRICS = ("accuracy", "f1_macro")  # the best-worst gaps reported beside per-slice scores


def slice_metrics(stats: Stats, labels: list[str], confidence: float = 0.95) -> dict:
    """Per-slice scores with their ``ci95``, and the best-worst gap on each headline metric with a CI.

    The slices of a column are disjoint, so the replicates of two slices (same seed, different
    rows) are independent draws: replicate-wise differences bootstrap the gap.
    """
    per = {key: finalize(st, labels, confidence) for key, st in sorted(stats.slices.items())}
    for m in per.values():
        m.pop("calibration")
    gaps = {}
    for metric in GAP_METRICS:
        vals = {k: v[metric] for k, v in per.items()}
        if vals:
            best, worst = max(vals, key=vals.get), min(vals, key=vals.get)
            gaps[metric] = {"best": best, "worst": worst, "gap": vals[best] - vals[worst]}
            gaps[metric]["ci95"] = _gap_ci(stats.slices[best], stats.slices[worst], metric, confidence)
    return {"slices": per, "gap": gaps}


def _gap_ci(best: Stats, worst: Stats, metric: str, confidence: float) -> list[float] | None:
    if not len(best.boot_confusion) or best is worst:
        return None
    diff = (
        scores_from_confusion(best.boot_confusion)[metric]
        - scores_from_confusion(worst.boot_confusion)[metric]
    )
    alpha = (1 - confidence) / 2
    return [float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))]


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], bootstrap: int = 0, seed: int = 0
) -> dict:
    """All metrics of one in-memory set of rows (e.g. a validation split)."""
    return finalize(batch_stats(y_true, probs, bootstrap=bootstrap, seed=seed), labels)


codec.register(Stats)  # part files hold them (cluster/stats/codec.py)
