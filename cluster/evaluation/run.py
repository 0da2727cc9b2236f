"""One evaluation run, end to end: the plain function behind `evalctl evaluate`, `evalctl robustness`,
a sweep's gate and the Python API (cluster/evaluation/api.py).

    result = run_evaluate(spec)                   # EvalResult(run_id, out, metrics)
    result = resume_evaluate("evaluate-2026...")  # a run whose driver died, continued

Steps: resolve the model and where the artifacts go -> start Ray (or join the running head) while
the data is validated and fingerprinted on the driver -> record the run -> the Ray Data pipeline
(cluster/evaluation/pipeline.py: the workers write the predictions' part files, the driver adds
up their statistics) -> metrics.json, report.html -> the run finished in the registry.
metrics.json's ``timings`` say where the command's time went.

Resuming: every run is written under Ray Data's checkpointing (``_checkpoint/`` beside the
predictions, keyed by ``row``). A resumed run re-plans the same blocks, and Ray Data skips the
rows whose part files were committed (deleting any file left uncommitted); the statistics come
from every part file, old and new, so metrics.json equals an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.clock import Phases
from cluster.errors import UserError, first_items
from cluster.evaluation.outputs import ArtifactTarget, artifact_target, write_json_atomic
from cluster.registry.artifacts import publish
from cluster.registry.deferred import finish_or_keep
from cluster.registry.overwrites import mark_overwritten
from cluster.specs.workloads import DataSpec, EvaluateSpec, RobustnessSpec

if TYPE_CHECKING:
    from cluster.registry.record import Registry

log = logging.getLogger(__name__)
RESUMABLE = {"evaluate": EvaluateSpec, "robustness": RobustnessSpec}


@dataclass
class EvalResult:
    """What an evaluation gives back (docs/contracts.md: "Python API")."""

    run_id: str
    out: str  # the artifacts' directory or URI
    metrics: dict  # metrics.json
    predictions: str = ""  # the predictions' directory or URI (part files)


@dataclass
class Job:
    """Everything one evaluation works with once its inputs are checked."""

    spec: EvaluateSpec  # to run (an image folder tree read through its index)
    given: EvaluateSpec  # as the user gave it (recorded)
    model: object  # cluster.models.resolve.ModelRef
    labels: list[str]  # a classifier's (a translation model has none)
    kind: str  # the run's kind in the registry: evaluate or robustness
    target: ArtifactTarget
    phases: Phases
    registry: Registry
    summary: object = None  # cluster.data.scan.DataSummary (None for a ray.data.Dataset)
    baseline: dict | None = None  # the gate's baseline run, None without one
    joined: str = ""  # what init_ray joined
    dataset: object = None  # a ray.data.Dataset given instead of spec.data's path
    resumed: dict = field(default_factory=dict)  # the run taken over, when resuming
    task: str = "classification"  # the model's (cluster/models/modality.py model_task)

    @property
    def translation(self) -> bool:
        """Whether the model is a translation model (a parallel corpus in, generated text scored)."""
        return self.task == "translation"


def run_evaluate(
    spec: EvaluateSpec,
    registry: Registry | None = None,
    phases: Phases | None = None,
    kind: str = "evaluate",
    address: str | None = None,
    dataset=None,
) -> EvalResult:
    """Evaluate ``spec.model`` on ``spec.data`` (or on ``dataset``, a ray.data.Dataset); write the
    artifacts and register the run (as ``kind``). ``phases``: marks of the command so far (the CLI
    passes its start). ``address``: a Ray to join (cluster/ray/runtime.py)."""
    from cluster.registry.record import Registry, new_id

    registry = registry or Registry()
    job = _job(spec, registry, phases or Phases(), kind, lambda model: new_id(kind), dataset)
    # --out is this run's before anything starts (a second run on it is refused at once).
    with tempfile.TemporaryDirectory(prefix="evalcluster-") as work, job.target.held(registry):
        _start(job, work, address)
        return _record(job)


def resume_evaluate(
    ref: str, registry: Registry | None = None, phases: Phases | None = None, address: str | None = None
) -> EvalResult:
    """Continue the evaluation run ``ref`` whose driver died (its record still running, its owner
    gone): the rows already written are not computed again."""
    from cluster.registry.record import Registry
    from cluster.registry.takeover import take_over

    registry = registry or Registry()
    run = registry.get_run(ref)
    if run["kind"] not in RESUMABLE:
        raise UserError(f"run {run['id']} is a {run['kind']} run; only evaluations can be resumed")
    spec = RESUMABLE[run["kind"]].model_validate(run["spec"])
    job = _job(spec, registry, phases or Phases(), run["kind"], lambda model: run["id"], None, run)
    with tempfile.TemporaryDirectory(prefix="evalcluster-") as work, job.target.held(registry):
        _start(job, work, address)
        if job.summary.fingerprint != run["dataset_fingerprint"]:
            raise UserError(
                f"{spec.data.path} changed since run {run['id']} started (fingerprint "
                f"{job.summary.fingerprint}, was {run['dataset_fingerprint']}); evaluate it again"
            )
        with take_over(registry, run["id"]) as taken:
            job.resumed = taken
            return _finish(job)


def _job(spec, registry, phases, kind, run_id, dataset, resumed: dict | None = None) -> Job:
    """The model, its labels and the artifacts' place, checked before anything starts."""
    from cluster.evaluation.segment import refuse_classification_analyses
    from cluster.models.modality import model_task, refuse_text_analyses
    from cluster.models.resolve import resolve_model

    # A resumed run uses the model it started with (an alias may have moved since).
    model = resolve_model(resumed["model_id"] if resumed else spec.model, registry)
    task = model_task(model.path)
    if task == "translation":
        refuse_classifier_options(spec, model.model_id)
        labels = []
    else:
        labels = require_labels(model)
        if task == "segmentation":
            refuse_classification_analyses(spec, model.model_id)
        refuse_text_analyses(spec, model.modality, model.model_id)
    target = artifact_target(spec, run_id(model), registry, resuming=resumed is not None)
    return Job(spec, spec, model, labels, kind, target, phases, registry, dataset=dataset, task=task)


