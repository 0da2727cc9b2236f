"""The evaluation pipeline: shards scheduled onto model actors, predictions streamed in input order.

    with model_actors(spec, model, labels, shards, phases) as actors:
        stats, info = run_pipeline(spec, actors, len(labels), pred_path, phases, Run(data, analyses))

The actors (jobs/predictor.py: ModelActor) start loading their model as soon as Ray is
up, while the driver is still validating and fingerprinting the data. Each actor reads
its shards itself; the driver keeps two shards in flight per actor, writes the
predictions to Parquet in input order and adds up the statistics, so nothing that
grows with the dataset is held on the driver.

Cold (an embedded Ray): the actors are private to this run. On a persistent Ray
(`evalctl cluster up`, a cluster): they are the warm pool's (cluster/warmpool.py), found
by name when an earlier evaluation of the same model left them loaded, and left loaded
for the next one for ``keep_warm_s`` idle seconds (0: unloaded when this run is done).

Why not Ray Data's ``map_batches(ActorPoolStrategy)`` (what this replaced): its actors
are created only when the dataset executes (after the scan), are never reused by a
later run, and its read tasks need worker processes of their own besides the actors.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cluster.clock import Phases
from cluster.config import DataSpec, PipelineSpec
from cluster.errors import UserError

log = logging.getLogger(__name__)
IN_FLIGHT_PER_ACTOR = 2  # one shard computing, one queued: an actor never waits for the driver
PROCESS_BYTES = 450 * 2**20  # an actor's memory besides its weights (torch + transformers), measured
TOUCH_S = 10.0  # how often a warm evaluation renews its lease (cluster/warmpool.py)


@dataclass
class Actors:
    """The model actors of one evaluation, where they came from, and the shards they get."""

    handles: list
    plan: tuple[int, float, float]  # (actors, CPUs each, GPUs each)
    joined: str  # what init_ray joined (cluster/runtime.py)
    shards: list = field(default_factory=list)  # the input's shards, in input order
    key: str | None = None  # warm-pool key; None for private (cold) actors
    reused: int = 0  # actors that were already loaded (warm)
    ready: list = field(default_factory=list)  # ObjectRefs of each actor's ready()


@contextlib.contextmanager
def model_actors(
    spec: PipelineSpec, model, labels: list[str] | None, shards: list, phases: Phases
) -> Iterator[Actors]:
    """Start Ray and the model actors of ``model`` (a cluster.modeling.ModelRef), not waiting for
    them; release or end them afterwards. ``labels`` None: a bare encoder (drift checks)."""
    from cluster.runtime import init_ray

    phases.mark("ray_start")
    joined = init_ray()
    phases.mark("ray_up")
    plan = plan_workers(spec, len(shards))
    warm = joined != "embedded"  # loaded actors are reused even with keep_warm_s 0 (then unloaded)
    actors = _warm(spec, model, labels, plan, joined) if warm else _cold(spec, model, labels, plan)
    actors.joined, actors.shards = joined, shards
    actors.ready = [a.ready.remote() for a in actors.handles]  # queued behind each model load
    log.info(
        "%d model actors (%d warm), %g CPUs / %g GPUs each", len(actors.handles), actors.reused, *plan[1:]
    )
    try:
        yield actors
    finally:
        _let_go(actors)


def _actor_class(cpus: float, gpus: float, **options):
    import ray

    from jobs.predictor import ModelActor

    # No restarts: a lost actor fails the run, which is recorded as failed and can be rerun.
    return ray.remote(ModelActor).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0, **options)


def _cold(spec: PipelineSpec, model, labels: list[str], plan: tuple) -> Actors:
    workers, cpus, gpus = plan
    cls = _actor_class(cpus, gpus)
    handles = [cls.remote(model.source, labels, spec, gpus, int(cpus)) for _ in range(workers)]
    return Actors(handles, plan, joined="")


def _warm(spec: PipelineSpec, model, labels: list[str], plan: tuple, joined: str) -> Actors:
    """The warm pool's actors for this model: found by name, else created (and leased first, so the
    pool knows them before they exist). They reserve no CPU: a loaded model waiting for the next
    evaluation must not keep a sweep or a Serve replica from being scheduled."""
    import ray

    from cluster.warmpool import NAMESPACE, actor_names, model_key, pool_actor

    workers, cpus, gpus = plan
    model_path = model.path  # this machine's copy: its files' names, sizes and mtimes make the key
    key = model_key(model_path, spec.precision, gpus, actor_kind(model, labels))
    names = actor_names(key, workers)
    label = {
        "model": model.location or str(model_path),
        "kind": actor_kind(model, labels),
        "precision": spec.precision,
        "device": "gpu" if gpus else "cpu",
    }
    est = workers * (PROCESS_BYTES + _weights_bytes(model_path))
    _lease(pool_actor, key, names, label, spec.keep_warm_s, est)
    handles, reused = [], 0
    for name in names:
        try:
            handles.append(ray.get_actor(name, namespace=NAMESPACE))
            reused += 1
        except ValueError:  # not loaded yet: create it (get_if_exists: another client may race us)
            options = {"namespace": NAMESPACE, "lifetime": "detached", "name": name, "get_if_exists": True}
            cls = _actor_class(0, gpus, **options)
            handles.append(cls.remote(model.source, labels, spec, gpus, int(cpus)))
    return Actors(handles, plan, joined, key=key, reused=reused)


def actor_kind(model, labels) -> str:
    """What a model actor loads: ``text-classifier``, ``text-encoder`` (drift) or ``image-classifier``."""
    return f"{model.modality}-{'encoder' if labels is None else 'classifier'}"


def _lease(pool_actor, *args) -> None:
    import ray

    try:
        ray.get(pool_actor().lease.remote(*args))
    except ray.exceptions.RayActorError:  # the pool left (long empty) as we called: a new one starts
        ray.get(pool_actor().lease.remote(*args))


def _weights_bytes(model_path: Path) -> int:
    return sum(f.stat().st_size for f in Path(model_path).glob("*.safetensors"))


def _let_go(actors: Actors) -> None:
    """Private actors end now; warm ones go back to the pool with the memory they hold."""
    import ray

    if actors.key is None:
        for handle in actors.handles:
            ray.kill(handle)
        return
    from cluster.warmpool import pool_actor

    try:
        rss = sum(r["rss"] for r in ray.get([a.ready.remote() for a in actors.handles], timeout=60))
    except (ray.exceptions.RayError, TimeoutError):  # a lost actor: the pool drops it by its lease
        rss = 0
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
    """Shards -> actors -> predictions.parquet in input order + merged statistics.

    ``run``: the data read (default ``spec.data``) and the analyses computed beside the core
    statistics (cluster/analyses.py). ``pred_path`` None writes no predictions. Returns
    (stats, info): stats None when the model has no classifier or the data no labels; info
    has the precision and device the actors used, how many actors ran, the analyses' merged
    parts (``parts``), their seconds summed over actors (``analyses_s``) and the (row, reason)
    of images skipped (``bad``, with ``skip_bad_rows``). Phases marked: actors_ready (the
    first actor's model loaded), first_result, last_result.
    """
    from cluster.metrics import empty_stats

    run = run or Run(spec.data)
    _watch_ready(actors, phases)
    stats, info = _collect(_ordered_results(spec, actors, run), run, pred_path, phases)
    phases.mark("last_result")
    if stats is None and k and run.data.label_column:  # labelled data but no rows
        stats = empty_stats(k, spec.bootstrap)
    info["workers"] = len(actors.handles)
    return stats, info


@dataclass(frozen=True)
class Run:
    """What one pass reads and computes besides the core statistics."""

    data: DataSpec
    analyses: object = None  # cluster.analyses.Analyses or DriftAnalyses; None: none


def _collect(tables, run: Run, pred_path: Path | None, phases: Phases) -> tuple:
    """Add up the statistics riding in each table and write the predictions in input order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cluster.threshold_cells import MergeTree
    from jobs.predictor import PLACEHOLDER_ROW

    stats, trees, writer = None, {}, None
    info = {"precision": None, "device": None, "analyses_s": 0.0, "bad": []}
    rename = {"id": run.data.id_column} if run.data.id_column else {}
    try:
        for table in tables:
            phases.mark("first_result")
            for payload in table["_stats"].to_pylist():
                if payload:
                    part = pickle.loads(payload)
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
            table = table.drop_columns(["_stats"])
            table = table.rename_columns([rename.get(c, c) for c in table.column_names])
            writer = writer or pq.ParquetWriter(pred_path, table.schema)
            writer.write_table(table)
    finally:
        if writer:
            writer.close()
    info["parts"] = {name: tree.total() for name, tree in trees.items()}
    return stats, info


def _watch_ready(actors: Actors, phases: Phases) -> None:
    """Mark ``actors_ready`` when the first actor answers ready() (its model loaded)."""
    import ray

    done, _ = ray.wait(actors.ready, num_returns=1)
    phases.mark("actors_ready", ray.get(done[0])["at"])


def _ordered_results(spec: PipelineSpec, actors: Actors, run: Run):
    """Yield each shard's prediction table in input order, keeping every actor busy.

    A shard goes to the actor with the fewest in flight; results that arrive early wait
    (at most a few per actor) until the ones before them are written.
    """
    import ray

    handles, shards = actors.handles, actors.shards
    n = len(shards)
    inflight = [0] * len(handles)
    pending: dict = {}  # ObjectRef -> (shard index, actor index)
    done: dict[int, object] = {}
    submitted = written = 0
    touched = time.time()
    while written < n:
        while submitted < n and submitted - written < IN_FLIGHT_PER_ACTOR * 2 * len(handles):
            a = min(range(len(handles)), key=inflight.__getitem__)
            if inflight[a] >= IN_FLIGHT_PER_ACTOR:
                break
            ref = handles[a].score.remote(asdict(shards[submitted]), spec, run.data, run.analyses)
            pending[ref], submitted, inflight[a] = (submitted, a), submitted + 1, inflight[a] + 1
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=TOUCH_S)
        for ref in ready:
            i, a = pending.pop(ref)
            inflight[a] -= 1
            done[i] = _result(ref)
        while written in done:
            yield done.pop(written)
            written += 1
        touched = _touch(actors, touched)


def _result(ref):
    """An actor's table; a user error raised in the actor (e.g. an unreadable shard) as itself."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from exc
        raise


def _touch(actors: Actors, last: float) -> float:
    if actors.key is None or time.time() - last < TOUCH_S:
        return last
    from cluster.warmpool import pool_actor

    pool_actor().touch.remote(actors.key)  # fire and forget
    return time.time()


# ------------------------------------------------------------------ how many actors


def plan_workers(spec: PipelineSpec, shards: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for the connected cluster and ``shards`` shards.

    GPU clusters: one actor per GPU. CPU only: one single-threaded actor per CPU
    (measured on 2 cores, bf16: 2 actors x 1 thread gave 585-613 rows/s against
    520-542 for 1 actor x 2 threads, on the same 3,725 tweets). Never more actors
    than shards: an actor without a shard only loads a model for nothing. (Shards are
    not cut finer for more actors: a text's probabilities depend, in their last bits,
    on the padded length of its batch, and so on how the rows were sharded.)
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
        return min(spec.workers or max(1, int(total_gpus // gpus)), shards), 1.0, gpus
    workers = min(spec.workers or cpus_total, max(1, shards))
    return workers, float(max(1, cpus_total // workers)), 0.0
