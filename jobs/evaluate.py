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

import typer

from cluster.artifacts import publish, remove
from cluster.config import DataSpec, EvaluateSpec
from cluster.errors import UserError, first_items
from cluster.metrics import METRICS, metric_names
from cluster.registry import Registry, new_id
from jobs.registry_cli import cell
from jobs.spec_cli import Workload, options, spec_command

log = logging.getLogger(__name__)
ARTIFACTS = ("metrics.json", "predictions.parquet", "report.html")


@dataclass
class EvalResult:
    run_id: str
    out: str  # the artifacts' directory or URI
    metrics: dict


# ------------------------------------------------------------------ orchestration


def run_evaluate(spec: EvaluateSpec, registry: Registry | None = None, kind: str = "evaluate") -> EvalResult:
    """Evaluate ``spec.model`` on ``spec.data``; write artifacts and register the run (as ``kind``)."""
    from cluster.data import scan
    from cluster.modeling import resolve_model
    from jobs.gate import resolve_baseline

    registry = registry or Registry()
    model = resolve_model(spec.model, registry)
    labels = require_labels(model)
    t0 = time.perf_counter()
    summary = scan(spec.data, spec.limit, spec.rows_per_shard)
    check_labels(summary.label_counts, labels, spec.data)
    baseline = None
    if spec.gate is not None:
        baseline = resolve_baseline(registry, spec.gate.baseline, summary.fingerprint, spec.data.path, labels)
    timings = {"scan_s": time.perf_counter() - t0}
    run_id = new_id(kind)
    target = artifact_target(spec, run_id, registry)
    with (
        target.held(registry),
        registry.run(
            kind,
            spec.model_dump(mode="json"),
            owner=spec.owner,
            dataset_path=spec.data.path,
            dataset_fingerprint=summary.fingerprint,
            model_id=model.model_id,
            run_id=run_id,
        ),
    ):
        context = {
            "registry": registry,
            "model": model,
            "summary": summary,
            "baseline": baseline,
            "t_start": t0,
        }
        try:
            metrics = _evaluate_into(target.local, spec, labels, run_id, timings, context)
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


