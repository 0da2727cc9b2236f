"""The evaluation as one streaming Ray Data pipeline (docs/design.md: "Evaluation").

    layout = plan_layout(spec, blocks=len(blocks))
    merged = run_pipeline(task, read_blocks(blocks, task), layout, Output(location, fs))

    read        ray.data.read_datasource(BlocksDatasource)    tasks, fused with the next stage
    preprocess  map_batches(preprocess, batch_size=None)       tasks: one whole block per call
    model       map_batches(ModelStage, ActorPoolStrategy)     actors, autoscaled min..max workers
    write       write_datasink(PartsDatasink)                  tasks: one part file per block

The driver only plans and watches: the rows go from the read tasks through the actors to the
part files, and come back as each part file's statistics (cluster/evaluation/parts.py), added up
one file at a time. Ray Data keeps the stages fed and bounded (backpressure, spilling), restarts
an actor lost with its node (``max_restarts=-1``) and retries its blocks on it
(``max_task_retries=-1``), retries tasks and rebuilds lost blocks from their lineage; a write
task run twice writes the same file name (cluster/evaluation/sink.py), so no row is counted twice,
and the driver checks the rows written against the input's (``Coverage``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
from dataclasses import dataclass

import pyarrow.fs as pafs

from cluster.errors import UserError
from cluster.evaluation.parts import Coverage, Merged, merge_parts, part_files, read_parts
from cluster.evaluation.parts import expected_coverage as coverage_of_ranges
from cluster.evaluation.task import EvalTask
from cluster.ray.logs import ACTOR_ARGUMENT_NOTICE, without_stderr_lines
from cluster.ray.runtime import cluster_resources, max_gpus_per_node
from cluster.specs.workloads import PipelineSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """How many model actors, with what each, and how many CPU tasks feed and drain them."""

    min_actors: int
    max_actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    cpu_tasks: int  # concurrent read+preprocess tasks, and as many write tasks
    task_cpus: float  # CPUs each of those tasks reserves
    initial_actors: int | None = None  # the pool starts with this many (None: max_actors)

    def report(self) -> dict:
        """metrics.json's ``worker_plan``."""
        return {
            "actors": self.max_actors,
            "min_actors": self.min_actors,
            "cpus_per_actor": self.cpus_per_actor,
            "gpus_per_actor": self.gpus_per_actor,
            "cpu_tasks": self.cpu_tasks,
        }


