"""Weak-slice discovery: kinds of text on which the model scores below its overall score.

Candidate slices (sets of rows; they overlap):

    length=A-B words   word-count bins (LENGTH_BINS); a partition of the rows
    has_url, has_mention, has_hashtag, has_number, has_negation
    token=w            texts containing the word w: lower-cased words that are whole-word
                       entries of the WordPiece vocabulary, so their number is bounded by it
                       (30,522 entries for the base model)
    COLUMN=value       values of a given slice column; a partition of the rows

Statistics: a slice keeps only its confusion matrix (k x k counts). They merge
exactly (a union by name with summed counts) and, unlike a cluster.stats.metrics.Stats
per slice (B x k x k replicates each), thousands of token slices stay small.
The confusion matrix is also enough for a slice's bootstrap: restricted to one
slice, the Poisson row bootstrap weighs each confusion cell by a sum of
independent Poisson(1) row weights, which is Poisson(cell count), independently
across cells. So each slice's replicates are drawn from its own counts (seeded by
the slice name): exactly the row bootstrap's distribution, from a few numbers.

Selection (:func:`weak_slices`): among the slices with at least ``min_slice_size``
rows (the ``max_tokens`` most frequent token slices at most), those whose
Bonferroni-corrected interval (level 1 - alpha/m over the m slices tested) lies
wholly below the overall score, lowest score first. The corrected interval is
the estimate +- z(1 - alpha/2m) bootstrap SEs: percentile tails that far out
would need some 40 m / alpha replicates per slice (240,000 for 300 slices); the
reported ``ci95`` is the percentile interval. The best-worst gap of each
partition family (length bins, the slice column) gets a 95% CI: its slices are
disjoint, so their replicates are independent, as the row bootstrap's would be.

Example::

    >>> import numpy as np
    >>> s = slice_stats(texts=["not good", "great http://x.io"], y_true=np.array([0, 1]),
    ...                 pred=np.array([1, 1]), num_classes=2, vocabulary={"good", "great"})
    >>> {str(n): int(c.trace()) for n, c in zip(s.names, s.confusion)}
    {'*': 1, 'has_negation': 0, 'has_url': 1, 'length=1-5 words': 1, 'token=good': 0, 'token=great': 1}
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from cluster.errors import UserError
from cluster.stats import codec
from cluster.stats.metrics import scores_from_confusion, slice_metrics_allowed
from cluster.stats.threshold_ci import percentile_ci

ALL = "*"  # the name of the slice of all rows
REPLICATES = 2000  # bootstrap replicates per slice
LENGTH_BINS = (5, 10, 15, 20, 30)  # upper word counts of the bins; above the last: one more bin
PROPERTIES = {
    "has_url": re.compile(r"https?://|www\.", re.I),
    "has_mention": re.compile(r"(?<!\w)@\w"),
    "has_hashtag": re.compile(r"(?<!\w)#\w"),
    "has_number": re.compile(r"\d"),
    "has_negation": re.compile(
        r"\b(?:not|no|never|nothing|nobody|none|nor|neither|cannot|without|"
        r"dont|cant|wont|isnt|didnt|doesnt|wasnt|arent)\b|n't\b",
        re.I,
    ),
}
_WORDS = re.compile(r"[a-z0-9]+")


@dataclass
class SliceStats:
    """Confusion matrices of named slices; ``a + b`` is a union by name with summed counts."""

    names: np.ndarray  # (m,) str, sorted, unique
    confusion: np.ndarray  # (m, k, k) int64, rows = true class

    def __add__(self, other: SliceStats) -> SliceStats:
        names = np.concatenate([self.names, other.names])
        uniq, inv = np.unique(names, return_inverse=True)
        cm = np.zeros((len(uniq), *self.confusion.shape[1:]), np.int64)
        np.add.at(cm, inv.ravel(), np.concatenate([self.confusion, other.confusion]))
        return SliceStats(uniq, cm)

    def get(self, name: str) -> np.ndarray:
        i = np.searchsorted(self.names, name)
        if i == len(self.names) or self.names[i] != name:
            raise KeyError(name)
        return self.confusion[i]


def slice_stats(
    *,
    texts: list[str],
    y_true: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    slice_column: str | None = None,
    slice_values: list | None = None,
    vocabulary: Collection[str] | None = None,
) -> SliceStats:
    """Per-slice confusion matrices of one batch (class ids in model label order)."""
    y, p = np.asarray(y_true, np.int64), np.asarray(pred, np.int64)
    if not len(y) == len(p) == len(texts) or (slice_values is not None and len(slice_values) != len(y)):
        raise UserError("texts, y_true, pred (and slice values) must have one entry per row")
    vocab = wordpiece_words() if vocabulary is None else vocabulary
    rows, names = [], []
    for i, text in enumerate(texts):
        own = slice_names(text, vocab)
        if slice_values is not None:
            own.append(f"{slice_column or 'slice'}={slice_values[i]}")
        rows += [i] * len(own)
        names += own
    uniq, inv = np.unique(np.array(names + [ALL], dtype=object).astype(str), return_inverse=True)
    k = num_classes
    cm = np.zeros((len(uniq), k * k), np.int64)
    cell = y * k + p
    np.add.at(cm, (inv[:-1], cell[np.array(rows, np.int64)]), 1)
    cm[inv[-1]] = np.bincount(cell, minlength=k * k)
    return SliceStats(uniq, cm.reshape(-1, k, k))


def slice_names(text: str, vocabulary: Collection[str]) -> list[str]:
    """The candidate slices one text belongs to (all rows are also in ALL)."""
    words = len(text.split())
    out = [_length_bin(words)]
    out += [name for name, rx in PROPERTIES.items() if rx.search(text)]
    out += [f"token={w}" for w in sorted(set(_WORDS.findall(text.lower()))) if w in vocabulary]
    return out


def _length_bin(words: int) -> str:
    lo = 1
    for hi in LENGTH_BINS:
        if words <= hi:
            return f"length={lo}-{hi} words"
        lo = hi + 1
    return f"length={lo}+ words"


@functools.lru_cache(maxsize=1)
def wordpiece_words() -> frozenset[str]:
    """Whole-word entries of the base model's WordPiece vocabulary (no ## pieces, no [SPECIAL])."""
    from cluster.models.modeldir import base_model_dir

    vocab = (base_model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return frozenset(w for w in vocab if _WORDS.fullmatch(w))


# ------------------------------------------------------------------ finalize


def weak_slices(
    stats: SliceStats,
    *,
    labels: list[str],
    metric: str = "accuracy",
    min_slice_size: int = 50,
    max_tokens: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Per-slice scores with 95% CIs, the weak slices (corrected CIs below overall) and the gaps."""
    check_metric(metric)
    if min_slice_size < 1:
        raise UserError(f"--min-slice-size must be at least 1, got {min_slice_size}")
    sizes = stats.confusion.sum((1, 2))
    overall = float(scores_from_confusion(stats.get(ALL))[metric])
    tested = _candidates(stats.names, sizes, min_slice_size, max_tokens)
    m = max(1, len(tested))
    z = float(sps.norm.ppf(1 - alpha / (2 * m)))
    per = {}
    for i in tested:
        name = str(stats.names[i])
        value = float(scores_from_confusion(stats.confusion[i])[metric])
        reps = _replicates(stats.confusion[i], metric, REPLICATES, seed, name)
        half = z * float(reps.std(ddof=1))
        per[name] = {
            "n": int(sizes[i]),
            metric: value,
            "ci95": percentile_ci(reps, 0.95),
            "ci_corrected": [max(0.0, value - half), min(1.0, value + half)],
        }
    weak = [n for n, s in per.items() if s["ci_corrected"][1] < overall]
    weak.sort(key=lambda n: (per[n][metric], per[n]["ci_corrected"][1], n))
    return {
        "metric": metric,
        "overall": overall,
        "min_slice_size": min_slice_size,
        "tested": m,
        "correction": f"Bonferroni over {m} slices: each interval at level 1 - {alpha}/{m} (z = {z:.2f})",
        "slices": per,
        "weak": [{"slice": n, **per[n]} for n in weak],
        "gap": {fam: _gap(stats, per, fam, metric, seed) for fam in _families(per)},
    }


def check_metric(metric: str) -> None:
    allowed = slice_metrics_allowed()
    if metric not in allowed:
        raise UserError(f'slice metric "{metric}" is not one of {", ".join(allowed)}')


def _candidates(names: np.ndarray, sizes: np.ndarray, min_size: int, max_tokens: int) -> list[int]:
    """Indices of the slices tested: big enough, and only the most frequent token slices."""
    big = [i for i in range(len(names)) if sizes[i] >= min_size and names[i] != ALL]
    tokens = [i for i in big if str(names[i]).startswith("token=")]
    keep = set(sorted(tokens, key=lambda i: (-sizes[i], str(names[i])))[:max_tokens])
    return [i for i in big if i in keep or not str(names[i]).startswith("token=")]


def _replicates(cm: np.ndarray, metric: str, replicates: int, seed: int, name: str) -> np.ndarray:
    """(B,) metric of Poisson(count)-weighted confusion cells: the row bootstrap of one slice."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return scores_from_confusion(rng.poisson(cm, size=(replicates, *cm.shape)))[metric]


def _families(per: dict) -> list[str]:
    """Partition families among the tested slices: length bins, and each slice column."""
    fams = {n.split("=", 1)[0] for n in per if "=" in n and not n.startswith("token=")}
    return sorted(fams)


def _gap(stats: SliceStats, per: dict, family: str, metric: str, seed: int) -> dict | None:
    members = {n: s for n, s in per.items() if n.startswith(f"{family}=")}
    if len(members) < 2:
        return None
    best = max(members, key=lambda n: (members[n][metric], n))
    worst = min(members, key=lambda n: (members[n][metric], n))
    diff = _replicates(stats.get(best), metric, REPLICATES, seed, best) - _replicates(
        stats.get(worst), metric, REPLICATES, seed, worst
    )
    gap = members[best][metric] - members[worst][metric]
    return {"best": best, "worst": worst, "gap": gap, "ci95": percentile_ci(diff, 0.95)}


codec.register(SliceStats)  # part files hold them (cluster/stats/codec.py)