def _evaluate_into(out: Path, spec, labels, run_id: str, timings: dict, context: dict) -> dict:
    from cluster.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    _remove_artifacts(out)  # an overwritten run leaves nothing of its own behind
    metrics = _infer(out, spec, labels, timings, context["model"])
    metrics.update(_run_info(spec, context, run_id))
    (out / ".predictions.parquet.tmp").replace(out / "predictions.parquet")
    if spec.gate is not None:
        t0 = time.perf_counter()
        metrics["gate"] = _gate(spec, metrics, out / "predictions.parquet", context["baseline"])
        timings["gate_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - context["t_start"]
    metrics["timings"] = {k: round(v, 3) for k, v in timings.items()}
    write_report(metrics, out / "report.html")
    _write_json_atomic(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


def _infer(out: Path, spec, labels: list[str], timings: dict, model) -> dict:
    """The pipeline (with the analyses the spec asks for) -> metrics.json's scores and run info."""
    import ray

    from cluster.analyses import Analyses
    from cluster.runtime import init_ray
    from jobs.explainer import start_explainer
    from jobs.predictor import run_pipeline

    t0 = time.perf_counter()
    init_ray()
    timings["ray_init_s"] = time.perf_counter() - t0
    analyses = Analyses.for_spec(spec, len(labels))
    explainer = start_explainer(model.path, spec.max_length) if spec.mistakes else None
    try:
        stats, info, parts = run_pipeline(
            spec, model.source, labels, out / ".predictions.parquet.tmp", timings, analyses
        )
        metrics = _metrics(stats, parts, spec, labels, timings, explainer)
    finally:
        if explainer is not None:
            ray.kill(explainer)
    metrics.update(precision_mode=info["precision"], device=info["device"], workers=info["workers"])
    return metrics


def _metrics(stats, parts: dict, spec, labels: list[str], timings: dict, explainer) -> dict:
    """metrics.json's scores: the core statistics, the analyses' sections, the mistakes' attributions."""
    from cluster.analyses import finalize as finalize_parts
    from cluster.metrics import finalize, slice_metrics

    t0 = time.perf_counter()
    metrics = finalize(stats, labels)
    if spec.data.slice_column:
        metrics["slices"] = slice_metrics(stats, labels)
    finalize_parts(parts, spec, labels, metrics)
    timings["finalize_s"] = time.perf_counter() - t0
    if explainer is not None:
        from jobs.explainer import add_attributions

        t0 = time.perf_counter()
        add_attributions(metrics.get("mistakes", []), explainer)
        timings["attributions_s"] = time.perf_counter() - t0
    return metrics


def _run_info(spec, context: dict, run_id: str) -> dict:
    model, summary = context["model"], context["summary"]
    return {
        "model": {"id": model.model_id, "path": model.location or str(model.path)},
        "lineage": model_lineage(model, context["registry"]),
        "dataset": {
            "path": spec.data.path,
            "fingerprint": summary.fingerprint,
            "rows": summary.num_rows,
            "text_column": spec.data.text_column,
            "label_column": spec.data.label_column,
            "slice_column": spec.data.slice_column,
        },
        "run_id": run_id,
        "batch_size": spec.batch_size,
        "max_length": spec.max_length,
        "bootstrap": spec.bootstrap,
        "seed": spec.seed,
    }


def _gate(spec, metrics: dict, predictions: Path, baseline: dict | None) -> dict:
    from cluster.gates import judge
    from jobs.gate import paired_with

    paired = paired_with(baseline, predictions, metrics["labels"], spec.gate, spec.seed) if baseline else None
    return judge(spec.gate, metrics, paired)


def model_lineage(model, registry: Registry) -> dict:
    """Where the model came from (its evalcluster.json), with the training data's fingerprint
    (from the lineage, else from the sweep run that made it)."""
    from cluster.modeling import read_lineage

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


def prepare_out(spec, artifacts: tuple[str, ...] = ARTIFACTS) -> Path | None:
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
    held = [a for a in artifacts if (out / a).exists()]
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
    size, labels, precision, timings, the gate's verdict, the weak slices' names and, for a
    robustness run, each perturbation's scores (the full file stays in the artifacts)."""
    keep = ("n", "labels", *METRICS, "ci95", "precision_mode", "timings")
    out = {k: metrics[k] for k in keep if k in metrics}
    if "gate" in metrics:
        out["gate"] = {"passed": metrics["gate"]["passed"], "baseline": metrics["gate"]["baseline"]}
    if "auto_slices" in metrics:
        out["weak_slices"] = [w["slice"] for w in metrics["auto_slices"]["weak"]]
    if "robustness" in metrics:
        out["robustness"] = robustness_digest(metrics["robustness"])
    return out


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


# ------------------------------------------------------------------ command line


def print_summary(result: EvalResult) -> None:
    from rich.table import Table

    from jobs.entry import console

    m = result.metrics
    table = Table(
        "metric",
        "value",
        "95% CI",
        title=f"{cell(m['model']['id'])} on {m['n']} rows "
        f"({m['precision_mode']}, {m['timings']['rows_per_s']:.0f} rows/s)",
    )
    for key in metric_names(headline=True):
        if key in m:
            ci = m["ci95"].get(key)
            value = "undefined" if m[key] is None else f"{m[key]:.4f}"
            table.add_row(key, value, f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    console.print(table)
    if "auto_slices" in m:
        print_weak_slices(m["auto_slices"])
    console.print(f"run {result.run_id}; artifacts in {result.out}")
    if "gate" in m:
        print_gate(m["gate"])


def print_weak_slices(auto: dict) -> None:
    from jobs.entry import console

    weak = auto["weak"]
    console.print(
        f"weak slices ({auto['metric']}, overall {auto['overall']:.4f}; {auto['correction']}): "
        + (", ".join(f"{cell(w['slice'])} {w[auto['metric']]:.3f} (n={w['n']})" for w in weak[:5]) or "none")
        + (f", ... ({len(weak) - 5} more)" if len(weak) > 5 else "")
    )


def print_gate(gate: dict) -> None:
    from cluster.gates import summary_line
    from jobs.entry import console

    for row in gate["conditions"]:  # one line each, never wrapped (CI logs grep them)
        console.print(row["line"], markup=False, soft_wrap=True)
    console.print(summary_line(gate), markup=False, soft_wrap=True)


def _run(spec: EvaluateSpec, **_) -> None:
    result = run_evaluate(spec)
    print_summary(result)
    if "gate" in result.metrics and not result.metrics["gate"]["passed"]:
        raise typer.Exit(1)


GATE_OPTIONS = ["gate.min", "gate.max", "gate.use_ci_lower", "gate.baseline", "gate.max_drop"]
WORKLOAD = Workload(
    spec=EvaluateSpec,
    options=options(EvaluateSpec, ["model", "data.*", "*", *GATE_OPTIONS], flags={"data.path": "--data"}),
    run=_run,
    module="jobs.evaluate",
)
command = spec_command(
    WORKLOAD,
    "Sharded evaluation: metrics.json, predictions.parquet, report.html; registers the run. "
    "With --min/--max/--max-drop it also checks a quality gate (exit code 1 when it fails).",
)


if __name__ == "__main__":
    from jobs.entry import run

    run(command, prog="python -m jobs.evaluate")
