"""Translation metrics from mergeable sufficient statistics: corpus BLEU, chrF and TER.

A corpus score is a function of per-sentence statistics *summed* over the corpus
(sacrebleu's own definition): for BLEU the hypothesis and closest-reference lengths and
the n-gram matches and totals per order, for chrF the character n-gram hypothesis,
reference and match counts per order, for TER the edits and reference lengths. So a
shard's statistics are the sum over its sentences, shards add up in any order, and the
merged sum gives the corpus score exactly, however the data was sharded.

The statistics are extracted by sacrebleu itself (its tokenizers, its
``_extract_corpus_statistics``) and turned into scores by its own
``_compute_score_from_stats``, so the definitions cannot drift from the reference
implementation; the scores equal ``sacrebleu.corpus_bleu/chrf/ter`` (tested to 1e-9).
Scores are on sacrebleu's 0-100 scale.

Bootstrap CIs weigh each sentence by the project's Poisson(1) weights hashed from
(seed, row) (cluster/stats/metrics.py ``poisson_weights``): a shard adds its weighted
statistics per replicate and the intervals do not depend on the sharding either.

Example::

    >>> s = batch_stats(["the cat sat on the mat"], [["the cat sat on the mat"]])
    >>> m = finalize(s)
    >>> round(m["bleu"], 6), round(m["chrf"], 6), round(m["ter"], 6), m["length_ratio"]
    (100.0, 100.0, 0.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from cluster.stats import codec
from cluster.stats.rowhash import poisson_weights

METRICS = ("bleu", "chrf", "ter")  # rows of the metric table (cluster/stats/metrics.py)
LOWER_IS_BETTER = frozenset({"ter"})


@cache
def scorer(name: str):
    """The sacrebleu metric object behind ``name`` (its defaults: BLEU 13a tokenizer, exp
    smoothing, 4-grams; chrF2 with character 6-grams; TER without normalisation)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU, "chrf": CHRF, "ter": TER}[name]()


@cache
def _sentence_bleu():
    """sacrebleu's sentence BLEU (``sentence_bleu``): the same statistics, effective n-gram order."""
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


def sentence_stats(hyps: list[str], refs: list[list[str | None]]) -> dict[str, np.ndarray]:
    """Per-sentence statistics, metric -> (n, k) float64.

    ``refs``: reference streams as sacrebleu takes them: ``refs[j][i]`` is the j-th
    reference of sentence i (None where a sentence has fewer references)."""
    out = {}
    for name in METRICS:
        if not len(hyps):
            out[name] = np.zeros((0, stat_width(name)))
            continue
        rows = scorer(name)._extract_corpus_statistics(list(hyps), refs)
        out[name] = np.asarray(rows, dtype=np.float64).reshape(len(hyps), -1)
    return out


def score_of(name: str, stats: np.ndarray) -> float:
    """The corpus score of summed statistics (k,), by sacrebleu's own formula."""
    return float(scorer(name)._compute_score_from_stats(stats).score)


