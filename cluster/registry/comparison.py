"""Two finished evaluations of the same dataset, compared row by row (`evalctl compare`, the dashboard).

The runs are looked up in the registry, their metrics.json and predictions read from
wherever their artifacts are (a directory or the artifact store; predictions in
either form, cluster/registry/predictions.py), and compared by cluster/stats/compare.py:
paired-bootstrap intervals of B - A, McNemar's exact test, a one-line verdict. Two translation
runs are compared over sentences instead (cluster/stats/translation_compare.py: BLEU, chrF, TER).
"""

from __future__ import annotations

import json

from cluster.data.storage import join
from cluster.errors import UserError, did_you_mean
from cluster.registry.artifacts import read_text
from cluster.registry.overwrites import require_outputs
from cluster.registry.predictions import run_predictions
from cluster.registry.record import Registry
from cluster.stats.compare import (
    compare_predictions,
    disagreements,
    mcnemar_exact,
    per_class_deltas,
    slice_deltas,
    verdict,
)


def compare_runs(
    registry: Registry,
    ref_a: str,
    ref_b: str,
    metric: str = "f1_macro",
    replicates: int = 1000,
    seed: int = 0,
) -> tuple[dict, dict, dict]:
    """(the comparison of B against A, A's metrics.json, B's metrics.json); UserError when the runs
    are not finished evaluations of one dataset with the same labels, or ``metric`` is not compared."""
    a, b = (evaluation(registry, ref) for ref in (ref_a, ref_b))
    if a["dataset_fingerprint"] != b["dataset_fingerprint"]:
        raise UserError(
            f"{a['id']} and {b['id']} evaluated different datasets "
            f"({a['dataset_fingerprint']} vs {b['dataset_fingerprint']}); compare runs on the same data"
        )
    ma, mb = (run_metrics(r) for r in (a, b))
    if "translation" in (ma.get("task"), mb.get("task")):
        return compare_translation_runs(a, b, ma, mb, metric, replicates, seed), ma, mb
    if ma["labels"] != mb["labels"]:
        raise UserError(f"the models predict different labels ({ma['labels']} vs {mb['labels']})")
    pa_, pb = (run_predictions(r["artifact_path"]) for r in (a, b))
    ids = {"a": a["id"], "b": b["id"], "model_a": a["model_id"], "model_b": b["model_id"]}
    if ma.get("task") == "segmentation":  # paired over images (cluster/stats/segmentation_compare.py)
        from cluster.stats.segmentation_compare import compare_sources

        seg = compare_sources(pa_, pb, ma["labels"], metric, replicates, seed)
        return {**ids, "dataset": a["dataset_fingerprint"], **seg}, ma, mb
    counts, diffs = compare_predictions(pa_, pb, ma["labels"], replicates, seed)
    if metric not in diffs:
        raise UserError(
            f'cannot compare on "{metric}"{did_you_mean(metric, diffs)}; choose from {", ".join(diffs)}'
        )
    p = mcnemar_exact(counts.b, counts.c)
    result = {
        "a": a["id"],
        "b": b["id"],
        "model_a": a["model_id"],
        "model_b": b["model_id"],
        "dataset": a["dataset_fingerprint"],
        "n": int(counts.cm_a.sum()),
        "metrics": diffs,
        "mcnemar": {"a_right_b_wrong": counts.b, "a_wrong_b_right": counts.c, "p_value": p},
        "verdict": verdict(metric, diffs[metric], p),
    }
    return result, ma, mb


def compare_translation_runs(a: dict, b: dict, ma: dict, mb: dict, metric: str, replicates: int, seed: int):
    """Two translation evaluations of the same sentences: the paired bootstrap over sentences on bleu,
    chrf and ter (as ``sacrebleu --paired-bs``; cluster/stats/translation_compare.py)."""
    from cluster.stats.translation import METRICS
    from cluster.stats.translation_compare import compare_translations

    if ma.get("task") != mb.get("task"):
        raise UserError(f"{a['id']} and {b['id']} evaluated different tasks; compare two translation runs")
    if metric not in METRICS:
        raise UserError(
            f'cannot compare translations on "{metric}"{did_you_mean(metric, METRICS)}; '
            f"choose from {', '.join(METRICS)}"
        )
    pa_, pb = (run_predictions(r["artifact_path"]).read() for r in (a, b))
    result = compare_translations(pa_, pb, metric, replicates, seed)
    ids = {"a": a["id"], "b": b["id"], "model_a": a["model_id"], "model_b": b["model_id"]}
    return {**ids, "dataset": a["dataset_fingerprint"], "task": "translation", **result}


def compare_in_full(
    registry: Registry, ref_a: str, ref_b: str, metric: str = "f1_macro", examples: int = 20
) -> dict:
    """:func:`compare_runs` (1,000 replicates, seed 0, as `evalctl compare`) plus what a page shows
    beside it: per-class and per-slice differences, and where the two runs disagree."""
    result, ma, mb = compare_runs(registry, ref_a, ref_b, metric)
    if ma.get("task") == "segmentation":
        raise UserError("this page compares classifiers; compare segmentation runs with `evalctl compare`")
    pa_, pb = (run_predictions(registry.get_run(ref)["artifact_path"]) for ref in (result["a"], result["b"]))
    return {
        "result": result,
        "ma": ma,
        "mb": mb,
        "per_class": per_class_deltas(ma, mb),
        "slices": slice_deltas(ma, mb),
        "disagreements": disagreements(pa_, pb, ma["labels"], examples),
    }


def evaluation(registry: Registry, ref: str) -> dict:
    """The finished evaluation run ``ref``; UserError otherwise."""
    run = registry.get_run(ref)
    if run["kind"] != "evaluate" or run["status"] != "finished":
        raise UserError(
            f"run {run['id']} is a {run['status']} {run['kind']} run; compare finished evaluations"
        )
    require_outputs(registry, run, "its predictions")  # a later --overwrite run's are there now
    return run


def run_metrics(run: dict) -> dict:
    """A finished run's metrics.json, from its artifacts."""
    if not run.get("artifact_path"):
        raise UserError(f"run {run['id']} recorded no artifacts")
    return json.loads(read_text(join(run["artifact_path"], "metrics.json"), "metrics"))
