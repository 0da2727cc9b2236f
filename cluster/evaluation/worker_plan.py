"""How many model actors an evaluation runs, with how many CPUs/GPUs each, and on which nodes.

    plan = plan_workers(spec, len(shards))   # (actors, CPUs per actor, GPUs per actor)
    nodes = place(plan)                      # a node id per actor, spread over the nodes

Used by cluster/evaluation/pipeline.py (and its recovery: ``node_room`` says where a lost actor's
replacement fits).
"""

from __future__ import annotations

from cluster.errors import UserError
from cluster.specs.workloads import PipelineSpec

# ------------------------------------------------------------------ where the actors go


def node_room(plan: tuple) -> dict[str, int]:
    """Alive node id -> how many of ``plan``'s actors it has room for (its CPUs, or GPUs, per actor)."""
    import ray

    _, cpus, gpus = plan
    room = {}
    for n in ray.nodes():
        if n.get("Alive"):
            res = n["Resources"]
            room[n["NodeID"]] = int(res.get("GPU", 0) // gpus) if gpus else int(res.get("CPU", 0) // cpus)
    return room


def place(plan: tuple) -> list[str]:
    """A node for each of ``plan``'s actors: the nodes' room taken in turns (this process's node
    first, then by id), so the actors spread over the nodes."""
    import ray

    room = node_room(plan)
    here = ray.get_runtime_context().get_node_id()
    order = sorted(room, key=lambda n: (n != here, n))
    slots = [n for r in range(max(room.values(), default=0)) for n in order if room[n] > r]
    slots = slots or order or [here]  # no room anywhere: Ray queues them where asked
    return [slots[i % len(slots)] for i in range(plan[0])]


# ------------------------------------------------------------------ how many actors


def plan_workers(spec: PipelineSpec, shards: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for the connected cluster and ``shards`` shards.

    GPU clusters: one actor per GPU. CPU only: one single-threaded actor per CPU
    (measured on 2 cores, bf16: 2 actors x 1 thread gave 585-613 rows/s against
    520-542 for 1 actor x 2 threads, on the same 3,725 tweets). Never more actors than
    shards (one without a shard loads a model for nothing). Image shards are cut for the
    actors (model_actors); text ones are not: a text's probabilities depend, in their
    last bits, on its batch's padded length, and so on how the rows were sharded.
    """
    from cluster.ray.runtime import cluster_resources, max_gpus_per_node

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
    largest = max(node_room((1, 1.0, 0.0)).values(), default=1)  # an actor's CPUs fit on one node
    return workers, float(max(1, min(cpus_total // workers, largest))), 0.0
