"""A quality gate's baseline: the evaluation a run is compared with row by row (``--baseline``,
``--max-drop``), found in the registry, and the paired comparison itself.

Used by `evalctl gate` (jobs/gate.py), an evaluation's own gate (cluster/evaluation/sections.py)
and a sweep's ``gate:`` (jobs/sweep_gate.py).
"""

from __future__ import annotations

from cluster.errors import UserError
from cluster.models.resolve import resolve_model
from cluster.registry.predictions import open_predictions, run_predictions
from cluster.registry.record import Registry
from cluster.specs.workloads import GateSpec
from cluster.stats.compare import compare_predictions, mcnemar_exact
from cluster.stats.segmentation_compare import compare_sources

EVALUATIONS = ("evaluate", "robustness")  # run kinds with metrics.json and predictions


def resolve_baseline(
    registry: Registry, ref: str | None, fingerprint: str, data_path: str, labels: list[str] | None = None
) -> dict | None:
    """The baseline's finished evaluation of the data with this ``fingerprint`` (an evaluation run,
    or a model's latest one), or None without ``ref``. A run on other data is refused."""
    if ref is None:
        return None
    run = _run_or_none(registry, ref)
    if run is None:
        run = _latest_evaluation(registry, ref, fingerprint, data_path)
    elif run["kind"] not in EVALUATIONS or run["status"] != "finished":
        raise UserError(
            f"baseline {run['id']} is a {run['status']} {run['kind']} run; give a finished evaluation"
        )
    elif run["dataset_fingerprint"] != fingerprint:
        raise UserError(
            f"baseline {run['id']} evaluated other data (dataset {run['dataset_fingerprint']}, "
            f"{run['dataset_path']}) than the gated run (dataset {fingerprint}, {data_path}); "
            "a gate compares on the same rows"
        )
    have = (run.get("metrics") or {}).get("labels")
    if labels is not None and have is not None and have != labels:
        raise UserError(f"baseline {run['id']} predicts {have}, the gated model {labels}")
    return run


def _run_or_none(registry: Registry, ref: str) -> dict | None:
    try:
        return registry.get_run(ref)
    except UserError:
        return None


def _latest_evaluation(registry: Registry, ref: str, fingerprint: str, data_path: str) -> dict:
    try:
        model = resolve_model(ref, registry)
    except UserError as exc:
        raise UserError(f'baseline "{ref}" is neither an evaluation run nor a model: {exc}') from exc
    runs = registry.list_runs(kind="evaluate", status="finished", dataset_fingerprint=fingerprint)
    mine = [r for r in runs if r["model_id"] == model.model_id]
    if not mine:
        raise UserError(
            f"baseline model {model.model_id} has no finished evaluation on this data (dataset "
            f"{fingerprint}); evaluate it first: evalctl evaluate --model {ref} --data {data_path}"
        )
    return mine[0]  # newest first


def paired_with(
    baseline: dict,
    predictions: str,
    labels: list[str],
    gate: GateSpec,
    seed: int = 0,
    task: str | None = "classification",
) -> dict:
    """The gated run's predictions (a path or URI) against the baseline's, row by row (baseline = A,
    run = B); both stream from wherever they are kept (a directory, or the artifact store).
    Segmentation: paired over images, with the Wilcoxon test (cluster/stats/segmentation_compare.py)."""
    mine, theirs = open_predictions(str(predictions)), run_predictions(baseline["artifact_path"])
    who = {"baseline": baseline["id"], "baseline_model": baseline["model_id"]}
    if task == "segmentation":
        seg = compare_sources(theirs, mine, labels, "miou", gate.gate_bootstrap, seed)
        p = seg["wilcoxon"]["p_value"]
        return {**who, "n": seg["n"], "metrics": seg["metrics"], "p_value": p, "test": "Wilcoxon"}
    counts, diffs = compare_predictions(theirs, mine, labels, gate.gate_bootstrap, seed)
    return {
        **who,
        "n": int(counts.cm_a.sum()),
        "metrics": diffs,
        "mcnemar_p": mcnemar_exact(counts.b, counts.c),
    }
