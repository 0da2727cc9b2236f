"""A sweep's outcome, read from storage: the best complete checkpoint, exported and registered.

The best checkpoint is chosen among the *complete* checkpoints every trial left on storage
(cluster/train/checkpoint.py manifests), by the validation metric each one recorded, not from the
driver's bookkeeping: after a killed driver and `evalctl sweep resume`, the driver may
never have heard of a trial's last checkpoint, or may remember one that was deleted since.
Checkpoints are only ever deleted in favour of a better or newer one, so the best
validation any trial reported is always on storage.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from cluster.registry.record import Registry, new_id
from cluster.specs.workloads import SweepSpec
from cluster.stats.metrics import metric_names

log = logging.getLogger(__name__)


def export_best(spec: SweepSpec, results, registry: Registry, run_id: str, model, labels) -> dict:
    """Best checkpoint -> model directory in the registry (jobs/sweep.py: promote_best sets the alias
    ``best``); returns the sweep's summary."""
    candidates = [c for r in results for c in _checkpoints(r, spec)]
    if not candidates:
        raise RuntimeError(f"no trial left a complete checkpoint; first error: {results.errors[:1]}")
    sign = 1 if spec.metric_mode == "max" else -1
    best, path, manifest = max(candidates, key=lambda c: sign * c[2]["metrics"][spec.metric])
    keep = (*metric_names(headline=True), spec.metric, "epoch", "step")
    validation = {k: float(manifest["metrics"][k]) for k in dict.fromkeys(keep) if k in manifest["metrics"]}
    trial_id = best.metrics.get("trial_id") or Path(best.path).name
    model_id = _register(spec, best, trial_id, (path, validation), registry, run_id, model, labels)
    details = [_trial_detail(r, spec) for r in results]
    return {
        "model_id": model_id,
        "best_trial": trial_id,
        "best_config": best.config,
        spec.metric: validation[spec.metric],
        "validation": validation,
        "trials": len(results),
        "errored_trials": len(results.errors),
        "trial_epochs": sum(d["epochs"] or 0 for d in details),
        "trial_details": details,
        "damaged_checkpoints": damaged_lines(details),
        "init": spec.init,
        "metric": spec.metric,
        "curves": [_curve(r, spec.metric) for r in results if r.metrics],
    }


def _checkpoints(result, spec: SweepSpec) -> list[tuple]:
    """(result, path, manifest) for each complete checkpoint of one trial that has the metric."""
    from cluster.train.checkpoint import complete_checkpoints

    complete, _ = complete_checkpoints(result.filesystem, result.path)
    ok = [(result, p, m) for p, m in complete if _finite(m.get("metrics", {}).get(spec.metric))]
    return ok


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _register(spec: SweepSpec, best, trial_id, chosen, registry: Registry, run_id, model, labels) -> str:
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    from cluster.models.cache import store_model
    from cluster.models.modality import load_trained
    from cluster.registry.artifacts import ArtifactStore

    path, validation = chosen
    model_id = new_id("m")
    lineage = {
        "base_model": model.model_id,
        "init": spec.init,
        "sweep_run": run_id,
        "sweep": spec.name,
        "trial_id": trial_id,
        "trial_config": best.config,
        "validation_metrics": validation,
        "validation_data": spec.validation.path,
        "train_data": spec.train.path,
        "labels": labels,
        "checkpoint": Path(path).name,
        "train_fingerprint": registry.get_run(run_id)["dataset_fingerprint"],
    }
    checkpoint = Checkpoint(path, filesystem=best.filesystem or pafs.LocalFileSystem())
    store = ArtifactStore.from_env(registry.home)
    with checkpoint.as_directory() as d:
        clf = load_trained(Path(d) / "model")  # a text or an image classifier (cluster/models/modality.py)
        # complete in the artifact store (a directory or a URI) before it is registered
        location, checksum = store_model(
            lambda out: clf.save(out, lineage), model_id, store, registry.home / "staging"
        )
    registry.register_model(
        location,
        checksum=checksum,
        run_id=run_id,
        base_model=model.model_id,
        lineage=lineage,
        metrics=validation,
        model_id=model_id,
    )
    log.info("registered %s (%s = %s)", model_id, spec.metric, validation[spec.metric])
    return model_id


def _trial_detail(result, spec: SweepSpec) -> dict:
    """A trial's config, how far it got, the steps it resumed from, and the nodes it ran on."""
    from cluster.train.checkpoint import complete_checkpoints
    from cluster.tune.trial import resume_notes

    df = result.metrics_dataframe
    rows = df if df is not None else None
    complete, _ = complete_checkpoints(result.filesystem, result.path)
    epochs = [float(m["metrics"].get("epoch", 0)) for _, m in complete[:1]]
    if result.metrics:
        epochs.append(float(result.metrics.get("epoch", 0)))
    column = lambda name: list(rows[name]) if rows is not None and name in rows else []  # noqa: E731
    return {
        "trial_id": result.metrics.get("trial_id") if result.metrics else Path(result.path).name,
        "config": result.config,
        "epochs": max(epochs) if epochs else None,
        "resumed_from_steps": sorted({int(x) for x in column("start_step") if x > 0}),
        "nodes": sorted({str(x) for x in column("node_id") if isinstance(x, str)}),
        "skipped_checkpoints": resume_notes(result.filesystem, result.path),
    }


def damaged_lines(details: list[dict]) -> list[str]:
    """One line per trial restart that skipped a damaged or incomplete checkpoint (the summary's
    warnings): what was skipped and why, and where the trial went on from."""
    lines = []
    for d in details:
        for event in d["skipped_checkpoints"]:
            skipped = "; ".join(f"{n['checkpoint']} ({n['why']})" for n in event["skipped"])
            went_on = f"resumed from {event['resumed_from']}" if event["resumed_from"] else "started over"
            lines.append(f"trial {d['trial_id']}: skipped {skipped}; {went_on}")
    return lines


def _curve(result, metric: str) -> dict:
    """A trial's learning curve: the validation metric at each validation, by trial-epoch (a
    validation reported again on resume (cluster/tune/trial.py) is one point)."""
    df = result.metrics_dataframe
    points = {}
    if df is not None and "epoch" in df and metric in df:
        points = {round(float(e), 4): float(v) for e, v in zip(df["epoch"], df[metric], strict=True)}
    return {
        "trial_id": result.metrics.get("trial_id"),
        "epoch": list(points),
        metric: list(points.values()),
    }


def write_report(storage: str, spec: SweepSpec, summary: dict) -> str | None:
    """report.html (learning curves, trials) beside the experiment; local storage only."""
    if "://" in storage:
        return None
    from cluster.report.sweep import write_sweep_report

    return str(write_sweep_report([summary], Path(storage) / spec.name / "report.html"))
