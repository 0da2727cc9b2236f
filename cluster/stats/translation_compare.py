"""Is system B really better than system A? Paired bootstrap over sentences, as ``sacrebleu --paired-bs``.

Both systems translated the same sentences. Each bootstrap replicate weighs every
sentence by a count (how often it was drawn), the *same* counts for both systems; a
replicate's score of a system is the score of its weighted summed statistics
(cluster/stats/translation.py). The test is sacrebleu's (``significance._paired_bs_test``,
after Koehn 2004 and Moses' bootstrap-hypothesis-difference-significance.pl):

    d      = |score_B - score_A|                     on the whole test set
    d_r    = |score_B(r) - score_A(r)|               on replicate r
    p      = (#{r : d_r - mean(d_r) > d} + 1) / (R + 1)

The replicates' counts are, by default, the project's Poisson(1) weights hashed from
(seed, row) (:func:`cluster.stats.metrics.poisson_weights`), so the comparison can be
computed in batches of rows, in any order. With :func:`sacrebleu_counts` they are
sacrebleu's own draws (``numpy.random.default_rng(seed).choice``), and the p-value is
sacrebleu's exactly (tested).

Example::

    >>> from cluster.stats.translation import sentence_stats
    >>> refs = [["a b c d", "e f g h", "i j k l"]]
    >>> a = sentence_stats(["a b c d", "e f g x", "i j x x"], refs)
    >>> r = paired_bootstrap(a, a, np.arange(3), replicates=100)
    >>> r["bleu"]["diff"], r["bleu"]["p_value"]
    (0.0, 1.0)
"""

from __future__ import annotations

import numpy as np

from cluster.stats.rowhash import poisson_weights
from cluster.stats.translation import METRICS, replicate_scores, score_of

ROW_CHUNK = 4096  # rows weighed at once: a (replicates, chunk) weight matrix, ~32 MB at 1000 replicates


def sacrebleu_counts(n: int, replicates: int, seed: int = 12345) -> np.ndarray:
    """(replicates, n) draw counts of sacrebleu's paired bootstrap: replicate r draws
    ``default_rng(seed).choice(n, size=(replicates, n))[r]`` (12345: SACREBLEU_SEED's default)."""
    idx = np.random.default_rng(seed).choice(n, size=(replicates, n), replace=True)
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def weighted_sums(stats: np.ndarray, rows: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """(replicates, k): sentence statistics (n, k) summed under each replicate's Poisson weights."""
    out = np.zeros((replicates, stats.shape[1]))
    for start in range(0, len(rows), ROW_CHUNK):
        w = poisson_weights(rows[start : start + ROW_CHUNK], replicates, seed).astype(np.float64)
        out += w @ stats[start : start + ROW_CHUNK]
    return out


def paired_bootstrap(
    stats_a: dict[str, np.ndarray],
    stats_b: dict[str, np.ndarray],
    rows: np.ndarray,
    replicates: int = 1000,
    seed: int = 0,
    counts: np.ndarray | None = None,
    confidence: float = 0.95,
) -> dict[str, dict]:
    """B against A per metric: scores, difference B - A with its percentile interval, the
    replicates' score intervals, and the paired-bootstrap p-value.

    ``stats_a``/``stats_b``: per-sentence statistics (cluster/stats/translation.py
    ``sentence_stats``) of the same sentences, aligned; ``rows``: their input positions
    (they seed the Poisson weights); ``counts``: (replicates, n) draw counts to use instead
    (e.g. :func:`sacrebleu_counts`)."""
    alpha = (1 - confidence) / 2
    out = {}
    for name in METRICS:
        a, b = stats_a[name], stats_b[name]
        if counts is not None:
            reps_a, reps_b = counts @ a, counts @ b
        else:
            reps_a = weighted_sums(a, rows, replicates, seed)
            reps_b = weighted_sums(b, rows, replicates, seed)
        score_a, score_b = score_of(name, a.sum(0)), score_of(name, b.sum(0))
        boot_a, boot_b = replicate_scores(name, reps_a), replicate_scores(name, reps_b)
        diff = boot_b - boot_a
        out[name] = {
            "a": score_a,
            "b": score_b,
            "diff": score_b - score_a,
            "ci95": [float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))],
            "p_value": p_value(np.abs(diff), abs(score_b - score_a)),
            "replicates": len(diff),
        }
    return out


def p_value(sample_diffs: np.ndarray, real_diff: float) -> float:
    """sacrebleu's paired-bootstrap p-value (``significance._compute_p_value`` on centred
    absolute differences): how often a replicate's centred difference exceeds the real one.

    Two systems that score the same on the whole set get 1.0: sacrebleu's formula gives
    1 / (R + 1) there (no replicate exceeds 0), which would call a system significantly
    different from itself."""
    if real_diff == 0:
        return 1.0
    centred = sample_diffs - sample_diffs.mean()
    return float((np.sum(centred > real_diff) + 1) / (len(sample_diffs) + 1))


def verdict(metric: str, result: dict, alpha: float = 0.05) -> str:
    """One line, e.g. 'B better on bleu: +2.31 [+1.40, +3.12] BLEU points, paired bootstrap p = 0.001'."""
    d, (lo, hi), p = result["diff"], result["ci95"], result["p_value"]
    better = d < 0 if metric == "ter" else d > 0  # TER: lower is better
    if p >= alpha:
        head = f"no significant difference on {metric}"
    else:
        head = f"{'B' if better else 'A'} better on {metric}"
    return f"{head}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}] points, paired bootstrap p = {p:.4f}"


def reference_columns(table) -> list[str]:
    """A translation predictions table's reference columns, in order: reference, reference_2, ..."""
    extra = sorted((c for c in table.column_names if c.startswith("reference_")), key=lambda c: int(c[10:]))
    return ["reference", *extra]


def compare_translations(a, b, metric: str = "bleu", replicates: int = 1000, seed: int = 0) -> dict:
    """B against A from two translation predictions tables (pyarrow; columns ``row``,
    ``hypothesis``, ``reference``...) of the same sentences: :func:`paired_bootstrap` per metric,
    and a verdict on ``metric``. Rows are matched by ``row``; the references must agree."""
    from cluster.errors import UserError
    from cluster.stats.translation import sentence_stats

    a, b = a.sort_by("row"), b.sort_by("row")
    if a["row"].to_pylist() != b["row"].to_pylist():
        raise UserError(
            f"the runs translated different rows ({a.num_rows} vs {b.num_rows}); "
            "compare evaluations of the same full dataset"
        )
    cols = reference_columns(a)
    if cols != reference_columns(b) or any(a[c].to_pylist() != b[c].to_pylist() for c in cols):
        raise UserError("the runs' references differ; were they evaluated on the same data and columns?")
    refs = [a[c].to_pylist() for c in cols]
    hyp_a, hyp_b = a["hypothesis"].to_pylist(), b["hypothesis"].to_pylist()
    rows = a["row"].to_numpy()
    result = paired_bootstrap(
        sentence_stats(hyp_a, refs), sentence_stats(hyp_b, refs), rows, replicates, seed
    )
    return {"n": a.num_rows, "metrics": result, "verdict": verdict(metric, result[metric]), "seed": seed,
            "replicates": replicates}  # fmt: skip
