"""Drift checks: each statistic against scipy / by hand, and the acceptance cases on the real corpus."""

import doctest

import numpy as np
import pytest
from scipy import stats as sps

import cluster.stats.drift
from cluster.errors import UserError
from cluster.stats.drift import (
    TextProfile,
    confidence_drift,
    domain_classifier,
    drift_report,
    length_drift,
    mean_pooled_embeddings,
    metric_gap,
    prediction_drift,
    text_profile,
    unknown_token_drift,
)
from cluster.stats.metrics import batch_stats


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from cluster.models.modeldir import base_model_dir

    return AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)


@pytest.fixture(scope="module")
def corpus_by_domain():
    """Corpus texts per keyword domain (the rule of cluster.data.domains, without the file segmentation)."""
    from cluster.data.corpus import load_corpus
    from cluster.data.domains import keyword_domain

    df = load_corpus()
    df["domain"] = [keyword_domain(t) for t in df["text"]]
    return df


@pytest.fixture(scope="module")
def embedded(corpus_by_domain):
    """Base-model embeddings of 150 airline tweets, 150 driverless-car tweets, 300 of any domain."""
    from transformers import AutoModel, AutoTokenizer

    from cluster.models.modeldir import base_model_dir

    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    model = AutoModel.from_pretrained(base_model_dir(), local_files_only=True, use_safetensors=True).eval()
    df = corpus_by_domain
    texts = {
        "airline": df[df["domain"] == "airline"].sample(150, random_state=0)["text"],
        "driverless": df[df["domain"] == "driverless"].sample(150, random_state=0)["text"],
        "mixed": df.sample(300, random_state=1)["text"],
    }
    return {k: mean_pooled_embeddings(model, tok, list(v), max_length=48) for k, v in texts.items()}


def test_prediction_drift_equals_scipy_and_skips_unused_classes():
    ref, cur = np.array([50, 30, 20, 0]), np.array([20, 30, 50, 0])
    r = prediction_drift(reference_counts=ref, current_counts=cur)
    chi2, p, dof, _ = sps.chi2_contingency(np.vstack([ref[:3], cur[:3]]), correction=False)
    assert (r["statistic"], r["p_value"], r["dof"]) == pytest.approx((chi2, p, dof))
    same = prediction_drift(reference_counts=ref, current_counts=ref * 3)
    assert same["statistic"] == pytest.approx(0) and same["p_value"] == pytest.approx(1)
    one = prediction_drift(reference_counts=np.array([0, 5]), current_counts=np.array([0, 9]))
    assert one["p_value"] == 1.0
    with pytest.raises(UserError, match="needs predictions on both datasets"):
        prediction_drift(reference_counts=ref, current_counts=np.zeros(4))


def test_confidence_drift_is_scipys_ks():
    rng = np.random.default_rng(0)
    a, b = rng.beta(5, 2, 400), rng.beta(4, 2, 300)
    r = confidence_drift(reference=a, current=b)
    ref = sps.ks_2samp(a, b)
    assert (r["statistic"], r["p_value"]) == (ref.statistic, ref.pvalue)


