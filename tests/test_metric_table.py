"""The metric table: each metric's family, direction and bounds, and the lists derived from it."""

import math

import pytest

from cluster.stats.metrics import (
    FAMILIES,
    METRICS,
    MetricInfo,
    metric_names,
    paired_metrics,
    register,
    slice_metrics_allowed,
)


def test_every_metric_has_a_known_family_and_ordered_bounds():
    for m in METRICS.values():
        assert m.family in FAMILIES, m
        lo, hi = m.bounds
        assert lo < hi, m


def test_derived_lists():
    assert paired_metrics() == ("accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted")
    assert slice_metrics_allowed() == paired_metrics()  # the paired headline metrics
    assert metric_names(family="threshold") == (
        "roc_auc_macro",
        "roc_auc_weighted",
        "average_precision_macro",
        "average_precision_weighted",
        "top_k_accuracy",
        "brier_score",
    )
    assert "log_loss" in metric_names(has_ci=True) and "ece" not in metric_names(has_ci=True)
    assert METRICS["log_loss"].bounds == (0.0, math.inf) and METRICS["brier_score"].bounds == (0.0, 2.0)


def test_a_metric_of_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown family"):
        register(MetricInfo("bogus", "Bogus", "nonesuch"))
    assert "bogus" not in METRICS
