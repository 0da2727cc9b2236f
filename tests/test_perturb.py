"""Perturbations are pure functions of (text, seed, row); robustness statistics merge exactly."""

import doctest
import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cluster.data.perturb
import cluster.stats.robustness
from cluster.data.perturb import HOMOGLYPHS, PERTURBATIONS, perturb, perturb_text
from cluster.errors import UserError
from cluster.stats.compare import mcnemar_exact
from cluster.stats.robustness import Damage, robustness_stats, robustness_summary

TWEETS = [
    "@united my flight was delayed AGAIN!!! 3 hours... not happy http://t.co/x #fail",
    "I love my new iPhone, thanks @apple :)",
    "Would you ride in a driverless car?",
    "Straße İstanbul ß naïve café",
    "",
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(max_size=60), min_size=1, max_size=8),
    st.sampled_from(PERTURBATIONS),
    st.floats(0, 1),
    st.integers(0, 2**40),
    st.randoms(use_true_random=False),
)
def test_a_row_is_perturbed_the_same_in_any_batch(texts, kind, rate, seed, rnd):
    rows = list(range(1000, 1000 + len(texts)))
    whole = perturb(texts, kind=kind, rate=rate, seed=seed, rows=rows)
    order = list(range(len(texts)))
    rnd.shuffle(order)  # another shard layout: other neighbours, other order
    shuffled = perturb(
        [texts[i] for i in order], kind=kind, rate=rate, seed=seed, rows=[rows[i] for i in order]
    )
    assert [shuffled[order.index(i)] for i in range(len(texts))] == whole
    assert whole == [
        perturb_text(t, kind=kind, rate=rate, seed=seed, row=r) for t, r in zip(texts, rows, strict=True)
    ]
    if kind == "identity" or rate == 0:
        assert whole == texts


@pytest.mark.parametrize("kind", [k for k in PERTURBATIONS if k != "identity"])
def test_each_perturbation_changes_text_and_depends_on_seed_and_row(kind):
    texts = TWEETS[:3] * 20
    rows = np.arange(60)
    a = perturb(texts, kind=kind, rate=0.5, seed=1, rows=rows)
    assert sum(x != t for x, t in zip(a, texts, strict=True)) >= 50
    assert a != perturb(texts, kind=kind, rate=0.5, seed=2, rows=rows)
    assert a[:3] != a[3:6]  # same texts, other rows: other choices


def test_homoglyphs_are_look_alikes_from_other_scripts():
    out = perturb_text("a cope", kind="homoglyph", rate=1.0, seed=0, row=0)
    assert out == "\u0430 \u0441\u043e\u0440\u0435"
    assert all(ord(v) > 0x3FF for v in HOMOGLYPHS.values()) and all(k.isascii() for k in HOMOGLYPHS)


def test_case_changes_nothing_an_uncased_tokenizer_sees(sample_dir):
    """Hence `case` against a model with an uncased tokenizer flips no prediction, whatever the model."""
    import pandas as pd
    from transformers import AutoTokenizer

    from cluster.models.modeldir import base_model_dir

    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    assert tok.init_kwargs.get("do_lower_case", True)
    texts = pd.read_parquet(sample_dir / "test.parquet")["text"].tolist()[:1500] + TWEETS
    cased = perturb(texts, kind="case", rate=1.0, seed=0, rows=np.arange(len(texts)))
    assert sum(c != t for c, t in zip(cased, texts, strict=True)) > 1000
    assert tok(cased)["input_ids"] == tok(texts)["input_ids"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "typos"}, 'unknown perturbation "typos" \\(did you mean "typo"'),
        ({"kind": "typo", "rate": 1.5}, "--rate must be between 0 and 1"),
        ({"kind": "typo", "rows": [0, 1]}, "one entry per text"),
    ],
)
def test_bad_arguments_are_one_clear_error(kwargs, match):
    args = {"rows": [0], **kwargs}
    with pytest.raises(UserError, match=match):
        perturb(["text"], **args)


# ------------------------------------------------------------------ paired statistics


