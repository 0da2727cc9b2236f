"""Sharded evaluation on Ray: batch inference + exact metrics in one pass.

    python -m jobs.evaluate --model best --data data/sample/test.parquet --out out/eval
    evalctl evaluate --config jobs/configs/evaluate.yaml --limit 100

Steps: resolve the model and plan the shards -> start Ray and the model actors while
the data is validated and fingerprinted -> the pipeline (cluster/evaluation/pipeline.py: shards ->
model actors (warm ones on a running head) -> predictions streamed to Parquet,
statistics merged on the driver) -> metrics.json, report.html, and the run in the
registry. metrics.json's ``timings`` say where the command's time went.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.clock import Phases, process_age_s
from cluster.errors import UserError, first_items
from cluster.registry.artifacts import publish, remove
from cluster.specs.workloads import DataSpec, EvaluateSpec
from jobs.spec_cli import Workload, options, spec_command

if TYPE_CHECKING:
    from cluster.registry.record import Registry

log = logging.getLogger(__name__)
ARTIFACTS = ("metrics.json", "predictions.parquet", "report.html")


@dataclass
class EvalResult:
    run_id: str
    out: str  # the artifacts' directory or URI
    metrics: dict


# ------------------------------------------------------------------ orchestration


def run_evaluate(
    spec: EvaluateSpec,
    registry: Registry | None = None,
    phases: Phases | None = None,
    kind: str = "evaluate",
    address: str | None = None,
) -> EvalResult:
    """Evaluate ``spec.model`` on ``spec.data``; write artifacts and register the run (as ``kind``).

    ``phases``: marks of the command so far (the CLI passes its start); the timings in metrics.json
    are differences of these marks (cluster/clock.py). ``address``: a Ray to join (cluster/ray/runtime.py).
    """
    from cluster.evaluation.pipeline import model_actors
    from cluster.evaluation.sections import gate_baseline
    from cluster.registry.record import Registry

    phases = phases or Phases()
    registry = registry or Registry()
    given = spec
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(
            tempfile.TemporaryDirectory(prefix="evalcluster-")
        )  # an image tree's index
        spec, model, labels, target, shards = _prepare(spec, registry, work, kind)
        stack.enter_context(target.held(registry))  # --out is this run's before anything starts
        # The data is validated and fingerprinted while Ray starts and the actors load the model.
        background = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="scan"))
        scanning = background.submit(_scan, spec, model.modality, phases)
        actors = stack.enter_context(model_actors(spec, model, labels, shards, phases, address))
        say_joined(actors.joined)
        summary = scanning.result()
        check_labels(summary.label_counts, labels, spec.data)
        baseline = gate_baseline(given, registry, summary, labels)
        job = _Job(spec, model, labels, summary, actors, phases, registry, baseline, kind, given)
        return _record(job, registry, target)


@dataclass
class _Job:
    """Everything one evaluation works with once its inputs are checked."""

    spec: EvaluateSpec
    model: object  # cluster.models.resolve.ModelRef
    labels: list[str]
    summary: object  # cluster.data.scan.DataSummary
    actors: object  # cluster.evaluation.pipeline.Actors (with the shards they get)
    phases: Phases
    registry: Registry
    baseline: dict | None  # the gate's baseline run (jobs/gate.py), None without one
    kind: str  # the run's kind in the registry: evaluate or robustness
    given: EvaluateSpec  # as the user gave it (``spec`` may read an image folder through its index)


def _record(job: _Job, registry: Registry, target: ArtifactTarget) -> EvalResult:
    """Run the evaluation as a registered run: failed (and no artifacts left) if anything raises."""
    spec, run_id = job.spec, target.run_id
    with registry.run(
        job.kind,
        job.given.model_dump(mode="json"),
        owner=spec.owner,
        dataset_path=job.given.data.path,
        dataset_fingerprint=job.summary.fingerprint,
        model_id=job.model.model_id,
        run_id=run_id,
    ):
        try:
            metrics = _evaluate_into(target.local, job, run_id)
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


def _prepare(spec: EvaluateSpec, registry: Registry, work: str, kind: str) -> tuple:
    """What must hold before anything starts: the model, its labels, where the artifacts go, the
    data's columns and shards (metadata only). Returns the spec to run (an image folder tree
    read through an index written into ``work``) and those."""
    from cluster.data.files import check_columns
    from cluster.data.scan import image_folder_spec
    from cluster.data.shards import plan_shards
    from cluster.models.modality import refuse_text_analyses
    from cluster.models.resolve import resolve_model
    from cluster.registry.record import new_id

    model = resolve_model(spec.model, registry)
    labels = require_labels(model)
    refuse_text_analyses(spec, model.modality, model.model_id)
    target = artifact_target(spec, new_id(kind), registry)  # --out checked, store writable
    spec = spec.model_copy(update={"data": image_folder_spec(spec.data, model.modality, work)})
    check_columns(spec.data, model.modality)
    _, shards = plan_shards(spec.data, spec.limit, spec.rows_per_shard)
    if not shards:
        raise UserError(f"dataset {spec.data.path} is empty (0 rows)")
    return spec, model, labels, target, shards


def _scan(spec: EvaluateSpec, modality: str, phases: Phases):
    from cluster.data.scan import scan

    phases.mark("scan_start")
    try:
        return scan(spec.data, spec.limit, spec.rows_per_shard, modality)
    finally:
        phases.mark("scan_end")


def say_joined(joined: str) -> None:
    """One line on stderr when the run uses a Ray it did not start (e.g. `evalctl cluster up`'s)."""
    from cluster.ray.runtime import joined_line

    line = joined_line(joined)
    if line:
        from jobs.entry import err_console

        err_console.print(line, markup=False)


def _evaluate_into(out: Path, job: _Job, run_id: str) -> dict:
    from cluster.evaluation.sections import judge_gate, run_info
    from cluster.report.html import write_report

    spec = job.spec
    out.mkdir(parents=True, exist_ok=True)
    _remove_artifacts(out)  # an overwritten run leaves nothing of its own behind
    tmp = out / ".predictions.parquet.tmp"
    metrics, took = _infer(job, tmp)
    metrics.update(run_info(job, run_id))
    tmp.replace(out / "predictions.parquet")
    if spec.gate is not None:
        job.phases.mark("gate_start")
        metrics["gate"] = judge_gate(spec, metrics, out / "predictions.parquet", job.baseline)
        job.phases.mark("gate_end")
    job.phases.mark("done")
    metrics["timings"] = {**timings(job.phases, metrics["n"]), **{k: round(v, 3) for k, v in took.items()}}
    write_report(metrics, out / "report.html")
    _write_json_atomic(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


def _infer(job: _Job, tmp: Path) -> tuple[dict, dict]:
    """The pipeline, with the analyses the spec asks for -> metrics.json's scores and the seconds
    of the steps besides the phases (analyses_s summed over actors, finalize_s, attributions_s)."""
    from cluster.evaluation.pipeline import Run, run_pipeline
    from cluster.evaluation.sections import scores
    from cluster.stats.analyses import Analyses

    spec, labels = job.spec, job.labels
    analyses = Analyses.for_spec(spec, len(labels))
    stats, info = run_pipeline(spec, job.actors, len(labels), tmp, job.phases, Run(spec.data, analyses))
    # Token attributions: text only (an image's saliency map is the scorer's /v1/explain), by
    # the run's model actors, which hold the model already (cluster/evaluation/explainer.py).
    explain = spec.mistakes and job.model.modality == "text"
    metrics, took = scores(stats, info["parts"], spec, labels, job.actors if explain else None)
    metrics.update({k: info[k] for k in ("device", "workers", "worker_plan", "recovery")})
    metrics["precision_mode"] = info["precision"]
    if job.model.modality == "image":
        from cluster.data.images import BadRow, bad_rows_report

        metrics["bad_rows"] = bad_rows_report([BadRow(r, why) for r, why in info["bad"]])
    return metrics, {"analyses_s": info["analyses_s"], **took}


def timings(phases: Phases, n: int) -> dict[str, float]:
    """The ``timings`` of metrics.json, in seconds (docs/contracts.md): consecutive phases of the
    command; ``scan_s`` runs beside ``ray_init_s`` and ``actors_ready_s``."""
    t = {
        "cli_start_s": phases.marks.get("cli_start_s"),
        "ray_init_s": phases.between("ray_start", "ray_up"),
        "scan_s": phases.between("scan_start", "scan_end"),
        "actors_ready_s": phases.between("ray_up", "actors_ready"),
        "first_batch_s": phases.between("actors_ready", "first_result"),
        "inference_s": phases.between("actors_ready", "last_result"),
        "finish_s": phases.between("last_result", "done"),
        "pipeline_s": phases.between("ray_up", "last_result"),
        "gate_s": phases.between("gate_start", "gate_end"),
        "total_s": phases.between("start", "done"),
    }
    if t["cli_start_s"] is not None and t["total_s"] is not None:
        t["process_s"] = round(t["cli_start_s"] + t["total_s"], 3)
    if t["pipeline_s"]:
        t["rows_per_s"] = round(n / t["pipeline_s"], 1)
    if t["inference_s"]:
        t["steady_rows_per_s"] = round(n / t["inference_s"], 1)
    return {k: v for k, v in t.items() if v is not None}


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
    out: Path | None = None  # --out: held by this run while it runs (cluster/registry/outlock.py)
    staging: Path | None = None

    @property
    def remote(self) -> bool:
        return self.staging is not None

    def held(self, registry: Registry):
        from cluster.registry.outlock import hold

        return hold(self.out, self.run_id, registry) if self.out else contextlib.nullcontext()

    def cleanup(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def artifact_target(spec: EvaluateSpec, run_id: str, registry: Registry) -> ArtifactTarget:
    """--out DIR (held while the run writes it), else the run's place in the artifact store
    (EVALCLUSTER_ARTIFACTS: a directory, or a URI written through a local staging directory)."""
    from cluster.registry.artifacts import ArtifactStore

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
    for p in (out / name for name in (*ARTIFACTS, ".predictions.parquet.tmp", ".metrics.json.tmp")):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _headline(metrics: dict) -> dict:
    """What the registry keeps of a run's metrics: the metric table's scalars, CIs, size, labels, precision,
    timings, workers, recovery, and the sections' digests (cluster/evaluation/sections.py)."""
    from cluster.evaluation.sections import headline_extras
    from cluster.stats.metrics import METRICS

    keep = ("n", "labels", *METRICS, "ci95", "precision_mode", "timings", "workers", "recovery")
    return {**{k: metrics[k] for k in keep if k in metrics}, **headline_extras(metrics)}


# ------------------------------------------------------------------ command line


def _run(spec: EvaluateSpec, address: str | None = None, **_) -> None:  # address: HOST:6379, ray://
    import typer

    phases = Phases()
    age = process_age_s()
    if age is not None:  # process start -> here: interpreter, imports, option parsing
        phases.marks["cli_start_s"] = round(age, 3)
    from jobs.eval_print import print_summary

    print_summary(result := run_evaluate(spec, phases=phases, address=address))
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
