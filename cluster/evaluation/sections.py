"""The sections an evaluation adds beside its scores: the gate, the lineage, what the registry keeps.

cluster/evaluation/run.py runs the pipeline (the task's statistics become the scores and the
analyses' sections); these functions judge the quality gate, say where the model came from and
what the registry keeps of a run.
"""

from __future__ import annotations

from pathlib import Path

from cluster.errors import UserError
from cluster.evaluation.baseline import paired_with, resolve_baseline


def gate_baseline(spec, registry, summary, labels: list[str]) -> dict | None:
    """The gate's baseline run on the same data (refused, one line, when there is none)."""
    if spec.gate is None or spec.gate.baseline is None:
        return None
    return resolve_baseline(registry, spec.gate.baseline, summary.fingerprint, spec.data.path, labels)


def judge_gate(spec, metrics: dict, predictions: Path, baseline: dict | None) -> dict:
    """The gate's verdicts (cluster/stats/gates.py); with a baseline, paired against its predictions."""
    from cluster.stats.gates import judge

    paired = None
    if baseline:
        args = (metrics["labels"], spec.gate, spec.seed, metrics.get("task"))
        paired = paired_with(baseline, predictions, *args)
    return judge(spec.gate, metrics, paired)


def model_lineage(model, registry) -> dict:
    """Where the model came from (its evalcluster.json), with the training data's fingerprint
    (from the lineage, else from the sweep run that made it)."""
    from cluster.models.modeldir import read_lineage

    lin = read_lineage(model.path)
    keep = (
        "base_model",
        "sweep",
        "sweep_run",
        "pretrain_run",
        "trial_id",
        "trial_config",
        "train_data",
        "train_fingerprint",
        "validation_data",
        "validation_metrics",
    )
    out = {k: lin[k] for k in keep if k in lin}
    if "train_fingerprint" not in out and lin.get("sweep_run"):
        try:
            out["train_fingerprint"] = registry.get_run(lin["sweep_run"])["dataset_fingerprint"]
        except UserError:
            out["train_fingerprint"] = None  # the sweep's record is not in this registry
    return out


def headline_extras(metrics: dict) -> dict:
    """What the registry keeps besides the metric table: the gate's verdict, the weak slices'
    names, the slice column's per-value scores (leaderboards rank them: cluster/registry/scores.py)
    and, for a robustness run, each perturbation's scores."""
    out = {}
    if "slices" in metrics:
        out["slices"] = {name: _slice_digest(s) for name, s in metrics["slices"]["slices"].items()}
    if "gate" in metrics:
        out["gate"] = {"passed": metrics["gate"]["passed"], "baseline": metrics["gate"]["baseline"]}
    if "auto_slices" in metrics:
        out["weak_slices"] = [w["slice"] for w in metrics["auto_slices"]["weak"]]
    if "robustness" in metrics:
        out["robustness"] = robustness_digest(metrics["robustness"])
    return out


def _slice_digest(s: dict) -> dict:
    """A slice's size, headline count scores (accuracy, macro F1, ...) and their intervals."""
    from cluster.stats.metrics import metric_names

    kept = {k: s[k] for k in metric_names(family="counts", headline=True) if k in s}
    ci = {k: s["ci95"][k] for k in kept if k in s.get("ci95", {})}
    return {"n": s.get("n"), **kept, "ci95": ci}


def robustness_digest(rob: dict) -> dict:
    """Per perturbation: the perturbed score, its change (with the paired CI), flip rate, McNemar p."""
    per = {}
    for kind, r in rob["perturbations"].items():
        per[kind] = {
            "flip_rate": r["flip_rate"],
            "mcnemar_p": r["mcnemar_p"],
            **{m: d["b"] for m, d in r["metrics"].items()},
            "delta": {m: d["diff"] for m, d in r["metrics"].items()},
            "delta_ci95": {m: d["ci95"] for m, d in r["metrics"].items()},
        }
    return {"rate": rob["rate"], "seed": rob["seed"], "perturbations": per}


def run_info(job, run_id: str) -> dict:
    """metrics.json's record of the run: model, lineage, dataset as given, settings, Ray.
    A text run's ``dataset`` is as it always was; an image run's says ``modality: image`` and
    names its ``image_column``; a segmentation run's its ``mask_column`` and ``ignore_index``; a
    translation run's its source, target and reference columns."""
    from cluster.data.files import input_column

    spec, model, summary = job.spec, job.model, job.summary
    dataset = {"path": job.given.data.path, "fingerprint": summary.fingerprint, "rows": summary.num_rows}
    if job.translation:
        d = spec.data
        dataset.update(source_column=d.source_column, target_column=d.target_column)
        dataset.update(reference_columns=d.reference_columns, id_column=d.id_column)
    elif model.modality == "text":
        dataset["text_column"] = spec.data.text_column
    else:
        dataset.update(modality=model.modality, image_column=input_column(spec.data, model.modality))
    if job.task == "segmentation":
        dataset.update(mask_column=spec.data.mask_column, ignore_index=spec.data.ignore_index)
    elif not job.translation:
        dataset.update(label_column=spec.data.label_column, slice_column=spec.data.slice_column)
    return {
        "model": {"id": model.model_id, "path": model.location or str(model.path)},
        "lineage": model_lineage(model, job.registry),
        "dataset": dataset,
        "run_id": run_id,
        "batch_size": spec.batch_size,
        "max_length": spec.max_length,
        "bootstrap": spec.bootstrap,
        "seed": spec.seed,
        "ray": job.joined,
    }
