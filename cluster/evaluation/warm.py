"""Warm evaluations on a running head: the model stage reaches long-lived model actors.

On an embedded Ray (the default for one command) each model-stage actor loads the task's model
itself and ends with the run. On a running head or cluster, Ray Data's model-stage actors are thin
clients instead: each claims a *warm* model actor (:class:`WarmModel`, detached and named after the
model's key, cluster/ray/warmpool.py) for its run, creates it if no free one exists, and sends it
its batches. A later evaluation of the same model from any client finds the warm actors loaded:
no torch import, no model load. The pool keeps their number and memory within the head's limits
and unloads idle ones (`evalctl cluster status` lists them).

Resources: a client reserves the CPU its warm actor computes on (the layout's CPUs per actor), so
Ray Data's accounting stays true, and the warm actor reserves none (it never keeps a sweep or a
Serve replica from a CPU while idle); on CPUs it is placed on its client's node. A GPU warm actor
holds its GPU while warm. A warm actor lost with its node is made again by the client that used it
(on the client's node: a lost client is restarted by Ray Data and claims another).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import pyarrow as pa

from cluster.ray.warmpool import (
    NAMESPACE,
    TOUCH_EVERY_S,
    actor_kind,
    memory_estimate,
    model_key,
    pool_actor,
    pool_name,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmTarget:
    """What a model-stage client needs to reach its warm actor."""

    key: str  # the warm-pool key (model files, what is loaded, precision, device, code)
    run: str  # the run's token: the actors it claims are its own until it releases them
    gpus: float  # GPUs per warm actor (0: on the client's node, no resource reserved)
    pool: str  # the pool actor's name, as the driver found it (a worker never derives its own)


class WarmModel:
    """A detached actor holding one task's model between evaluations (see the module docstring)."""

    def __init__(self, task, gpus: float):
        import ray

        from cluster.models.device import pick_device

        self.model, self.run = task.load(pick_device(gpus)), task.run_token
        ctx = ray.get_runtime_context()
        self.actor, self.node = ctx.get_actor_id(), ctx.get_node_id()

    def ready(self) -> dict:
        """Answered once the model is loaded: where it runs, on what, the memory this process holds."""
        import torch

        from cluster.clock import rss_bytes

        m = self.model
        return {
            "threads": torch.get_num_threads(),
            "actor": self.actor,
            "node": self.node,
            "device": m.device,
            "precision": m.precision,
            "rss": rss_bytes(),
        }

    def predict(self, batch: pa.Table, task) -> pa.Table:
        """One model batch under ``task``'s settings (a later run's, when this actor was made earlier)."""
        if task.run_token != self.run:
            self.model.use(task)
            self.run = task.run_token
        return self.model.predict(batch)


class WarmClient:
    """The model held by a warm actor, as a model-stage actor uses it (a TaskModel)."""

    def __init__(self, warm: WarmTarget, task):
        import ray

        self.warm, self.task = warm, task
        self.node = ray.get_runtime_context().get_node_id()
        claim = pool_actor(warm.pool).claim.remote(warm.key, warm.run, self.node)
        self.name, self.reused = ray.get(claim)
        self._connect()

    def _connect(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options = {"name": self.name, "namespace": NAMESPACE, "lifetime": "detached", "get_if_exists": True}
        options.update(num_cpus=0, num_gpus=self.warm.gpus or None, max_restarts=0)
        if not self.warm.gpus:  # it computes on the CPU its client reserved, on the client's node
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.node, soft=False)
        self.actor = ray.remote(WarmModel).options(**options).remote(self.task, self.warm.gpus)
        info = ray.get(self.actor.ready.remote())
        self.device, self.precision = info["device"], info["precision"]
        self.actor_id, self.actor_node = info["actor"], info["node"]

    def predict(self, batch: pa.Table) -> pa.Table:
        import ray

        try:
            return ray.get(self.actor.predict.remote(batch, self.task))
        except ray.exceptions.RayActorError:  # lost (its node, or unloaded): made again, batch sent again
            log.warning("warm model actor %s lost; starting it again", self.name)
            self.reused = False
            self._connect()
            return ray.get(self.actor.predict.remote(batch, self.task))


@contextlib.contextmanager
def warm_lease(spec, model, task, layout, joined: str):
    """On a running Ray (``joined`` not embedded): lease the model's warm actors for this run, keep
    the lease alive while it runs, then hand them back to the pool with the memory they hold.
    Yields the WarmTarget for the model stage, or None on an embedded Ray (cold: nothing to keep)."""
    import ray

    from cluster.ray.runtime import EMBEDDED

    if joined == EMBEDDED:
        yield None
        return
    kind = actor_kind(model.modality, classifier=getattr(task, "labels", None) is not None, task=task.name)
    key = model_key(model.path, spec.precision, layout.gpus_per_actor, kind)
    label = {"model": model.location or str(model.path), "kind": kind, "precision": spec.precision}
    label["device"] = "gpu" if layout.gpus_per_actor else "cpu"
    estimate = memory_estimate(model.path, layout.max_actors)
    name = pool_name()
    pool = pool_actor(name)
    try:
        ray.get(pool.lease.remote(key, [], label, spec.keep_warm_s, estimate))
    except ray.exceptions.RayActorError:  # the pool left (long empty) as we called: a new one starts
        pool = pool_actor(name)
        ray.get(pool.lease.remote(key, [], label, spec.keep_warm_s, estimate))
    stop = threading.Event()
    toucher = threading.Thread(target=_touch, args=(pool, key, stop), name="warm-lease", daemon=True)
    toucher.start()
    try:
        yield WarmTarget(key, task.run_token, layout.gpus_per_actor, name)
    finally:
        stop.set()
        _release(pool, key, task.run_token)


def _touch(pool, key: str, stop: threading.Event) -> None:
    while not stop.wait(TOUCH_EVERY_S):
        pool.touch.remote(key)  # fire and forget


def _release(pool, key: str, run: str) -> None:
    """The run's warm actors back to the pool, with the memory they hold now."""
    import ray

    rss = 0
    for name in ray.get(pool.held.remote(key, run)):
        with contextlib.suppress(ValueError, ray.exceptions.RayError):  # gone: the pool drops it later
            rss += ray.get(ray.get_actor(name, namespace=NAMESPACE).ready.remote(), timeout=60)["rss"]
    evicted = ray.get(pool.release.remote(key, rss, run))
    if evicted:
        log.info("warm pool unloaded %s", ", ".join(evicted))
