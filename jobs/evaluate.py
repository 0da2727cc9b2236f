"""Sharded evaluation on Ray Data: batch inference + exact metrics in one pass.

    python -m jobs.evaluate --model best --data data/sample/test.parquet --out out/eval
    evalctl evaluate --config jobs/configs/evaluate.yaml --limit 100

Steps: resolve the model -> validate and fingerprint the data -> the pipeline
(jobs/predictor.py: shards -> Ray Data read tasks -> a pool of inference actors ->
predictions streamed to Parquet, statistics merged on the driver) -> metrics.json,
report.html, and the run in the registry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.artifacts import publish, remove
from cluster.config import DataSpec, EvaluateSpec
from cluster.errors import UserError, first_items
from cluster.metrics import METRICS, metric_names
from cluster.registry import Registry, new_id
from jobs.spec_cli import Workload, options, spec_command

log = logging.getLogger(__name__)
ARTIFACTS = ("metrics.json", "predictions.parquet", "report.html")


@dataclass
class EvalResult:
    run_id: str
    out: str  # the artifacts' directory or URI
    metrics: dict


# ------------------------------------------------------------------ orchestration


def run_evaluate(spec: EvaluateSpec, registry: Registry | None = None) -> EvalResult:
    """Evaluate ``spec.model`` on ``spec.data``; write artifacts and register the run."""
    from cluster.data import scan
    from cluster.modeling import resolve_model

    registry = registry or Registry()
    model = resolve_model(spec.model, registry)
    labels = require_labels(model)
    t0 = time.perf_counter()
    summary = scan(spec.data, spec.limit, spec.rows_per_shard)
    check_labels(summary.label_counts, labels, spec.data)
    timings = {"scan_s": time.perf_counter() - t0}
    run_id = new_id("evaluate")
    target = artifact_target(spec, run_id, registry)
    with (
        target.held(registry),
        registry.run(
            "evaluate",
            spec.model_dump(mode="json"),
            owner=spec.owner,
            dataset_path=spec.data.path,
            dataset_fingerprint=summary.fingerprint,
            model_id=model.model_id,
            run_id=run_id,
        ),
    ):
        try:
            metrics = _evaluate_into(target.local, spec, model, labels, summary, run_id, timings)
            publish(target.local, target.dest, last="metrics.json")  # metrics.json last: complete
        except BaseException:
            _remove_artifacts(target.local)
            if target.remote:
                remove(target.dest)
            raise
        finally:
            target.cleanup()
        registry.finish_run(run_id, metrics=_headline(metrics), artifact_path=target.dest)
    return EvalResult(run_id, target.dest, metrics)


def _evaluate_into(out: Path, spec, model, labels, summary, run_id: str, timings: dict) -> dict:
    from cluster.metrics import finalize, slice_metrics
    from cluster.report import write_report
    from jobs.predictor import run_pipeline

    out.mkdir(parents=True, exist_ok=True)
    _remove_artifacts(out)  # an overwritten run leaves nothing of its own behind
    t0 = time.perf_counter()
    stats, info = run_pipeline(spec, model.source, labels, out / ".predictions.parquet.tmp", timings)
    timings["total_s"] = timings["scan_s"] + time.perf_counter() - t0
    metrics = finalize(stats, labels)
    if spec.data.slice_column:
        metrics["slices"] = slice_metrics(stats, labels)
    metrics.update(
        model={"id": model.model_id, "path": model.location or str(model.path)},
        dataset={
            "path": spec.data.path,
            "fingerprint": summary.fingerprint,
            "rows": summary.num_rows,
            "text_column": spec.data.text_column,
            "label_column": spec.data.label_column,
        },
        precision_mode=info["precision"],
        device=info["device"],
        run_id=run_id,
        workers=info["workers"],
        worker_plan=info["worker_plan"],
        recovery=info["recovery"],
        batch_size=spec.batch_size,
        max_length=spec.max_length,
        bootstrap=spec.bootstrap,
        seed=spec.seed,
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    (out / ".predictions.parquet.tmp").replace(out / "predictions.parquet")
    write_report(metrics, out / "report.html")
    _write_json_atomic(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


# ------------------------------------------------------------------ checks at the boundary


def require_labels(model) -> list[str]:
    if model.labels is None:
        raise UserError(
            f"model {model.model_id} has no id2label (not a fine-tuned classifier); evaluate "
            "a model from `evalctl sweep`, or a directory whose config.json has id2label"
        )
    return model.labels


def check_labels(counts: dict[str, int], labels: list[str], data: DataSpec) -> None:
    unknown = {lab: n for lab, n in counts.items() if lab not in labels}
    if unknown:
        shown = first_items([f"{lab!r} ({n} rows)" for lab, n in sorted(unknown.items())])
        raise UserError(
            f'labels in "{data.label_column}" of {data.path} unknown to the model: {shown}; '
            f"the model predicts {', '.join(labels)}"
        )


@dataclass
class ArtifactTarget:
    """Where a run's artifacts are written (``local``) and where they are kept (``dest``: the same
    directory, or a URI in the artifact store that ``local``, a staging directory, is published to)."""

    run_id: str
    local: Path
    dest: str
    out: Path | None = None  # --out: held by this run while it runs (cluster/outlock.py)
    staging: Path | None = None

    @property
    def remote(self) -> bool:
        return self.staging is not None

    def held(self, registry: Registry):
        from cluster.outlock import hold

        return hold(self.out, self.run_id, registry) if self.out else contextlib.nullcontext()

    def cleanup(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def artifact_target(spec: EvaluateSpec, run_id: str, registry: Registry) -> ArtifactTarget:
    """--out DIR (held while the run writes it), else the run's place in the artifact store
    (EVALCLUSTER_ARTIFACTS: a directory, or a URI written through a local staging directory)."""
    from cluster.artifacts import ArtifactStore

    out = prepare_out(spec)
    if out is not None:
        return ArtifactTarget(run_id, out, str(out), out=out)
    store = ArtifactStore.from_env(registry.home)
    dest = store.run_location(run_id)
    if not store.remote:
        return ArtifactTarget(run_id, Path(dest), dest)
    store.check_writable()  # before the run is recorded: a bad bucket is one line, nothing recorded
    staging = registry.home / "staging" / run_id
    return ArtifactTarget(run_id, staging, dest, staging=staging)


def prepare_out(spec: EvaluateSpec) -> Path | None:
    """The --out directory, refusing one that holds another run unless --overwrite."""
    if spec.out is None:
        return None
    if "://" in spec.out:
        raise UserError(
            f"--out {spec.out}: --out takes a local directory; runs go to the artifact store "
            "($EVALCLUSTER_ARTIFACTS, e.g. s3://bucket/prefix) when --out is not given"
        )
    out = Path(spec.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    held = [a for a in ARTIFACTS if (out / a).exists()]
    if held and not spec.overwrite:
        raise UserError(
            f"--out {out} already holds another run ({', '.join(held)}); "
            "choose another directory or pass --overwrite"
        )
    return out.resolve()


def _remove_artifacts(out: Path) -> None:
    for name in (*ARTIFACTS, ".predictions.parquet.tmp", ".metrics.json.tmp"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _headline(metrics: dict) -> dict:
    """What the registry keeps of a run's metrics: every scalar of the metric table, the CIs,
    size, labels, precision, timings, and where it ran (per actor: node and rows; recoveries
    from lost nodes); the full file stays in the artifacts."""
    keep = ("n", "labels", *METRICS, "ci95", "precision_mode", "timings", "workers", "recovery")
    return {k: metrics[k] for k in keep if k in metrics}


# ------------------------------------------------------------------ command line


def print_summary(result: EvalResult) -> None:
    from rich.table import Table

    from jobs.entry import console

    m = result.metrics
    table = Table(
        "metric",
        "value",
        "95% CI",
        title=f"{m['model']['id']} on {m['n']} rows "
        f"({m['precision_mode']}, {m['timings']['rows_per_s']:.0f} rows/s)",
    )
    for key in metric_names(headline=True):
        ci = m["ci95"].get(key)
        table.add_row(key, f"{m[key]:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(table)
    console.print(where_it_ran(m))
    console.print(f"run {result.run_id}; artifacts in {result.out}")


def where_it_ran(m: dict) -> str:
    """One line: actors, nodes, and any recovery from lost workers."""
    workers = m.get("workers") or []
    line = f"{len(workers)} inference actor(s) on {len({w['node'] for w in workers})} node(s)"
    lost = (m.get("recovery") or {}).get("lost_workers") or []
    if lost:
        line += (
            f"; {len(lost)} lost worker(s): their {lost[0]['shards_left']} unfinished shard(s) "
            "ran again on the nodes left, each shard counted once"
        )
    return line


def _run(spec: EvaluateSpec, address: str | None = None, **_) -> None:
    from cluster.runtime import init_ray

    if address:  # a Ray address (HOST:6379, ray://...): join that cluster (job-server URLs submit)
        init_ray(address)
    print_summary(run_evaluate(spec))


WORKLOAD = Workload(
    spec=EvaluateSpec,
    options=options(EvaluateSpec, ["model", "data.*", "*"], flags={"data.path": "--data"}),
    run=_run,
    module="jobs.evaluate",
)
command = spec_command(
    WORKLOAD, "Sharded evaluation: metrics.json, predictions.parquet, report.html; registers the run."
)


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.evaluate")
