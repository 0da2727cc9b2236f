"""Sharded evaluation on Ray Data: batch inference + exact metrics in one pass.

    python -m jobs.evaluate --model best --data data/sample/test.parquet --out out/eval

Pipeline: the input is planned into shards (cluster.data) -> Ray Data read tasks
-> a pool of inference actors (one model each, ``ActorPoolStrategy``) that emit
predictions plus the batch's sufficient statistics (cluster.metrics) -> the
driver streams predictions into predictions.parquet in input order and adds up
the statistics (bounded size, whatever the number of rows) -> metrics.json,
report.html, and the run in the registry.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import typer

from cluster.config import DataSpec, EvaluateSpec, to_dict
from cluster.errors import UserError, first_items
from cluster.registry import Registry

ARTIFACTS = ("metrics.json", "predictions.parquet", "report.html")


@dataclass
class EvalResult:
    run_id: str
    out: Path
    metrics: dict


# ------------------------------------------------------------------ the inference actor


class Predictor:
    """One model per actor: text batch in, predictions + sufficient statistics out."""

    def __init__(self, model_path: str, labels: list[str], spec: EvaluateSpec, gpus: float):
        import torch

        from cluster.modeling import load_classifier, pick_device, resolve_precision
        from cluster.runtime import worker_threads

        torch.set_num_threads(worker_threads())  # Ray's OMP_NUM_THREADS alone is not honoured
        self.device = pick_device(gpus)
        self.model, self.tokenizer, _ = load_classifier(model_path, device=self.device)
        self.precision = resolve_precision(spec.precision, self.device)
        self.labels = np.array(labels, dtype=object)
        self.label2id = {lab: i for i, lab in enumerate(labels)}
        self.spec = spec
        self.ready_at = time.time()  # wall clock: model loaded, inference can start

    def __call__(self, batch: pa.Table) -> pa.Table:
        from cluster.metrics import batch_stats
        from cluster.modeling import predict_proba

        s = self.spec
        probs = predict_proba(
            self.model,
            self.tokenizer,
            batch["text"].to_pylist(),
            max_length=s.max_length,
            precision=self.precision,
            batch_size=s.batch_size,
        )
        rows = batch["row"].to_numpy()
        y_true = np.array([self.label2id[lab] for lab in batch["label"].to_pylist()], dtype=np.int64)
        slices = batch["slice"].to_numpy(zero_copy_only=False) if "slice" in batch.column_names else None
        stats = batch_stats(y_true, probs, rows=rows, bootstrap=s.bootstrap, seed=s.seed, slices=slices)
        pred = probs.argmax(1)
        k = probs.shape[1]
        out = {
            "row": batch["row"],
            "label": batch["label"],
            "pred": pa.array(self.labels[pred].tolist()),
            "score": pa.array(probs[np.arange(len(pred)), pred]),
            "probs": pa.ListArray.from_arrays(
                pa.array(np.arange(0, len(pred) * k + 1, k, dtype=np.int32)), pa.array(probs.ravel())
            ),
        }
        if "id" in batch.column_names:
            out["id"] = batch["id"]
        # The batch's statistics ride along in the first row (a few KB whatever the rows).
        payload = pickle.dumps(
            {"stats": stats, "precision": self.precision, "device": self.device, "ready_at": self.ready_at}
        )
        out["_stats"] = pa.array([payload] + [b""] * (len(pred) - 1), pa.binary())
        return pa.table(out)


# ------------------------------------------------------------------ orchestration


def run_evaluate(spec: EvaluateSpec, registry: Registry | None = None) -> EvalResult:
    """Evaluate ``spec.model`` on ``spec.data``; write artifacts and register the run."""
    from cluster.data import scan
    from cluster.modeling import resolve_model

    registry = registry or Registry()
    check_spec(spec)
    model = resolve_model(spec.model, registry)
    labels = require_labels(model)
    t0 = time.perf_counter()
    summary = scan(spec.data, spec.limit)
    check_labels(summary.label_counts, labels, spec.data)
    timings = {"scan_s": time.perf_counter() - t0}
    out = prepare_out(spec)
    with registry.run(
        "evaluate",
        to_dict(spec),
        owner=spec.owner,
        dataset_path=spec.data.path,
        dataset_fingerprint=summary.fingerprint,
        model_id=model.model_id,
    ) as run_id:
        out = out or registry.run_dir(run_id)
        try:
            metrics = _evaluate_into(out, spec, model, labels, summary, run_id, timings)
        except BaseException:
            _remove_artifacts(out)
            raise
        registry.finish_run(run_id, metrics=_headline(metrics), artifact_path=str(out))
    return EvalResult(run_id, out, metrics)


def _evaluate_into(out: Path, spec, model, labels, summary, run_id: str, timings: dict) -> dict:
    from cluster.metrics import finalize, slice_metrics
    from cluster.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    _remove_artifacts(out)  # an overwritten run leaves nothing of its own behind
    t0 = time.perf_counter()
    stats, info = run_pipeline(spec, model.path, labels, out / ".predictions.parquet.tmp", timings)
    timings["total_s"] = timings["scan_s"] + time.perf_counter() - t0
    metrics = finalize(stats, labels)
    if spec.data.slice_column:
        metrics["slices"] = slice_metrics(stats, labels)
    metrics.update(
        model={"id": model.model_id, "path": str(model.path)},
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


def run_pipeline(spec: EvaluateSpec, model_path: Path, labels: list[str], pred_path: Path, timings: dict):
    """Ray Data read -> actor-pool inference -> streamed Parquet + merged statistics."""
    import pyarrow.parquet as pq
    import ray

    from cluster.data import to_ray_dataset
    from cluster.metrics import empty_stats
    from cluster.runtime import init_ray

    t0 = time.perf_counter()
    init_ray()
    timings["ray_init_s"] = time.perf_counter() - t0
    workers, cpus, gpus = plan_workers(spec)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # input order out
    ds = to_ray_dataset(spec.data, spec.limit).map_batches(
        Predictor,
        fn_constructor_args=(str(model_path), labels, spec, gpus),
        batch_format="pyarrow",
        batch_size=None,  # one shard per actor call; texts length-sorted within it
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus,
        num_gpus=gpus,
    )
    stats, info, writer = empty_stats(len(labels), spec.bootstrap), {}, None
    first_ready = None  # wall-clock time the first actor had its model loaded
    rename = {"id": spec.data.id_column} if spec.data.id_column else {}
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            for payload in batch["_stats"].to_pylist():
                if payload:
                    part = pickle.loads(payload)
                    stats, info = stats + part["stats"], part
                    first_ready = min(first_ready or part["ready_at"], part["ready_at"])
            table = batch.drop_columns(["_stats"]).rename_columns(
                [rename.get(c, c) for c in batch.column_names if c != "_stats"]
            )
            writer = writer or pq.ParquetWriter(pred_path, table.schema)
            writer.write_table(table)
    finally:
        if writer:
            writer.close()
    t_start = t0 + timings["ray_init_s"]
    timings["pipeline_s"] = time.perf_counter() - t_start  # actors' model loading included
    timings["rows_per_s"] = stats.n / timings["pipeline_s"]
    timings.update(_steady_rate(first_ready, stats.n))
    return stats, {"precision": info.get("precision"), "device": info.get("device"), "workers": workers}


def _steady_rate(ready_at: float | None, n: int) -> dict[str, float]:
    """Rows/s from the first actor's model being ready to the last output (conservative:
    excludes Ray start-up and the first model load, includes any later actor's load)."""
    if ready_at is None:
        return {}
    return {"steady_rows_per_s": n / max(time.time() - ready_at, 1e-9)}


