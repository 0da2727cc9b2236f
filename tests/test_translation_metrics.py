"""Translation metrics (cluster/stats/translation.py, translation_compare.py) against sacrebleu itself.

Corpus BLEU, chrF and TER merged from any sharding of the sentences must equal sacrebleu's
corpus scores on the same hypotheses to 1e-9; the paired bootstrap with sacrebleu's own draws
must give sacrebleu's p-value.
"""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.stats.translation import (
    METRICS,
    batch_stats,
    empty_stats,
    finalize,
    sentence_scores,
    sentence_stats,
)
from cluster.stats.translation_compare import paired_bootstrap, sacrebleu_counts, verdict

WORDS = ["le", "chat", "est", "sur", "la", "table", "Dieu", "dit", ",", ".", "l'Éternel", "et", "a"]
sentence = st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join)


def _reference_scores(hyps, refs):
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, refs).score,
        "chrf": sacrebleu.corpus_chrf(hyps, refs).score,
        "ter": sacrebleu.corpus_ter(hyps, refs).score,
    }


@st.composite
def corpus(draw, max_refs=2):
    n = draw(st.integers(1, 25))
    hyps = draw(st.lists(sentence, min_size=n, max_size=n))
    n_refs = draw(st.integers(1, max_refs))
    # sacrebleu needs a non-empty first reference stream for chrF/TER statistics to make sense
    refs = [draw(st.lists(sentence.filter(str.strip), min_size=n, max_size=n)) for _ in range(n_refs)]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return hyps, refs, cuts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpus())
def test_merged_shards_equal_sacrebleu_corpus_scores(case):
    hyps, refs, cuts = case
    bounds = [0, *cuts, len(hyps)]
    total = empty_stats()
    order = list(range(len(bounds) - 1))[::-1]  # shards merged in reverse order: addition commutes
    for i in order:
        lo, hi = bounds[i], bounds[i + 1]
        total = total + batch_stats(hyps[lo:hi], [r[lo:hi] for r in refs], np.arange(lo, hi))
    got = finalize(total)
    want = _reference_scores(hyps, refs)
    for name in METRICS:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name
    assert got["n"] == len(hyps)


def test_sentence_scores_equal_sacrebleu_sentence_scores():
    hyps = ["the cat sat on a mat", "", "a dog", "il a dit ."]
    refs = [["the cat sat on the mat", "hello world", "the dog barked", "il dit ."]]
    got = sentence_scores(sentence_stats(hyps, refs))
    for i, h in enumerate(hyps):
        assert got["bleu"][i] == pytest.approx(sacrebleu.sentence_bleu(h, [refs[0][i]]).score, abs=1e-9)
        assert got["chrf"][i] == pytest.approx(sacrebleu.sentence_chrf(h, [refs[0][i]]).score, abs=1e-9)
        assert got["ter"][i] == pytest.approx(sacrebleu.sentence_ter(h, [refs[0][i]]).score, abs=1e-9)


def test_variable_number_of_references():
    hyps = ["a b c", "d e f"]
    refs = [["a b c", "d e g"], ["a b d", None]]
    got = finalize(batch_stats(hyps, refs))
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, refs).score, abs=1e-9)


def test_bootstrap_ci_does_not_depend_on_sharding_and_covers_the_score():
    rng = np.random.default_rng(0)
    hyps = [" ".join(rng.choice(WORDS, 8)) for _ in range(60)]
    refs = [[" ".join(rng.choice(WORDS, 8)) for _ in range(60)]]
    whole = finalize(batch_stats(hyps, refs, np.arange(60), bootstrap=200, seed=3))
    parts = batch_stats(hyps[:17], [refs[0][:17]], np.arange(17), 200, 3) + batch_stats(
        hyps[17:], [refs[0][17:]], np.arange(17, 60), 200, 3
    )
    sharded = finalize(parts)
    assert whole["ci95"] == sharded["ci95"]
    for name in METRICS:
        lo, hi = whole["ci95"][name]
        assert lo <= whole[name] <= hi and lo < hi, name
    other_seed = finalize(batch_stats(hyps, refs, np.arange(60), bootstrap=200, seed=4))
    assert other_seed["ci95"]["bleu"] != whole["ci95"]["bleu"]


def test_length_ratio_is_bleu_hyp_over_ref_length():
    got = finalize(batch_stats(["a b", "c"], [["a b c d", "c d"]]))
    assert got["length_ratio"] == pytest.approx(3 / 6)
    assert got["bleu_details"]["brevity_penalty"] == pytest.approx(
        sacrebleu.corpus_bleu(["a b", "c"], [["a b c d", "c d"]]).bp
    )


def test_paired_bootstrap_equals_sacrebleus_paired_bs():
    """sacrebleu's PairedTest (test_type 'bs') and ours, given sacrebleu's draws, agree."""
    from sacrebleu.metrics import BLEU, CHRF, TER
    from sacrebleu.significance import PairedTest

    rng = np.random.default_rng(1)
    refs = [[" ".join(rng.choice(WORDS, 9)) for _ in range(80)]]
    a = [" ".join(rng.choice(WORDS, 9)) for _ in range(80)]
    b = [r if i % 3 else " ".join(rng.choice(WORDS, 9)) for i, r in enumerate(refs[0])]
    metrics = {"BLEU": BLEU(references=refs), "chrF": CHRF(references=refs), "TER": TER(references=refs)}
    named = [("baseline", a), ("system", b)]
    _, results = PairedTest(named, metrics, references=None, test_type="bs", n_samples=300)()
    counts = sacrebleu_counts(80, 300, seed=12345)
    ours = paired_bootstrap(sentence_stats(a, refs), sentence_stats(b, refs), np.arange(80), counts=counts)
    for name, key in (("bleu", "BLEU"), ("chrf", "chrF"), ("ter", "TER")):
        key = next(k for k in results if k.lower().startswith(key.lower()))  # e.g. "chrF2"
        theirs = results[key][1]  # the system's Result: score, p_value, mean, ci
        assert ours[name]["b"] == pytest.approx(theirs.score, abs=1e-9)
        assert ours[name]["p_value"] == pytest.approx(theirs.p_value, abs=1e-12), name
    assert ours["bleu"]["p_value"] < 0.01  # b copies two thirds of the references
    assert verdict("bleu", ours["bleu"]).startswith("B better on bleu")
    assert verdict("ter", ours["ter"]).startswith("B better on ter")


def test_paired_bootstrap_of_a_system_against_itself():
    refs = [["a b c d", "e f g h"]]
    s = sentence_stats(["a b c d", "e f x h"], refs)
    r = paired_bootstrap(s, s, np.arange(2), replicates=50)
    assert all(r[m]["diff"] == 0 and r[m]["p_value"] == 1.0 for m in METRICS)
    assert verdict("bleu", r["bleu"]).startswith("no significant difference")


def test_examples_in_docstrings_run():
    import doctest

    import cluster.stats.translation
    import cluster.stats.translation_compare

    for module in (cluster.stats.translation, cluster.stats.translation_compare):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_metric_table_knows_the_translation_metrics():
    from cluster.stats.metrics import metric_info, metric_mode

    assert metric_mode("bleu") == "max" and metric_mode("chrf") == "max" and metric_mode("ter") == "min"
    assert metric_info("bleu").has_ci and metric_info("bleu").family == "corpus"
    assert metric_info("bleu").task == "translation" and not metric_info("bleu").paired