def _start(job: Job, work: str, address: str | None) -> None:
    """Ray started (or joined) while the data is validated and fingerprinted; the labels checked."""
    from cluster.data.files import check_columns
    from cluster.data.pairs import mask_folder_spec
    from cluster.data.parallel import check_pair_columns
    from cluster.data.scan import image_folder_spec
    from cluster.evaluation.sections import gate_baseline
    from cluster.ray.runtime import init_ray

    if job.dataset is None and job.translation:
        check_pair_columns(job.spec.data)
    elif job.dataset is None and job.task == "segmentation":  # images/ + masks/ read through an index
        job.spec = job.spec.model_copy(update={"data": mask_folder_spec(job.spec.data, work)})
    elif job.dataset is None:
        data = image_folder_spec(job.spec.data, job.model.modality, work)
        job.spec = job.spec.model_copy(update={"data": data})
        check_columns(job.spec.data, job.model.modality)
    with ThreadPoolExecutor(1, thread_name_prefix="scan") as background:
        scanning = background.submit(_scan, job) if job.dataset is None else None
        job.phases.mark("ray_start")
        job.joined = init_ray(address)
        job.phases.mark("ray_up")
        say_joined(job.joined)
        job.summary = scanning.result() if scanning else None
    if job.summary is not None:
        if not job.translation:
            check_labels(job.summary.label_counts, job.labels, job.spec.data)
        job.baseline = gate_baseline(job.given, job.registry, job.summary, job.labels)


def _scan(job: Job):
    from cluster.data import parallel
    from cluster.data.pairs import scan_pairs
    from cluster.data.scan import scan

    job.phases.mark("scan_start")
    try:
        spec = job.spec
        if job.translation:
            return parallel.scan_pairs(spec.data, spec.limit, spec.skip_bad_rows, spec.rows_per_shard)[0]
        if job.task == "segmentation":  # each pair is checked where it is decoded (the CPU stage)
            return scan_pairs(spec.data, spec.limit)
        return scan(spec.data, spec.limit, spec.rows_per_shard, job.model.modality, spec.skip_bad_rows)
    finally:
        job.phases.mark("scan_end")