def plan_workers(spec: EvaluateSpec) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for the connected cluster.

    GPU clusters: one actor per GPU. CPU only: one single-threaded actor per CPU
    (measured on 2 cores, bf16: 2 actors x 1 thread gave 585-613 rows/s against
    520-542 for 1 actor x 2 threads, on the same 3,725 tweets).
    """
    from cluster.runtime import cluster_resources, max_gpus_per_node

    res = cluster_resources()
    total_gpus = res.get("GPU", 0.0)
    gpus = spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if total_gpus else 0.0)
    if gpus > 0 and gpus > max_gpus_per_node():
        raise UserError(
            f"--gpus-per-worker {gpus:g}: no node has that many GPUs (largest: {max_gpus_per_node():g})"
        )
    cpus_total = max(1, int(res.get("CPU", 1)))
    if gpus > 0:
        return spec.workers or max(1, int(total_gpus // gpus)), 1.0, gpus
    workers = spec.workers or cpus_total
    return workers, float(max(1, cpus_total // workers)), 0.0


# ------------------------------------------------------------------ checks at the boundary


def check_spec(spec: EvaluateSpec) -> None:
    for name in ("batch_size", "max_length"):
        if getattr(spec, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(spec, name)}")
    for name in ("workers", "limit"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    if spec.bootstrap < 0:
        raise UserError(f"--bootstrap must be 0 (off) or more, got {spec.bootstrap}")
    if spec.gpus_per_worker is not None and spec.gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker must be 0 or more, got {spec.gpus_per_worker}")
    if not spec.data.label_column:
        raise UserError("evaluation needs a label column (--label-column)")


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


def prepare_out(spec: EvaluateSpec) -> Path | None:
    """The --out directory, refusing one that holds another run unless --overwrite."""
    if spec.out is None:
        return None
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
    """What the registry keeps of a run's metrics (the full file stays in the artifacts)."""
    keep = (
        "n",
        "labels",
        "accuracy",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "f1_micro",
        "f1_weighted",
        "log_loss",
        "ece",
        "ci95",
        "precision_mode",
        "timings",
    )
    return {k: metrics[k] for k in keep if k in metrics}


