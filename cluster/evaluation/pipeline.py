"""The evaluation pipeline: shards scheduled onto model actors, predictions streamed in input order.

    with model_actors(spec, model, labels, shards, phases) as actors:
        stats, info = run_pipeline(spec, actors, len(labels), pred_path, phases, Run(data, analyses))

The actors (cluster/evaluation/predictor.py: ModelActor) start loading their model as soon as Ray is
up, while the driver is still validating and fingerprinting the data. Each actor reads its
shards itself; the driver keeps two shards in flight per actor, writes the predictions to
Parquet in input order and adds up the statistics (nothing that grows with the data).

Cold (an embedded Ray): the actors are private to this run. On a persistent Ray
(`evalctl cluster up`, a cluster): they are the warm pool's (cluster/ray/warmpool.py), found
by name when an earlier evaluation of the same model left them loaded, and left loaded
for the next one for ``keep_warm_s`` idle seconds (0: unloaded when this run is done).

Spread and recovery (cluster/evaluation/shard_schedule.py): actors are placed on the nodes in turns; one
lost with its node has its shards run again on the others, each result taken once.

Why not Ray Data's ``map_batches(ActorPoolStrategy)`` (what this replaced): its actors
are created only when the dataset executes (after the scan), are never reused by a
later run, and its read tasks need worker processes of their own besides the actors.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.clock import Phases
from cluster.data.shards import shards_for_actors
from cluster.evaluation.worker_plan import node_room, place, plan_workers
from cluster.specs.workloads import DataSpec, PipelineSpec

log = logging.getLogger(__name__)
TOUCH_S = 10.0  # how often a warm evaluation renews its lease (cluster/ray/warmpool.py)


@dataclass
class Actors:
    """The model actors of one evaluation, where they came from, and the shards they get."""

    handles: list
    plan: tuple[int, float, float]  # (actors, CPUs each, GPUs each)
    joined: str  # what init_ray joined (cluster/ray/runtime.py)
    shards: list = field(default_factory=list)  # the input's shards, in input order
    key: str | None = None  # warm-pool key; None for private (cold) actors
    reused: int = 0  # actors that were already loaded (warm)
    ready: list = field(default_factory=list)  # ObjectRefs of each actor's ready()
    nodes: list = field(default_factory=list)  # the node each actor was placed on
    names: list = field(default_factory=list)  # warm actors' names (replacements' included)
    make: Callable | None = None  # node id -> another actor placed there (replacing a lost one)

    @property
    def threads(self) -> int:
        """Torch threads per actor: the CPUs the plan gives each (warm actors reserve none)."""
        return max(1, int(self.plan[1]))


@contextlib.contextmanager
def model_actors(
    spec: PipelineSpec,
    model,
    labels: list[str] | None,
    shards: list,
    phases: Phases,
    address: str | None = None,
) -> Iterator[Actors]:
    """Start Ray (or join ``address``) and the model actors of ``model`` (a
    cluster.models.resolve.ModelRef), not waiting for them; release or end them afterwards.
    ``labels`` None: a bare encoder (drift checks)."""
    from cluster.ray.runtime import init_ray

    phases.mark("ray_start")
    joined = init_ray(address)
    phases.mark("ray_up")
    if model.modality == "image":  # every actor busy to the end: small shards, batch-aligned
        shards = shards_for_actors(shards, plan_workers(spec, 2**31)[0], spec.batch_size)
    plan = plan_workers(spec, len(shards))
    nodes = place(plan)
    # On a running Ray, loaded actors are reused even with keep_warm_s 0 (then unloaded).
    actors = (_cold if joined == "embedded" else _warm)(spec, model, labels, plan, nodes)
    actors.joined, actors.shards, actors.nodes = joined, shards, nodes
    actors.ready = [a.ready.remote() for a in actors.handles]  # queued behind each model load
    log.info(
        "%d model actors (%d warm), %g CPUs / %g GPUs each", len(actors.handles), actors.reused, *plan[1:]
    )
    try:
        yield actors
    finally:
        _let_go(actors)


def _actor_class(cpus: float, gpus: float, node: str, **options):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from cluster.evaluation.predictor import ModelActor

    # No restarts: a restarted actor would wait for a CPU the survivors hold; a lost actor's
    # shards run again on the others (cluster/evaluation/shard_schedule.py). Hard affinity: a soft one put
    # a 0-CPU (warm) actor on the driver's node instead (measured, Ray 2.60); an actor whose
    # node is gone fails, and is replaced like a lost one.
    where = NodeAffinitySchedulingStrategy(node, soft=False)
    return ray.remote(ModelActor).options(
        num_cpus=cpus, num_gpus=gpus, max_restarts=0, scheduling_strategy=where, **options
    )


def _cold(spec: PipelineSpec, model, labels: list[str] | None, plan: tuple, nodes: list[str]) -> Actors:
    _, cpus, gpus = plan

    def make(node: str):
        handle = _actor_class(cpus, gpus, node).remote(model.source, labels, spec, gpus, actors.threads)
        actors.handles.append(handle)
        return handle

    actors = Actors([], plan, joined="", make=make)
    for node in nodes:
        make(node)
    return actors


def _warm(spec: PipelineSpec, model, labels: list[str] | None, plan: tuple, nodes: list[str]) -> Actors:
    """The warm pool's actors for this model: found by name, else created (and leased first, so the
    pool knows them before they exist). They reserve no CPU: a loaded model waiting for the next
    evaluation must not keep a sweep or a Serve replica from being scheduled. Their names say
    their node, so a later evaluation finds each node's actors again."""
    import ray

    from cluster.ray.warmpool import (
        NAMESPACE,
        actor_kind,
        actor_names,
        memory_estimate,
        model_key,
        pool_actor,
    )

    gpus = plan[2]
    model_path = model.path  # this machine's copy: its files' names, sizes and mtimes make the key
    kind = actor_kind(model.modality, classifier=labels is not None)
    key = model_key(model_path, spec.precision, gpus, kind)
    names = actor_names(key, nodes)
    label = {
        "model": model.location or str(model_path),
        "kind": kind,
        "precision": spec.precision,
        "device": "gpu" if gpus else "cpu",
    }
    _lease(pool_actor, key, names, label, spec.keep_warm_s, memory_estimate(model_path, len(nodes)))

    def create(name: str, node: str):
        options = {"namespace": NAMESPACE, "lifetime": "detached", "name": name, "get_if_exists": True}
        args = (model.source, labels, spec, gpus, actors.threads)
        handle = _actor_class(0, gpus, node, **options).remote(*args)
        actors.handles.append(handle)
        return handle

    def make(node: str):  # a replacement: the next name free on that node
        taken = set(actors.names)
        name = next(n for n in actor_names(key, [node] * (len(taken) + 1)) if n not in taken)
        actors.names.append(name)
        ray.get(pool_actor().adopt.remote(key, [name]))
        return create(name, node)

    actors = Actors([], plan, joined="", key=key, make=make)
    actors.names = list(names)
    for name, node in zip(names, nodes, strict=True):
        try:
            actors.handles.append(ray.get_actor(name, namespace=NAMESPACE))
            actors.reused += 1
        except ValueError:  # not loaded yet: create it (get_if_exists: another client may race us)
            create(name, node)
    return actors