@pytest.mark.heavy  # the real corpus, embedded
def test_text_profiles_merge_and_length_ks_matches_scipy(tokenizer, corpus_by_domain):
    texts = corpus_by_domain["text"].tolist()
    a, b = texts[:600], texts[5000:5500]
    whole = text_profile(a, tokenizer=tokenizer)
    merged = text_profile(a[:250], tokenizer=tokenizer) + text_profile(a[250:], tokenizer=tokenizer)
    assert np.array_equal(whole.length_hist, merged.length_hist) and whole.tokens == merged.tokens
    assert (whole.unk, whole.unk_sq, whole.unk_tok, whole.tok_sq) == (
        merged.unk,
        merged.unk_sq,
        merged.unk_tok,
        merged.tok_sq,
    )
    la = [len(x) for x in tokenizer(a, add_special_tokens=False)["input_ids"]]
    lb = [len(x) for x in tokenizer(b, add_special_tokens=False)["input_ids"]]
    r = length_drift(reference=whole, current=text_profile(b, tokenizer=tokenizer))
    ref = sps.ks_2samp(la, lb, method="asymp")
    assert r["statistic"] == pytest.approx(ref.statistic, abs=1e-12)
    assert r["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


def profile(unk_per_text, tokens_per_text):
    u, t = np.asarray(unk_per_text), np.asarray(tokens_per_text)
    hist = np.bincount(t, minlength=513)
    return TextProfile(
        hist, int(t.sum()), int(u.sum()), int((u * u).sum()), int((u * t).sum()), int((t * t).sum())
    )


def test_unknown_token_rate_z_test_has_the_stated_variance_and_size():
    rng = np.random.default_rng(1)
    t = rng.integers(5, 30, 800)
    u = rng.binomial(t, 0.02)
    p = profile(u, t)
    r = unknown_token_drift(reference=p, current=p)
    assert r["statistic"] == 0 and r["p_value"] == 1.0
    rate = u.sum() / t.sum()
    var = ((u - rate * t) ** 2).sum() / t.sum() ** 2  # the ratio estimator's variance, directly
    lo, hi = r["ci95"]
    assert (hi - lo) / 2 == pytest.approx(1.959963985 * np.sqrt(2 * var), rel=1e-6)
    more = profile(rng.binomial(t, 0.05), t)
    assert unknown_token_drift(reference=p, current=more)["p_value"] < 1e-6
    # Under no drift the test rejects about 5% of the time (200 pairs of fresh samples).
    rejections = 0
    for _ in range(200):
        t1, t2 = rng.integers(5, 30, 400), rng.integers(5, 30, 400)
        a, b = profile(rng.binomial(t1, 0.02), t1), profile(rng.binomial(t2, 0.02), t2)
        rejections += unknown_token_drift(reference=a, current=b)["p_value"] < 0.05
    assert rejections <= 20


@pytest.mark.heavy  # a 400-trial simulation
def test_metric_gap_ci_covers_the_true_gap():
    """Accuracy 0.70 vs 0.76 on independent sets of 400 rows; 400 trials."""
    rng = np.random.default_rng(2)
    hits = 0
    for trial in range(400):
        sides = []
        for acc in (0.70, 0.76):
            y = rng.integers(0, 2, 400)
            pred = np.where(rng.random(400) < acc, y, 1 - y)
            sides.append(
                batch_stats(y, np.eye(2)[pred] * 0.8 + 0.1, rows=np.arange(400), bootstrap=200, seed=trial)
            )
        gap = metric_gap(reference=sides[0], current=sides[1], labels=["a", "b"])["accuracy"]
        hits += gap["ci95"][0] <= 0.06 <= gap["ci95"][1]
    assert 0.92 <= hits / 400 <= 0.98, hits


def test_drift_report_verdicts_are_bonferroni_corrected():
    checks = {"a": {"p_value": 0.02}, "b": {"p_value": 0.3}}
    r = drift_report(checks, alpha=0.05)
    assert (
        r["alpha_per_check"] == 0.025 and r["checks"]["a"]["verdict"] == "drift" and r["verdict"] == "drift"
    )
    assert drift_report({**checks, "c": {"p_value": 0.5}})["verdict"] == "no drift"  # 0.02 > 0.05 / 3
    with pytest.raises(UserError, match="no drift check could run"):
        drift_report({})


@pytest.mark.heavy  # the real corpus, embedded
def test_airline_vs_driverless_tweets_drift(embedded):
    r = domain_classifier(reference=embedded["airline"], current=embedded["driverless"], bootstrap=300)
    assert r["statistic"] > 0.8 and r["p_value"] < 1e-6 and r["ci95"][0] > 0.75
    assert drift_report({"domain": r})["verdict"] == "drift"


@pytest.mark.heavy  # the real corpus, embedded
def test_a_dataset_against_its_shuffled_copy_shows_no_drift(embedded):
    x = embedded["mixed"]
    # Two halves of one shuffled sample: same distribution.
    halves = domain_classifier(reference=x[:150], current=x[150:], bootstrap=300)
    assert 0.4 <= halves["statistic"] <= 0.6 and halves["p_value"] > 0.05
    assert halves["ci95"][0] < 0.5 < halves["ci95"][1]
    # The very same rows in another order: identical rows share a fold, so nothing to learn.
    copy = domain_classifier(
        reference=x, current=x[np.random.default_rng(0).permutation(len(x))], bootstrap=300
    )
    assert copy["statistic"] == 0.5 and copy["p_value"] > 0.05
    assert drift_report({"domain": halves})["verdict"] == "no drift"


@pytest.mark.heavy  # the real corpus, embedded
def test_embeddings_keep_input_order(embedded, corpus_by_domain):
    """Length-sorted batches are put back in input order: one text alone embeds the same."""
    from transformers import AutoModel, AutoTokenizer

    from cluster.models.modeldir import base_model_dir

    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    model = AutoModel.from_pretrained(base_model_dir(), local_files_only=True, use_safetensors=True).eval()
    texts = corpus_by_domain.sample(300, random_state=1)["text"].tolist()
    for i in (0, 123):
        alone = mean_pooled_embeddings(model, tok, [texts[i]], max_length=48)[0]
        np.testing.assert_allclose(alone, embedded["mixed"][i], atol=1e-4)


def test_docstring_examples_run():
    assert doctest.testmod(cluster.stats.drift).failed == 0