# ------------------------------------------------------------------ command line


def command(
    model: str = typer.Option("best", help="Model dir, registered id, alias (best, serving) or base."),
    data: str = typer.Option(..., help="Parquet/CSV/JSONL file, directory, glob or URI."),
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = typer.Option(None, help="Copied into predictions.parquet."),
    slice_column: str | None = typer.Option(None, help="Metrics per value of this column."),
    out: str | None = typer.Option(None, help="Output dir (default: the run's artifact dir)."),
    batch_size: int = typer.Option(64, help="Rows per forward pass."),
    workers: int | None = typer.Option(None, help="Inference actors (default: per GPU, or per 2 CPUs)."),
    gpus_per_worker: float | None = typer.Option(None, help="Default: 1 when the cluster has GPUs."),
    precision: str = typer.Option("auto", help="auto | fp32 | bf16 | fp16 (auto: bf16 where native)."),
    max_length: int = typer.Option(128, help="Tokens per text (longer texts are truncated)."),
    bootstrap: int = typer.Option(1000, help="Poisson bootstrap replicates for 95% CIs (0 = off)."),
    limit: int | None = typer.Option(None, help="Evaluate only the first N rows."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    owner: str | None = typer.Option(None, help="Recorded owner (default: OS user)."),
    overwrite: bool = typer.Option(False, help="Allow --out to hold an earlier run."),
    address: str | None = typer.Option(None, help="http://HEAD:8265 submits a Ray job (or RAY_ADDRESS)."),
    wait: bool = typer.Option(False, help="With --address: stream logs, exit with the job's outcome."),
) -> None:
    """Sharded evaluation: metrics.json, predictions.parquet, report.html; registers the run."""
    from jobs.submit import own_argv, submit_if_remote

    if submit_if_remote("jobs.evaluate", own_argv("evaluate"), address, wait, [data, out, model]):
        return
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"--precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    spec = EvaluateSpec(
        model=model,
        data=DataSpec(data, text_column, label_column, id_column, slice_column),
        out=out,
        batch_size=batch_size,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        precision=precision,
        max_length=max_length,
        bootstrap=bootstrap,
        limit=limit,
        seed=seed,
        owner=owner,
        overwrite=overwrite,
    )
    result = run_evaluate(spec)
    print_summary(result)


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
    for key in ("accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted", "log_loss", "ece"):
        ci = m["ci95"].get(key)
        table.add_row(key, f"{m[key]:.4f}", f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(table)
    console.print(f"run {result.run_id}; artifacts in {result.out}")


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.evaluate")