def plan_layout(spec: PipelineSpec, blocks: int) -> Layout:
    """The layout for the connected cluster and ``blocks`` read blocks.

    GPU clusters: one actor per GPU (or per ``gpus_per_worker``), each with one CPU; the read,
    preprocessing and write tasks get a CPU each. CPU only: one single-threaded actor per CPU
    (2 actors x 1 thread beat 1 x 2 on 2 cores: 585-613 against 520-542 rows/s), and the CPU
    tasks reserve none, so they run between the actors' forward passes instead of waiting for
    a CPU an actor holds. Never more actors than blocks (an actor without one loads a model for
    nothing).
    """
    res = cluster_resources()
    total_gpus, cpus = res.get("GPU", 0.0), max(1, int(res.get("CPU", 1)))
    gpus = spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if total_gpus else 0.0)
    if gpus > 0 and gpus > max_gpus_per_node():
        raise UserError(
            f"--gpus-per-worker {gpus:g}: no node has that many GPUs (largest: {max_gpus_per_node():g})"
        )
    if gpus > 0:
        most = min(spec.workers or max(1, int(total_gpus // gpus)), max(1, blocks))
        return Layout(_least(spec, most), most, 1.0, gpus, max(1, cpus - most), 1.0)
    most = min(spec.workers or cpus, max(1, blocks))
    each = float(max(1, min(cpus // most, _largest_node_cpus())))
    return Layout(_least(spec, most), most, each, 0.0, most, 0.0)


def _least(spec: PipelineSpec, most: int) -> int:
    return min(spec.min_workers or most, most)


def _largest_node_cpus() -> int:
    import ray

    return max((int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=1) or 1


def dead_nodes() -> set[str]:
    """Ids of the cluster's nodes Ray knows as dead (lost machines; ray.nodes keeps them, not alive)."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if not n.get("Alive")}


# ------------------------------------------------------------------ the dataset


@dataclass(frozen=True)
class Output:
    """Where the part files go: ``location`` as given (a path or URI), and on ``fs`` at ``path``."""

    location: str
    fs: pafs.FileSystem
    path: str
    checkpoint: object | None = None  # a ray.data.checkpoint.CheckpointConfig (resumable runs)


def leave_a_cpu(layout: Layout) -> Layout:
    """The layout of a resumed run: on CPUs, the pool starts one actor short (the autoscaler adds it
    later). Ray Data's checkpoint filter runs in an actor that, like any actor without resources of
    its own, needs a free CPU to be placed (and none once running); with every CPU held by a model
    actor it would never start, and nothing would reach the model stage."""
    if layout.gpus_per_actor or layout.max_actors < 2:
        return layout
    return dataclasses.replace(layout, initial_actors=layout.max_actors - 1)


def room_for_user_tasks(layout: Layout) -> Layout:
    """The layout for a user's own ray.data.Dataset: on CPUs, one actor fewer. Its stages (a read,
    its maps) ask for CPUs of their own, which model actors holding every CPU would never leave
    them (ours reserve none: plan_layout)."""
    if layout.gpus_per_actor or layout.max_actors < 2:
        return layout
    most = layout.max_actors - 1
    return dataclasses.replace(layout, max_actors=most, min_actors=min(layout.min_actors, most))


def read_blocks(blocks: list, task: EvalTask, layout: Layout):
    """The read stage: one read task per planned block (cluster/data/blocks.py)."""
    import ray.data

    from cluster.data.blocks import BlocksDatasource

    source = BlocksDatasource(blocks, task.input_columns())
    # One read task per block (override_num_blocks): Ray Data would otherwise split blocks to
    # reach its parallelism target, and the layout would no longer be the plan's.
    return ray.data.read_datasource(
        source,
        override_num_blocks=max(1, len(blocks)),
        concurrency=layout.cpu_tasks,
        num_cpus=layout.task_cpus,
    )


def build(ds, task: EvalTask, spec: PipelineSpec, layout: Layout, warm=None):
    """``ds`` (rows with ``row`` and the task's input columns) -> preprocessed -> predicted."""
    import ray.data

    from cluster.evaluation.stages import ModelStage, preprocess

    ds = ds.map_batches(
        preprocess,
        fn_kwargs={"task": task},
        batch_size=None,  # whole blocks: the task orders each block and numbers its model batches
        batch_format="pyarrow",
        compute=ray.data.TaskPoolStrategy(size=layout.cpu_tasks),
        num_cpus=layout.task_cpus,
        udf_modifying_row_count=False,
    )
    initial = min(layout.initial_actors or layout.max_actors, layout.max_actors)
    pool = ray.data.ActorPoolStrategy(
        min_size=min(layout.min_actors, initial), max_size=layout.max_actors, initial_size=initial
    )
    # Whole blocks (batch_size None): a block's model batches (``_batch``, spec.batch_size rows each)
    # are the task's; Ray's own slicing into batch_size rows would cut them wherever a block's sort
    # group is not a multiple of the batch size. ``map_batches`` refuses batch_size None with GPUs,
    # so GPU runs use the DeveloperAPI it delegates to (``map_batches_internal``, which Ray Data's
    # own map_groups uses for the same reason).
    # ``warm`` (a running head): the actors are clients of warm model actors, which hold the GPUs.
    gpus = 0.0 if warm is not None else layout.gpus_per_actor
    stage = ds.map_batches_internal if gpus else ds.map_batches
    return stage(
        ModelStage,
        fn_constructor_kwargs={"task": task, "gpus": gpus, "warm": warm},
        batch_size=None,
        batch_format="pyarrow",
        compute=pool,
        num_cpus=layout.cpus_per_actor,
        num_gpus=gpus or None,
        udf_modifying_row_count=False,
    )


def run_pipeline(ds, task: EvalTask, layout: Layout, out: Output, expected: Coverage | None = None) -> Merged:
    """Execute ``ds`` (built by :func:`build`) into part files under ``out``; return every part file's
    statistics added up. ``expected``: the input rows' coverage, checked against the files'."""
    from cluster.evaluation.sink import PartsDatasink  # imports ray.data

    earlier = frozenset(part_files(out.fs, out.path))  # a resumed run's files (those still there after)
    sink = PartsDatasink(out.path, task, filesystem=out.fs)
    with pipeline_context(ds.context, checkpoint=out.checkpoint), without_stderr_lines(ACTOR_ARGUMENT_NOTICE):
        try:
            ds.write_datasink(
                sink, ray_remote_args={"num_cpus": layout.task_cpus}, concurrency=layout.cpu_tasks
            )
        except Exception as exc:  # a user's error in a stage (a bad image, a bad label) is raised as itself
            user = user_error_in(exc)
            if user is None:
                raise
            # Ray Data appends its retry advice to the message: a user's error stays one line.
            raise UserError(str(user).split("\n", 1)[0]) from exc
    merged = merge_parts(read_parts(out.fs, out.path), earlier)
    check_coverage(merged.coverage, expected, out.location)
    return merged


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError a stage raised, from the Ray errors around it (RayTaskError.cause, causes)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        cause = getattr(exc, "cause", None)  # a RayTaskError: the task's own exception
        if isinstance(exc, UserError) and not isinstance(cause, UserError):
            return exc
        seen.add(id(exc))
        exc = cause or exc.__cause__ or exc.__context__
    return None


def check_coverage(got: Coverage, expected: Coverage | None, where: str) -> None:
    """Every input row written exactly once, or a RuntimeError saying how it differs."""
    if expected is None or got == expected:
        return
    raise RuntimeError(
        f"the part files under {where} hold {got.rows} rows where the input has {expected.rows}"
        + (" (the same count, but not the same rows)" if got.rows == expected.rows else "")
        + "; a directory that some node cannot see (use a shared path or the artifact store), "
        "or files from another run?"
    )


@contextlib.contextmanager
def pipeline_context(ctx, checkpoint=None):
    """The DataContext settings of one evaluation, restored afterwards.

    ``target_max_block_size`` None: a block is never cut by size on its way (the layout stays the
    plan's, so model batches and part files follow it: docs/design.md). Progress bars when the
    console is a terminal (or at INFO). ``checkpoint``: Ray Data's checkpointing of the write.
    A stage's exception reaches the driver as itself (not as Ray Data's UserCodeException, whose
    cause does not survive the trip), so a user's error keeps its one line.
    """
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    wanted = {
        "target_max_block_size": None,
        "enable_progress_bars": verbose or sys.stderr.isatty(),
        "checkpoint_config": checkpoint,
        "raise_original_map_exception": True,  # a stage's UserError reaches the driver as itself
    }
    before = {k: getattr(ctx, k) for k in wanted}
    for k, v in wanted.items():
        setattr(ctx, k, v)
    try:
        yield ctx
    finally:
        for k, v in before.items():
            setattr(ctx, k, v)


def expected_coverage(blocks: list) -> Coverage:
    """The coverage of the planned blocks' rows (cluster/data/shards.py Shard: offset, num_rows)."""
    return coverage_of_ranges((b.offset, b.num_rows) for b in blocks)
