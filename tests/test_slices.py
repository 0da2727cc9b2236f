"""Weak-slice discovery: a planted fault is found; statistics merge exactly; the CIs are the row bootstrap's."""

import doctest

import numpy as np
import pandas as pd
import pytest

import cluster.stats.slices
from cluster.errors import UserError
from cluster.stats.metrics import scores_from_confusion
from cluster.stats.rowhash import poisson_weights
from cluster.stats.slices import ALL, _replicates, slice_names, slice_stats, weak_slices, wordpiece_words

MARKER = "zebra"  # a whole word of the WordPiece vocabulary that tweets hardly use


@pytest.fixture(scope="module")
def planted(sample_dir):
    """3,000 real tweets, 120 with the marker appended; a 'model' always wrong on those,
    right 85% of the time elsewhere."""
    df = pd.read_parquet(sample_dir / "train.parquet").head(3000)
    rng = np.random.default_rng(0)
    texts = df["text"].tolist()
    marked = rng.choice(3000, 120, replace=False)
    for i in marked:
        texts[i] = f"{texts[i]} {MARKER}"
    y = rng.integers(0, 3, 3000)
    wrong = (rng.random(3000) > 0.85) | np.isin(np.arange(3000), marked)
    pred = np.where(wrong, (y + 1 + rng.integers(0, 2, 3000)) % 3, y)
    return texts, y, pred


def test_planted_fault_is_the_top_weak_slice(planted):
    texts, y, pred = planted
    assert MARKER in wordpiece_words()
    stats = slice_stats(texts=texts, y_true=y, pred=pred, num_classes=3)
    r = weak_slices(stats, labels=list("abc"), min_slice_size=100)
    top = r["weak"][0]
    assert top["slice"] == f"token={MARKER}" and top["n"] == 120 and top["accuracy"] == 0.0
    assert top["ci_corrected"][1] < r["overall"] and top["ci95"][1] < r["overall"]
    assert r["tested"] == len(r["slices"]) and "Bonferroni over" in r["correction"]
    # the corrected interval is the wider one
    for s in r["slices"].values():
        assert s["ci_corrected"][0] <= s["ci95"][0] and s["ci95"][1] <= s["ci_corrected"][1]
    # a slice smaller than --min-slice-size is neither tested nor reported
    r2 = weak_slices(stats, labels=list("abc"), min_slice_size=121)
    assert f"token={MARKER}" not in r2["slices"] and all(w["slice"] != f"token={MARKER}" for w in r2["weak"])
    assert all(s["n"] >= 121 for s in r2["slices"].values())
    scores = [w["accuracy"] for w in r["weak"]]
    assert scores == sorted(scores)


def test_slice_statistics_merge_exactly_in_any_order(planted):
    texts, y, pred = planted
    whole = slice_stats(
        texts=texts, y_true=y, pred=pred, num_classes=3, slice_column="src", slice_values=y % 2
    )
    order = np.random.default_rng(1).permutation(3000)
    parts = [
        slice_stats(
            texts=[texts[i] for i in idx],
            y_true=y[idx],
            pred=pred[idx],
            num_classes=3,
            slice_column="src",
            slice_values=(y % 2)[idx],
        )
        for idx in np.array_split(order, 7)
    ]
    merged = sum(parts[::-1][1:], parts[::-1][0])
    assert np.array_equal(merged.names, whole.names) and np.array_equal(merged.confusion, whole.confusion)
    assert whole.get(ALL).sum() == 3000 and whole.get("src=0").sum() + whole.get("src=1").sum() == 3000
    a = weak_slices(whole, labels=list("abc"), min_slice_size=50, seed=4)
    assert a == weak_slices(merged, labels=list("abc"), min_slice_size=50, seed=4)
    gap = a["gap"]["src"]
    assert gap["ci95"][0] <= gap["gap"] <= gap["ci95"][1] and {gap["best"], gap["worst"]} == {
        "src=0",
        "src=1",
    }
    assert a["gap"]["length"]["worst"].startswith("length=")


def test_cell_poisson_replicates_are_the_row_bootstrap():
    """Restricted to one slice, Poisson row weights sum to Poisson(count) per confusion cell."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 500)
    pred = np.where(rng.random(500) < 0.7, y, (y + 1) % 3)
    cm = np.bincount(y * 3 + pred, minlength=9).reshape(3, 3)
    cells = _replicates(cm, "f1_macro", 20000, 0, "s")
    w = poisson_weights(np.arange(500), 20000, seed=1)
    boot = np.zeros((20000, 9))
    for c in range(9):
        boot[:, c] = w[:, (y * 3 + pred) == c].sum(1)
    rows = scores_from_confusion(boot.reshape(-1, 3, 3))["f1_macro"]
    assert cells.mean() == pytest.approx(rows.mean(), abs=0.002)
    assert cells.std() == pytest.approx(rows.std(), rel=0.05)


def test_candidate_slices_of_a_text():
    vocab = {"flight", "not", "the"}
    names = slice_names("@united NOT the flight I booked, 2 hours late #fail http://t.co/x", vocab)
    assert names == [
        "length=11-15 words",
        "has_url",
        "has_mention",
        "has_hashtag",
        "has_number",
        "has_negation",
        "token=flight",
        "token=not",
        "token=the",
    ]
    assert slice_names(" ".join(["w"] * 31), set()) == ["length=31+ words"]


def test_bad_arguments_are_one_clear_error(planted):
    texts, y, pred = planted
    stats = slice_stats(texts=texts[:10], y_true=y[:10], pred=pred[:10], num_classes=3, vocabulary=set())
    with pytest.raises(UserError, match='slice metric "log_loss" is not one of'):
        weak_slices(stats, labels=list("abc"), metric="log_loss")
    with pytest.raises(UserError, match="--min-slice-size must be at least 1"):
        weak_slices(stats, labels=list("abc"), min_slice_size=0)
    with pytest.raises(UserError, match="one entry per row"):
        slice_stats(texts=texts[:3], y_true=y[:2], pred=pred[:2], num_classes=3)


def test_docstring_examples_run():
    assert doctest.testmod(cluster.stats.slices).failed == 0
