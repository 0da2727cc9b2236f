"""Metrics from merged sufficient statistics equal scikit-learn's (to 1e-9)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support

from cluster.stats.metrics import batch_stats, compute_metrics, finalize
from cluster.stats.rowhash import poisson_weights


@st.composite
def labelled_predictions(draw):
    """Random labels/probabilities: one class, missing classes, up to 12 classes."""
    k = draw(st.integers(1, 12))
    n = draw(st.integers(1, 60))
    present = draw(st.integers(1, k))  # classes that can occur at all
    y = np.array(draw(st.lists(st.integers(0, present - 1), min_size=n, max_size=n)))
    seed = draw(st.integers(0, 2**31))
    logits = np.random.default_rng(seed).normal(size=(n, k)) * draw(st.sampled_from([0.1, 1, 5, 50]))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return y, probs / probs.sum(1, keepdims=True), k


def sklearn_reference(y, probs, k):
    pred = probs.argmax(1)
    labels = list(range(k))
    ref = {"accuracy": accuracy_score(y, pred)}
    for avg in ("macro", "micro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        ref.update({f"precision_{avg}": p, f"recall_{avg}": r, f"f1_{avg}": f})
    per = precision_recall_fscore_support(y, pred, labels=labels, average=None, zero_division=0)
    cm = confusion_matrix(y, pred, labels=labels)
    loss = log_loss(y, probs, labels=labels) if k > 1 else None
    return ref, per, cm, loss


@pytest.mark.filterwarnings("ignore:A single label was found")
@settings(max_examples=300, deadline=None)
@given(labelled_predictions(), st.integers(1, 5))
def test_merged_stats_equal_sklearn(data, n_parts):
    y, probs, k = data
    names = [f"c{i}" for i in range(k)]
    cuts = np.linspace(0, len(y), n_parts + 1).astype(int)
    parts = [batch_stats(y[a:b], probs[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    merged = sum(parts[1:], parts[0])
    m = finalize(merged, names)
    ref, per, cm, loss = sklearn_reference(y, probs, k)
    for key, value in ref.items():
        assert m[key] == pytest.approx(value, abs=1e-9), key
    for i, name in enumerate(names):
        got = m["per_class"][name]
        assert [got["precision"], got["recall"], got["f1"], got["support"]] == pytest.approx(
            [per[0][i], per[1][i], per[2][i], per[3][i]], abs=1e-9
        )
    assert m["confusion_matrix"] == cm.tolist()
    if loss is not None:
        assert m["log_loss"] == pytest.approx(loss, abs=1e-9)


def test_bootstrap_does_not_depend_on_sharding():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    probs = rng.dirichlet(np.ones(3), 300)
    rows = np.arange(1000, 1300)
    whole = finalize(batch_stats(y, probs, rows=rows, bootstrap=200, seed=7), list("abc"))
    order = rng.permutation(300)  # shuffled rows in uneven shards
    parts = [
        batch_stats(y[i], probs[i], rows=rows[i], bootstrap=200, seed=7)
        for i in np.split(order, [17, 150, 151])
    ]
    sharded = finalize(sum(parts[1:], parts[0]), list("abc"))
    # Counts merge exactly; float sums (log-loss) differ only by summation order.
    for key, (lo, hi) in whole["ci95"].items():
        assert sharded["ci95"][key] == pytest.approx([lo, hi], rel=1e-12), key
    assert whole["ci95"]["accuracy"][0] < whole["accuracy"] < whole["ci95"]["accuracy"][1]
    other_seed = finalize(batch_stats(y, probs, rows=rows, bootstrap=200, seed=8), list("abc"))
    assert other_seed["ci95"] != whole["ci95"]


def test_poisson_weights_have_poisson_moments():
    w = poisson_weights(np.arange(20000), 50, seed=3)
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02
    assert abs((w == 0).mean() - np.exp(-1)) < 0.005


@pytest.mark.heavy
def test_bootstrap_ci_covers_true_accuracy_about_95_percent():
    """Simulation: a classifier with true accuracy 0.7 on 400 rows, 1,000 test sets."""
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(1000):
        y = rng.integers(0, 2, 400)
        correct = rng.random(400) < 0.7
        pred = np.where(correct, y, 1 - y)
        probs = np.eye(2)[pred] * 0.8 + 0.1
        ci = compute_metrics(y, probs, ["a", "b"], bootstrap=300, seed=trial)["ci95"]["accuracy"]
        hits += ci[0] <= 0.7 <= ci[1]
    assert 0.93 <= hits / 1000 <= 0.97, hits  # 95% nominal; 1,000 trials: binomial noise ~0.7 points


def test_ece_and_slices():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    st_ = batch_stats(y, probs, slices=np.array(["x", "x", "y", "y"]))
    m = finalize(st_, ["a", "b"])
    # bins: 0.9 correct, 0.6 correct, 0.7 correct, 0.8 wrong -> |1-.9|+|1-.6|+|1-.7|+|0-.8| over 4
    assert m["ece"] == pytest.approx((0.1 + 0.4 + 0.3 + 0.8) / 4)
    assert set(st_.slices) == {"x", "y"} and st_.slices["y"].n == 2
