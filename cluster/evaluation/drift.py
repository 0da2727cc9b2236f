"""The drift checks' pass over two datasets: one Ray Data pipeline for both sides, one model load.

    found = drift_pass(spec, model, labels, sides, scratch)   # {"reference": (stats, parts), ...}

Both sides are read (each with its own columns, every row tagged with its side in ``_side``),
unioned, and go through the same stages as an evaluation (cluster/evaluation/pipeline.py) with
:class:`DriftTask`: the classification task whose statistics are kept per side, each side with its
own hash-sample fraction. jobs/drift.py turns the two sides' summaries into the checks. The part
files go to ``scratch`` and are removed once read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.data.blocks import BlocksDatasource, plan_blocks
from cluster.evaluation.classify import ClassifyTask
from cluster.evaluation.classify_columns import LABEL
from cluster.evaluation.outputs import output_fs
from cluster.evaluation.pipeline import Output, build, plan_layout, run_pipeline
from cluster.evaluation.task import ROW
from cluster.evaluation.tasks import classification, columns_for
from cluster.evaluation.warm import warm_lease
from cluster.specs.workloads import DriftSpec
from cluster.stats.analyses import DriftAnalyses

SIDE = "_side"


@dataclass
class DriftTask(ClassifyTask):
    """Classification statistics kept per side (``reference/...``, ``current/...``)."""

    side_analyses: dict[str, DriftAnalyses] = field(default_factory=dict)
    labelled: dict[str, bool] = field(default_factory=dict)

    def drift_analyses(self, block: pa.Table) -> DriftAnalyses | None:
        return self.side_analyses[_side_of(block)] if block.num_rows else None

    def statistics(self, rows: pa.Table) -> dict[str, Any]:
        out = {}
        for side, analyses in self.side_analyses.items():
            sub = rows.filter(pc.equal(rows[SIDE], side))
            if not sub.num_rows:
                continue
            if not self.labelled[side]:
                sub = sub.drop_columns([LABEL])
            parts = replace(self, analyses=analyses).statistics_of_side(sub)
            out.update({f"{side}/{name}": part for name, part in parts.items()})
        return out

    def statistics_of_side(self, rows: pa.Table) -> dict[str, Any]:
        return ClassifyTask.statistics(self, rows)

    def predictions(self, rows: pa.Table) -> pa.Table:
        return pa.table({ROW: rows[ROW], SIDE: rows[SIDE]})  # scratch: the statistics are the result


def _side_of(block: pa.Table) -> str:
    return block[SIDE][0].as_py()


def drift_pass(spec: DriftSpec, model, labels: list[str] | None, sides: dict[str, dict], scratch) -> dict:
    """Per side, (core statistics or None, the drift summaries by name). ``model``: a
    cluster.models.resolve.ModelRef; ``sides``: name -> {"data": DataSpec, "labelled", "summary"}."""
    from cluster.ray.runtime import init_ray

    joined = init_ray()
    analyses = {name: _analyses(spec, side["summary"].num_rows) for name, side in sides.items()}
    first = next(iter(sides.values()))["data"]
    base = classification(spec, model, labels, first, next(iter(analyses.values())))
    task = DriftTask(**{f.name: getattr(base, f.name) for f in fields(base)}, side_analyses=analyses)
    task.labelled = {name: side["labelled"] for name, side in sides.items()}
    plans = {
        name: plan_blocks(side["data"], spec.limit, spec.rows_per_shard)[1] for name, side in sides.items()
    }
    layout = plan_layout(spec, sum(len(b) for b in plans.values()))
    task = replace(task, threads=int(layout.cpus_per_actor) if not layout.gpus_per_actor else None)
    ds = _read_sides(plans, sides, task, layout)
    fs, path = output_fs(str(scratch))
    try:
        with warm_lease(spec, model, task, layout, joined) as warm:  # one model load, kept on a head
            stages = build(ds, task, spec, layout, warm)
            merged = run_pipeline(stages, task, layout, Output(str(scratch), fs, path))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {name: _side_found(merged.stats, name) for name in sides}


def _analyses(spec: DriftSpec, rows: int) -> DriftAnalyses:
    return DriftAnalyses(min(1.0, 2.0 * spec.embed_rows / max(1, rows)), spec.embed_rows, spec.seed)


def _read_sides(plans: dict, sides: dict, task: DriftTask, layout):
    """Both sides' blocks, each read with its own columns and tagged with its side, as one dataset."""
    import ray.data

    datasets = []
    for name, blocks in plans.items():
        columns = columns_for(sides[name]["data"], task.modality)
        constants = {SIDE: name}
        if LABEL not in columns:
            constants[LABEL] = None  # every side has the same columns (a null label when unlabelled)
        source = BlocksDatasource(blocks, columns, constants)
        tasks = {"concurrency": layout.cpu_tasks, "num_cpus": layout.task_cpus}
        datasets.append(ray.data.read_datasource(source, override_num_blocks=max(1, len(blocks)), **tasks))
    return datasets[0].union(*datasets[1:])


def _side_found(stats: dict, side: str) -> tuple:
    prefix = f"{side}/"
    parts = {k[len(prefix) :]: v for k, v in stats.items() if k.startswith(prefix)}
    return parts.pop("core", None), parts
