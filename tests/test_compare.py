"""Leaderboard and paired comparison: statistics checked by hand and by simulation."""

from pathlib import Path

import numpy as np
import pytest

from cluster.errors import UserError
from cluster.registry.leaderboard import leaderboard
from cluster.registry.record import Registry
from cluster.stats.compare import differences, mcnemar_exact, paired_counts
from cluster.stats.rowhash import poisson_weights
from jobs.team import compare_runs
from tests.registry_helpers import fake_eval

LABELS = ["negative", "neutral", "positive"]


@pytest.mark.parametrize(
    "b, c, p",
    [
        (0, 0, 1.0),
        (5, 0, 2 / 32),  # n=5: P(X<=0) = 1/32, two-sided
        (1, 9, 2 * (1 + 10) / 1024),  # n=10: P(X<=1) = (C(10,0)+C(10,1))/2^10
        (3, 3, 1.0),  # symmetric: capped at 1
        (2, 4, min(1.0, 2 * (1 + 6 + 15) / 64)),
    ],
)
def test_mcnemar_exact_by_hand(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-15)
    assert mcnemar_exact(c, b) == pytest.approx(p, abs=1e-15)


def test_paired_bootstrap_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    n, k, reps = 40, 3, 50
    y = rng.integers(0, k, n)
    pa, pb = rng.integers(0, k, n), rng.integers(0, k, n)
    rows = np.arange(n)
    counts = paired_counts(y, pa, pb, rows, k, reps, seed=4)
    w = poisson_weights(rows, reps, seed=4)
    for r in range(reps):  # reference: weighted accuracy difference, one replicate at a time
        acc_a = (w[r] * (pa == y)).sum() / w[r].sum()
        acc_b = (w[r] * (pb == y)).sum() / w[r].sum()
        ca = np.trace(counts.boot_a[r]) / counts.boot_a[r].sum()
        cb = np.trace(counts.boot_b[r]) / counts.boot_b[r].sum()
        assert (cb - ca) == pytest.approx(acc_b - acc_a, abs=1e-12)
    assert counts.b == int(((pa == y) & (pb != y)).sum()) and counts.c == int(((pa != y) & (pb == y)).sum())


def test_identical_models_differ_by_exactly_zero():
    y = np.array([0, 1, 2, 1, 0, 2])
    counts = paired_counts(y, y[::-1].copy(), y[::-1].copy(), np.arange(6), 3, 100)
    d = differences(counts)
    assert all(v["diff"] == 0 and v["ci95"] == [0.0, 0.0] for v in d.values())
    assert mcnemar_exact(counts.b, counts.c) == 1.0


@pytest.mark.heavy
def test_paired_ci_covers_the_true_difference_93_to_97_percent():
    """1,000 simulated test sets of 500 rows; A right w.p. 0.70, B right w.p. 0.75 (correlated)."""
    rng = np.random.default_rng(123)
    n, hits = 500, 0
    for trial in range(1000):
        y = np.zeros(n, np.int64)
        u = rng.random(n)
        right_a, right_b = u < 0.70, (u < 0.65) | ((u >= 0.70) & (u < 0.80))  # P(B right) = 0.75
        pa, pb = np.where(right_a, 0, 1), np.where(right_b, 0, 1)
        lo, hi = differences(paired_counts(y, pa, pb, np.arange(n), 2, 400, seed=trial))["accuracy"]["ci95"]
        hits += lo <= 0.05 <= hi
    assert 0.93 <= hits / 1000 <= 0.97, hits


# ------------------------------------------------------------------ through the registry


def test_leaderboard_ranks_within_one_dataset(tmp_path):
    reg = Registry(tmp_path / "home")
    y = np.array([0, 1, 2, 0, 1, 2])
    weak = fake_eval(reg, tmp_path, "a", "fp1", y, np.array([0, 0, 0, 0, 0, 0]))[0]
    strong = fake_eval(reg, tmp_path, "b", "fp1", y, y)[0]
    other = fake_eval(reg, tmp_path, "c", "fp2", y, y)[0]
    board = leaderboard(reg, "fp1", "f1_macro")
    assert list(board) == ["fp1"] and [r["id"] for r in board["fp1"]] == [strong, weak]
    assert other not in [
        r["id"]
        for rows in leaderboard(reg, None, "f1_macro").values()
        for r in rows
        if r["dataset_fingerprint"] == "fp1"
    ]
    with pytest.raises(UserError, match='unknown metric "f1_macr" \\(did you mean "f1_macro"'):
        leaderboard(reg, None, "f1_macr")


def test_compare_runs_verdict_and_errors(tmp_path):
    reg = Registry(tmp_path / "home")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    pa = np.where(rng.random(400) < 0.6, y, (y + 1) % 3)
    pb = np.where(rng.random(400) < 0.5, y, pa)  # B fixes about half of A's mistakes
    a = fake_eval(reg, tmp_path, "a", "fp1", y, pa)[0]
    b = fake_eval(reg, tmp_path, "b", "fp1", y, pb)[0]
    res = compare_runs(reg, a, b, "accuracy", replicates=500)
    assert res["metrics"]["accuracy"]["diff"] == pytest.approx(np.mean(pb == y) - np.mean(pa == y))
    assert res["mcnemar"]["a_right_b_wrong"] == 0 and res["mcnemar"]["p_value"] < 0.001
    assert res["verdict"].startswith("B better on accuracy: +") and "p < 0.001" in res["verdict"]
    assert Path(res["report"]).read_text().count("<svg") == 2  # both confusion matrices
    c = fake_eval(reg, tmp_path, "c", "fp2", y, pb)[0]
    with pytest.raises(UserError, match="evaluated different datasets"):
        compare_runs(reg, a, c)