def _record(job: Job) -> EvalResult:
    """Run the evaluation as a registered run: failed (and no artifacts left) if anything raises."""
    spec, target = job.given, job.target
    fingerprint = job.summary.fingerprint if job.summary else None
    with job.registry.run(
        job.kind,
        spec.model_dump(mode="json"),
        owner=spec.owner,
        dataset_path=spec.data.path,
        dataset_fingerprint=fingerprint,
        model_id=job.model.model_id,
        run_id=target.run_id,
    ):
        # --overwrite: the earlier run's record says its outputs are gone.
        mark_overwritten(job.registry, target.dest, target.run_id)
        target.clear()  # an overwritten --out leaves nothing of its own behind
        return _finish(job)


def _finish(job: Job) -> EvalResult:
    """The pipeline and everything after it, inside the registered (or taken over) run."""
    from cluster.evaluation.outcome import evaluate_into, headline

    target = job.target
    try:
        metrics = evaluate_into(job)
        publish(target.local, target.dest, last="metrics.json")  # metrics.json last: complete
        with contextlib.suppress(OSError):
            _drop_checkpoint(target)
    except BaseException:
        target.discard()
        raise
    finally:
        target.cleanup()
    # The record is kept beside the outputs if the database stays away (`evalctl runs record`).
    finish_or_keep(job.registry, target.run_id, headline(metrics), target.dest)
    return EvalResult(target.run_id, target.dest, metrics, target.predictions)


def _drop_checkpoint(target: ArtifactTarget) -> None:
    from cluster.data.storage import resolve

    fs, path = resolve(target.checkpoint)
    fs.delete_dir(path)


# ------------------------------------------------------------------ checks at the boundary


def say_joined(joined: str) -> None:
    """One line on stderr when the run uses a Ray it did not start (e.g. `evalctl cluster up`'s)."""
    from cluster.ray.runtime import joined_line

    line = joined_line(joined)
    if line:
        import sys

        print(line, file=sys.stderr)


def require_labels(model) -> list[str]:
    if model.labels is None:
        raise UserError(
            f"model {model.model_id} has no id2label (not a fine-tuned classifier); evaluate "
            "a model from `evalctl sweep`, or a directory whose config.json has id2label"
        )
    return model.labels


def refuse_classifier_options(spec, model_id: str) -> None:
    """Options that only mean something for a classifier, asked of a translation model: one line,
    before anything starts. ``spec``: an EvaluateSpec or RobustnessSpec."""
    asked = [
        ("perturbations (evalctl robustness)", bool(getattr(spec, "perturb", None))),
        ("--auto-slices", spec.auto_slices),
        ("--slice-column", bool(spec.data.slice_column)),
        ("a gate with --max-drop (compare two translation runs with `evalctl compare`)",
         bool(spec.gate and spec.gate.max_drop)),
    ]  # fmt: skip
    refused = [name for name, given in asked if given]
    if refused:
        raise UserError(
            f"model {model_id} is a translation model: {', '.join(refused)} apply to classifiers only; "
            "a translation evaluation scores bleu, chrf and ter (gate them with --min/--max)"
        )


def check_labels(counts: dict[str, int], labels: list[str], data: DataSpec) -> None:
    unknown = {lab: n for lab, n in counts.items() if lab not in labels}
    if unknown:
        shown = first_items([f"{lab!r} ({n} rows)" for lab, n in sorted(unknown.items())])
        raise UserError(
            f'labels in "{data.label_column}" of {data.path} unknown to the model: {shown}; '
            f"the model predicts {', '.join(labels)}"
        )


def write_metrics(out: Path, metrics: dict) -> None:
    """metrics.json, atomically: its presence means the run completed."""
    write_json_atomic(out / "metrics.json", metrics)