def fake_run(n=300, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    clean = rng.dirichlet(np.ones(k), n) * 0.5 + 0.5 * np.eye(k)[y]
    noisy = np.abs(clean + rng.normal(0, 0.3, clean.shape))
    return y, clean, noisy / noisy.sum(1, keepdims=True)


def test_identity_gives_zero_flips_and_p_one():
    y, clean, _ = fake_run()
    s = robustness_stats(
        y_true=y, probs_clean=clean, probs_perturbed=clean.copy(), rows=np.arange(300), replicates=200
    )
    r = robustness_summary(s, labels=["a", "b", "c"])
    assert r["flips"] == 0 and r["flip_rate"] == 0 and r["mcnemar_p"] == 1.0 and r["worst"] == []
    assert r["flip_rate_ci95"] == [0.0, 0.0]
    assert all(m["diff"] == 0 and m["ci95"] == [0.0, 0.0] for m in r["metrics"].values())


def test_sharded_statistics_equal_the_whole_and_brute_force():
    y, clean, pert = fake_run(500, seed=3)
    rows = np.arange(500) + 7
    texts = [f"text {i}" for i in rows]
    whole = robustness_stats(
        y_true=y, probs_clean=clean, probs_perturbed=pert, rows=rows, texts=texts, replicates=100, top=10
    )
    order = np.random.default_rng(0).permutation(500)
    parts = [
        robustness_stats(
            y_true=y[i],
            probs_clean=clean[i],
            probs_perturbed=pert[i],
            rows=rows[i],
            texts=[texts[j] for j in i],
            replicates=100,
            top=10,
        )
        for i in np.array_split(order, 7)
    ]
    merged = sum(parts[::-1][1:], parts[::-1][0])
    a, b = robustness_summary(whole, labels=list("abc")), robustness_summary(merged, labels=list("abc"))
    assert a == b
    flipped = clean.argmax(1) != pert.argmax(1)
    assert a["flips"] == flipped.sum() and a["flip_rate"] == pytest.approx(flipped.mean())
    right_c, right_p = clean.argmax(1) == y, pert.argmax(1) == y
    assert a["mcnemar_p"] == mcnemar_exact(int((right_c & ~right_p).sum()), int((~right_c & right_p).sum()))
    damage = clean[np.arange(500), y] - pert[np.arange(500), y]
    expect = heapq.nlargest(10, [(d, -r) for d, r in zip(damage, rows, strict=True) if d > 0])
    assert [(w["damage"], -w["row"]) for w in a["worst"]] == [(float(d), r) for d, r in expect]
    assert a["worst"][0]["text"] == f"text {a['worst'][0]['row']}"
    lo, hi = a["flip_rate_ci95"]
    assert lo < a["flip_rate"] < hi


def test_damage_orders_by_damage_then_lowest_row():
    hi_row, lo_row = Damage(0.5, -9, 0, 0, 1, 0.9, 0.4), Damage(0.5, -2, 0, 0, 1, 0.9, 0.4)
    assert heapq.nlargest(1, [hi_row, lo_row]) == [lo_row]


@pytest.mark.heavy  # runs the tiny model on many perturbed texts
def test_tiny_model_identity_and_case_flip_nothing(tiny_model_dir, sample_dir):
    """500 rows through a real (tiny, uncased-tokenizer) model: identity and case give 0 flips."""
    import pandas as pd

    from cluster.models.text import load_classifier, predict_proba

    model, tok, labels = load_classifier(tiny_model_dir)
    df = pd.read_parquet(sample_dir / "test.parquet").head(500)
    texts, rows = df["text"].tolist(), np.arange(500)
    y = np.array([labels.index(lab) for lab in df["label"]])
    clean = predict_proba(model, tok, texts)
    for kind in ("identity", "case"):
        pert = predict_proba(model, tok, perturb(texts, kind=kind, rate=1.0, seed=5, rows=rows))
        s = robustness_stats(y_true=y, probs_clean=clean, probs_perturbed=pert, rows=rows, replicates=50)
        r = robustness_summary(s, labels=labels)
        assert (r["flips"], r["mcnemar_p"]) == (0, 1.0), kind


def test_docstring_examples_run():
    for module in (cluster.data.perturb, cluster.stats.robustness):
        assert doctest.testmod(module).failed == 0
