"""What one evaluation computes and writes: the pipeline's run, then metrics.json and report.html.

Called by cluster/evaluation/run.py inside the registered run. The pipeline is
cluster/evaluation/pipeline.py; the task (classification or translation) turns the merged
statistics into the scores (cluster/evaluation/classify.py, translate.py ``finalize``); this module
adds how the run ran (where, on what, how long), the gate's verdicts, and writes the files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time

from cluster.clock import Phases
from cluster.evaluation.outputs import output_fs, write_json_atomic
from cluster.evaluation.parts import Merged
from cluster.evaluation.pipeline import (
    Layout,
    Output,
    build,
    dead_nodes,
    expected_coverage,
    leave_a_cpu,
    plan_layout,
    read_blocks,
    room_for_user_tasks,
    run_pipeline,
)
from cluster.evaluation.progress import parts_progress
from cluster.evaluation.tasks import task_for
from cluster.evaluation.warm import warm_lease
from cluster.registry.artifacts import exists
from cluster.registry.heartbeat import heartbeat_period

BLOCKS_PER_IMAGE_ACTOR = 4  # an image actor that ends first idles at most about a quarter of its share


def evaluate_into(job) -> dict:
    """Run the pipeline of ``job`` (cluster/evaluation/run.py Job); write report.html and metrics.json
    into its local artifact directory; return metrics.json."""
    from cluster.evaluation.sections import judge_gate, run_info

    spec, out, phases = job.spec, job.target.local, job.phases
    out.mkdir(parents=True, exist_ok=True)
    metrics, took = infer(job)
    metrics.update(run_info(job, job.target.run_id))
    if spec.gate is not None:
        phases.mark("gate_start")
        metrics["gate"] = judge_gate(spec, metrics, job.target.predictions, job.baseline)
        phases.mark("gate_end")
    phases.mark("done")
    metrics["timings"] = {**timings(phases, metrics["n"]), **{k: round(v, 3) for k, v in took.items()}}
    write_report(metrics, out / "report.html", job.translation)
    write_json_atomic(out / "metrics.json", metrics)  # last: its presence means the run completed
    return metrics


def infer(job) -> tuple[dict, dict]:
    """The pipeline with the analyses the spec asks for -> metrics.json's scores and how it ran, and
    the seconds of the steps besides the phases (finalize_s)."""
    from cluster.stats.analyses import Analyses

    spec = job.spec
    analyses = None if job.translation else Analyses.for_spec(spec, len(job.labels))
    task = task_for(spec, job.model, job.labels, spec.data, analyses)
    task, layout, ds, expected = source(job, task)
    output = _output(job)
    total = expected.rows if expected is not None else None  # a ray.data.Dataset's: known at the end
    tell = functools.partial(job.registry.set_progress, job.target.run_id, total=total)
    tell(0)
    with (
        warm_lease(spec, job.model, task, layout, job.joined) as warm,  # on a running head
        parts_progress(output.fs, output.path, tell, heartbeat_period()),
    ):
        merged = run_pipeline(build(ds, task, spec, layout, warm), task, layout, output, expected)
    job.registry.set_progress(job.target.run_id, merged.coverage.rows, total=merged.coverage.rows)
    job.phases.mark("last_result")
    _mark(job.phases, merged)
    if job.dataset is not None:
        _dataset_summary(job, merged)
    t0 = time.perf_counter()
    metrics = {"task": task.name, **task.finalize(merged.stats)}
    took = {"finalize_s": time.perf_counter() - t0}
    metrics.update(how_it_ran(merged, layout, dead_nodes()))
    if job.model.modality == "image" or job.translation:  # the tasks that mark ``_bad`` rows
        metrics["bad_rows"] = merged.bad.report()
    return metrics, took


def source(job, task):
    """(the task with its actors' threads, the layout, the dataset read, the rows it should cover)."""
    spec = job.spec
    probe = plan_layout(spec, 2**31)
    if job.dataset is not None:
        from cluster.evaluation.userdata import user_dataset

        layout = room_for_user_tasks(probe)
        task = dataclasses.replace(_threads(task, layout), content_hash=True)
        return task, layout, user_dataset(job.dataset, task), None
    from cluster.data.blocks import plan_blocks

    image = job.model.modality == "image"  # images: blocks cut at batch multiples, spread over actors
    least = probe.max_actors * BLOCKS_PER_IMAGE_ACTOR if image else 1
    size = task.block_rows(spec.rows_per_shard)
    _, blocks = plan_blocks(spec.data, spec.limit, size, spec.batch_size if image else size, least)
    layout = plan_layout(spec, len(blocks))
    if job.resumed and exists(job.target.checkpoint):
        layout = leave_a_cpu(layout)  # room for Ray Data's checkpoint filter actor
    task = _threads(task, layout)
    return task, layout, read_blocks(blocks, task, layout), expected_coverage(blocks)


def write_report(metrics: dict, path, translation: bool) -> None:
    """report.html: a translation's (scores with CIs, the worst sentences) or a classifier's."""
    if translation:
        from cluster.report.translation import write_translation_report

        write_translation_report(metrics, path)
    else:
        from cluster.report.html import write_report as write_classification_report

        write_classification_report(metrics, path)


def _threads(task, layout: Layout):
    """CPU actors compute on the CPUs the layout gives each (a warm actor was made by another run)."""
    threads = int(layout.cpus_per_actor) if not layout.gpus_per_actor else None
    return dataclasses.replace(task, threads=threads)


def _output(job) -> Output:
    """The predictions' directory, written under Ray Data's checkpointing (resumable runs)."""
    from ray.data.checkpoint import CheckpointConfig

    target = job.target
    fs, path = output_fs(target.predictions)
    if job.dataset is not None:  # a user's dataset may not start with a read: no checkpoint
        return Output(target.predictions, fs, path)
    cfs, cpath = output_fs(target.checkpoint)
    config = CheckpointConfig(
        id_column="row", checkpoint_path=cpath, delete_checkpoint_on_success=False, override_filesystem=cfs
    )
    return Output(target.predictions, fs, path, checkpoint=config)


def _dataset_summary(job, merged: Merged) -> None:
    """A ray.data.Dataset's summary, known only now: rows, labels and its content hash as the run's
    dataset fingerprint (recorded); the gate's baseline is looked up with it."""
    from cluster.data.scan import DataSummary
    from cluster.evaluation.sections import gate_baseline
    from cluster.registry.takeover import record_fingerprint

    core = merged.stats.get("core")
    counts = (
        {}
        if core is None
        else {lab: int(n) for lab, n in zip(job.labels, core.confusion.sum(1), strict=True)}
    )
    fingerprint = f"{(merged.content.hashsum if merged.content else 0):016x}"
    job.summary = DataSummary(merged.coverage.rows - merged.bad.count, counts, fingerprint)
    record_fingerprint(job.registry, job.target.run_id, fingerprint)
    job.baseline = gate_baseline(job.given, job.registry, job.summary, job.labels)


def _mark(phases: Phases, merged: Merged) -> None:
    ready = merged.workers.first_ready()
    if ready:
        phases.mark("actors_ready", ready)
    if merged.written.first != float("inf"):
        phases.mark("first_result", merged.written.first)


def how_it_ran(merged: Merged, layout: Layout, dead: set[str] = frozenset()) -> dict:
    """metrics.json's ``device``, ``precision_mode``, ``warm_actors``, ``workers``, ``worker_plan`` and
    ``recovery`` (``dead``: the ids of the nodes Ray knows as lost, after the run)."""
    workers = merged.workers.report()
    first = workers[0] if workers else {}
    recovery = {
        "rows": merged.coverage.rows,
        "part_files": merged.files,
        "restarted_actors": _restarted(merged),
        # A model actor on a lost node is either restarted by Ray (same actor id, listed above) or,
        # when Ray Data finds it dead first, replaced by a new actor of the pool: both are said here.
        "lost_actors": [{"actor": w["actor"], "node": w["node"]} for w in workers if w["node"] in dead],
        "resumed_rows": merged.earlier.rows,
    }
    return {
        "device": first.get("device"),
        "precision_mode": first.get("precision"),
        "warm_actors": merged.workers.warm(),
        "workers": workers,
        "worker_plan": layout.report(),
        "recovery": recovery,
    }


def _restarted(merged: Merged) -> list[dict]:
    """Model actors that computed rows in more than one life (restarted by Ray, e.g. after their node
    was lost): their id and the nodes they ran on."""
    lives: dict[str, list] = {}
    for key in merged.workers.rows:
        w = json.loads(key)
        lives.setdefault(w.get("actor") or "", []).append((w.get("ready_at") or 0.0, w.get("node")))
    out = []
    for actor, seen in sorted(lives.items()):
        if len(seen) > 1:
            out.append({"actor": actor, "lives": len(seen), "nodes": [node for _, node in sorted(seen)]})
    return out


def timings(phases: Phases, n: int) -> dict[str, float]:
    """The ``timings`` of metrics.json, in seconds (docs/contracts.md): consecutive phases of the
    command; ``scan_s`` runs beside ``ray_init_s``."""
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


def headline(metrics: dict) -> dict:
    """What the registry keeps of a run's metrics: the metric table's scalars, CIs, size, labels,
    precision, timings, workers, recovery, and the sections' digests."""
    from cluster.evaluation.sections import headline_extras
    from cluster.stats.metrics import METRICS

    keep = ("n", "labels", *METRICS, "ci95", "precision_mode", "timings", "workers", "recovery")
    return {**{k: metrics[k] for k in keep if k in metrics}, **headline_extras(metrics)}