def sentence_scores(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each sentence's own score, metric -> (n,): BLEU as sacrebleu's ``sentence_bleu``
    (effective order), chrF and TER as their ``sentence_score``."""
    out = {}
    for name, rows in stats.items():
        metric = _sentence_bleu() if name == "bleu" else scorer(name)
        out[name] = np.array([metric._compute_score_from_stats(r).score for r in rows], dtype=np.float64)
    return out


# ------------------------------------------------------------------ mergeable statistics


@cache
def stat_width(name: str) -> int:
    """How many statistics a sentence has under metric ``name`` (BLEU 10, chrF 18, TER 2)."""
    return len(scorer(name)._extract_corpus_statistics(["a"], [["a"]])[0])


@dataclass
class TranslationStats:
    """Summed sentence statistics of a set of rows, and the same per Poisson-bootstrap replicate."""

    sums: dict[str, np.ndarray]  # metric -> (k,) float64
    boot: dict[str, np.ndarray]  # metric -> (B, k) float64, Poisson-weighted sums
    n: int = 0
    # Sentences whose hypothesis came out empty (nothing generated): a symptom worth a line.
    empty_hypotheses: int = 0
    refs: dict = field(default_factory=dict)  # references per sentence -> sentences (the signature's nrefs)

    def __add__(self, other: TranslationStats) -> TranslationStats:
        refs = dict(self.refs)
        for k, v in other.refs.items():
            refs[k] = refs.get(k, 0) + v
        return TranslationStats(
            {k: v + other.sums[k] for k, v in self.sums.items()},
            {k: v + other.boot[k] for k, v in self.boot.items()},
            self.n + other.n,
            self.empty_hypotheses + other.empty_hypotheses,
            refs,
        )


def count_refs(refs: list[list[str | None]]) -> dict[int, int]:
    """How many sentences have how many references (None entries of a stream do not count)."""
    per = [sum(s[i] is not None for s in refs) for i in range(len(refs[0]))] if refs else []
    return {int(k): per.count(k) for k in sorted(set(per))}


def empty_stats(bootstrap: int = 0) -> TranslationStats:
    widths = {m: stat_width(m) for m in METRICS}
    return TranslationStats(
        {m: np.zeros(k) for m, k in widths.items()}, {m: np.zeros((bootstrap, k)) for m, k in widths.items()}
    )


def stats_from_sentences(
    stats: dict[str, np.ndarray], rows: np.ndarray | None = None, bootstrap: int = 0, seed: int = 0
) -> TranslationStats:
    """Sum per-sentence statistics (``sentence_stats``) into a :class:`TranslationStats`;
    ``rows``: the sentences' 0-based input positions, which seed their bootstrap weights."""
    n = len(next(iter(stats.values())))
    rows = np.arange(n) if rows is None else np.asarray(rows)
    w = poisson_weights(rows, bootstrap, seed).astype(np.float64) if bootstrap else np.zeros((0, n))
    return TranslationStats({m: s.sum(0) for m, s in stats.items()}, {m: w @ s for m, s in stats.items()}, n)


def batch_stats(
    hyps: list[str],
    refs: list[list[str | None]],
    rows: np.ndarray | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> TranslationStats:
    """Statistics of one batch of hypotheses and their reference streams (see ``sentence_stats``)."""
    out = stats_from_sentences(sentence_stats(hyps, refs), rows, bootstrap, seed)
    out.empty_hypotheses = sum(1 for h in hyps if not h.strip())
    out.refs = count_refs(refs)
    return out


# ------------------------------------------------------------------ scores


def length_ratio(bleu_stats: np.ndarray) -> float:
    """Hypothesis / reference length in BLEU's tokens (BLEU's brevity penalty applies below 1)."""
    return float(bleu_stats[0] / bleu_stats[1]) if bleu_stats[1] else float("nan")


def finalize(stats: TranslationStats, confidence: float = 0.95) -> dict:
    """metrics.json's translation scores from merged statistics: bleu, chrf, ter, length_ratio,
    BLEU's details, and ``ci95`` (percentile intervals over the replicates) when bootstrapped."""
    out: dict = {"n": stats.n, "task": "translation"}
    for name in METRICS:
        out[name] = score_of(name, stats.sums[name])
    bleu = scorer("bleu")._compute_score_from_stats(stats.sums["bleu"])
    out["length_ratio"] = length_ratio(stats.sums["bleu"])
    out["bleu_details"] = {
        "precisions": [float(p) for p in bleu.precisions],
        "brevity_penalty": float(bleu.bp),
        "hyp_len": int(stats.sums["bleu"][0]),
        "ref_len": int(stats.sums["bleu"][1]),
        "signature": signature("bleu", stats.refs),
    }
    out["chrf_signature"] = signature("chrf", stats.refs)
    out["ter_signature"] = signature("ter", stats.refs)
    out["empty_hypotheses"] = stats.empty_hypotheses
    out["ci95"] = bootstrap_ci(stats, confidence) if len(stats.boot["bleu"]) else {}
    return out


def signature(name: str, refs: dict[int, int]) -> str:
    """sacrebleu's signature of the metric (what the score means: tokenizer, smoothing, version),
    with the number of references per sentence (``var`` when it varies)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    metric = {"bleu": BLEU, "chrf": CHRF, "ter": TER}[name]()
    metric.num_refs = next(iter(refs)) if len(refs) == 1 else -1 if refs else 1
    return str(metric.get_signature())


def replicate_scores(name: str, boot: np.ndarray) -> np.ndarray:
    """(B,) scores of the replicates' summed statistics (B, k)."""
    return np.array([score_of(name, r) for r in boot], dtype=np.float64)


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    alpha = (1 - confidence) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def bootstrap_ci(stats: TranslationStats, confidence: float = 0.95) -> dict[str, list[float]]:
    """Percentile intervals of bleu, chrf, ter and the length ratio over the replicates."""
    out = {name: _interval(replicate_scores(name, stats.boot[name]), confidence) for name in METRICS}
    b = stats.boot["bleu"]
    ratio = np.divide(b[:, 0], b[:, 1], out=np.full(len(b), np.nan), where=b[:, 1] > 0)
    out["length_ratio"] = _interval(ratio[~np.isnan(ratio)], confidence) if (~np.isnan(ratio)).any() else []
    return out


# ------------------------------------------------------------------ the worst sentences


WORST = 10  # sentences a report shows side by side with their references


@dataclass
class Worst:
    """The ``k`` sentences with the lowest sentence chrF (ties: the lower row first), mergeable:
    ``a + b`` keeps the ``k`` lowest of both, so any sharding gives the same list."""

    k: int
    rows: list  # dicts: row, chrf, bleu, ter, source, reference, hypothesis (and id when set)

    def __add__(self, other: Worst) -> Worst:
        both = sorted(self.rows + other.rows, key=lambda r: (r["chrf"], r["row"]))
        return Worst(self.k, both[: self.k])


def worst_of(rows: list[dict], k: int = WORST) -> Worst:
    """:class:`Worst` of some sentences (each a dict as in ``Worst.rows``)."""
    return Worst(k, []) + Worst(k, list(rows))


codec.register(TranslationStats, Worst)  # part files hold them (cluster/stats/codec.py)