def _lease(pool_actor, *args) -> None:
    import ray

    try:
        ray.get(pool_actor().lease.remote(*args))
    except ray.exceptions.RayActorError:  # the pool left (long empty) as we called: a new one starts
        ray.get(pool_actor().lease.remote(*args))


def _let_go(actors: Actors) -> None:
    """Private actors end now; warm ones go back to the pool with the memory they hold."""
    import ray

    if actors.key is None:
        for handle in actors.handles:
            ray.kill(handle)  # a lost one too: no error
        return
    from cluster.ray.warmpool import pool_actor

    refs = [a.ready.remote() for a in actors.handles]
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=60)
    rss = 0
    for ref in done:
        with contextlib.suppress(ray.exceptions.RayError):  # a lost actor: the pool drops its name later
            rss += ray.get(ref)["rss"]
    evicted = ray.get(pool_actor().release.remote(actors.key, rss))
    if evicted:
        log.info("warm pool unloaded %s", ", ".join(evicted))


# ------------------------------------------------------------------ streaming


def run_pipeline(
    spec: PipelineSpec,
    actors: Actors,
    k: int,
    pred_path: Path | None,
    phases: Phases,
    run: Run | None = None,
):
    """Shards -> actors -> predictions.parquet in input order + merged statistics, each shard's
    once, whatever actors are lost on the way (cluster/evaluation/shard_schedule.py).

    ``run``: the data read (default ``spec.data``) and the analyses computed beside the core
    statistics (cluster/stats/analyses.py). ``pred_path`` None writes no predictions. Returns
    (stats, info): stats None when the model has no classifier or the data no labels; info
    has the precision and device the actors used, per actor its node and rows (``workers``),
    the plan, the recovery, the analyses' merged parts (``parts``), their seconds summed
    over actors (``analyses_s``) and the (row, reason) of images skipped (``bad``, with
    ``skip_bad_rows``). Phases marked: actors_ready (the first actor's model loaded),
    first_result, last_result.
    """
    from cluster.evaluation.shard_schedule import ShardScheduler, Worker
    from cluster.stats.metrics import empty_stats

    run = run or Run(spec.data)
    workers = [
        Worker(h, node, ref) for h, node, ref in zip(actors.handles, actors.nodes, actors.ready, strict=True)
    ]
    lease = _Lease(actors)
    scheduler = ShardScheduler(
        [s.offset for s in actors.shards],
        workers,
        _RayOps(spec, actors, run),
        on_ready=lambda ready: phases.mark("actors_ready", ready["at"]),
        tick=lease.touch,
    )
    stats, info = _collect(scheduler.results(), run, pred_path, phases)
    phases.mark("last_result")
    if stats is None and k and run.data.label_column:  # labelled data but no rows
        stats = empty_stats(k, spec.bootstrap)
    n, cpus, gpus = actors.plan
    info["workers"] = list(scheduler.ledger.workers.values())
    info["worker_plan"] = {"actors": n, "cpus_per_actor": cpus, "gpus_per_actor": gpus}
    info["recovery"] = scheduler.report()
    return stats, info


@dataclass(frozen=True)
class Run:
    """What one pass reads and computes besides the core statistics."""

    data: DataSpec
    analyses: object = None  # cluster.stats.analyses.Analyses or DriftAnalyses; None: none


def _collect(results, run: Run, pred_path: Path | None, phases: Phases) -> tuple:
    """Add up the statistics of each shard's (part, table) and write the predictions in input order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cluster.evaluation.predictor import PLACEHOLDER_ROW
    from cluster.stats.threshold_cells import MergeTree

    stats, trees, writer = None, {}, None
    info = {"precision": None, "device": None, "analyses_s": 0.0, "bad": []}
    rename = {"id": run.data.id_column} if run.data.id_column else {}
    try:
        for part, table in results:
            phases.mark("first_result")
            log.info(
                "shard at row %d (%d rows) from actor %s on node %s",
                *(part["offset"], part["rows"], part["actor"], part["node"]),
            )
            if part["stats"] is not None:
                stats = part["stats"] if stats is None else stats + part["stats"]
            for name, value in part["parts"].items():  # MergeTree: O(log n) copies each
                trees.setdefault(name, MergeTree()).push(value)
            info.update(precision=part["precision"], device=part["device"])
            info["analyses_s"] += part["analyses_s"]
            info["bad"] += part["bad"]
            if pred_path is None:
                continue
            table = table.filter(pc.not_equal(table["row"], PLACEHOLDER_ROW))  # a shard of only bad rows
            table = table.rename_columns([rename.get(c, c) for c in table.column_names])
            writer = writer or pq.ParquetWriter(pred_path, table.schema)
            writer.write_table(table)
    finally:
        if writer:
            writer.close()
    info["parts"] = {name: tree.total() for name, tree in trees.items()}
    return stats, info


class _RayOps:
    """The scheduler's view of Ray (cluster/evaluation/shard_schedule.py: Ops)."""

    def __init__(self, spec: PipelineSpec, actors: Actors, run: Run):
        self.spec, self.actors, self.run = spec, actors, run

    def submit(self, worker, index: int):
        shard = asdict(self.actors.shards[index])
        threads = self.actors.threads  # a warm actor may have been made by a run of another plan
        return worker.handle.score.remote(shard, self.spec, self.run.data, self.run.analyses, threads)

    def wait(self, refs: list, timeout: float) -> list:
        import ray

        return ray.wait(refs, num_returns=1, timeout=timeout)[0]

    def get(self, ref):
        import ray

        return ray.get(ref)

    def kill(self, worker) -> None:
        import ray

        with contextlib.suppress(Exception):  # gone already
            ray.kill(worker.handle)

    def room(self) -> dict[str, int]:
        return node_room(self.actors.plan)

    def spawn(self, node: str):
        from cluster.evaluation.shard_schedule import Worker

        handle = self.actors.make(node)
        return Worker(handle, node, handle.ready.remote())


class _Lease:
    """Renews a warm evaluation's lease in the pool every TOUCH_S (cluster/ray/warmpool.py)."""

    def __init__(self, actors: Actors):
        self.key, self.last = actors.key, time.time()

    def touch(self) -> None:
        if self.key is None or time.time() - self.last < TOUCH_S:
            return
        from cluster.ray.warmpool import pool_actor

        pool_actor().touch.remote(self.key)  # fire and forget
        self.last = time.time()
