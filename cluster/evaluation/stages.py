"""The pipeline's CPU and model stages around a task (cluster/evaluation/task.py).

``preprocess`` runs as Ray Data tasks (one whole block per call). :class:`ModelStage` is the
callable class of the model stage's ``map_batches``: Ray Data's actor pool makes one per actor,
which loads the task's model once (or, on a running head, reaches a warm actor that already
holds it: cluster/evaluation/warm.py) and then runs one forward pass per ``_batch`` value of each
batch it is given. It tags every row with the actor that computed it (``_worker``).
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from cluster.evaluation.sink import WORKER, worker_key
from cluster.evaluation.task import BATCH, EvalTask


def preprocess(block: pa.Table, task: EvalTask) -> pa.Table:
    """The CPU stage: ``task.preprocess`` on one whole read block."""
    return task.preprocess(block)


class ModelStage:
    """One model-stage actor: the task's model, loaded here (cold) or held by a warm actor."""

    def __init__(self, task: EvalTask, gpus: float = 0.0, warm=None):
        from cluster.models.device import pick_device

        device = pick_device(gpus)
        if warm is None:
            self.model = task.load(device)
            actor, node, reused = *_where(), False
        else:  # a warm actor on a running head computes; this actor sends it the batches
            from cluster.evaluation.warm import WarmClient

            self.model = WarmClient(warm, task)
            actor, node, reused = self.model.actor_id, self.model.actor_node, self.model.reused
        m = self.model
        self.worker = worker_key(actor, node, m.device, m.precision, time.time(), warm=reused)

    def __call__(self, batch: pa.Table) -> pa.Table:
        groups = model_batches(batch)
        outs = [self.model.predict(batch.take(pa.array(idx))) for idx in groups]
        out = outs[0] if len(outs) == 1 else pa.concat_tables(outs, promote_options="permissive")
        zeros = pa.array(np.zeros(out.num_rows, np.int32))
        tag = pa.DictionaryArray.from_arrays(zeros, pa.array([self.worker]))
        return out.append_column(WORKER, tag)


def model_batches(batch: pa.Table) -> list[np.ndarray]:
    """Row indices of each ``_batch`` value, in order of first appearance (one group: all rows)."""
    if BATCH not in batch.column_names or not batch.num_rows:
        return [np.arange(batch.num_rows)]
    ids = batch[BATCH].to_numpy()
    if ids[0] == ids[-1] and (ids == ids[0]).all():
        return [np.arange(batch.num_rows)]
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == g) for g in order]


def _where() -> tuple[str | None, str | None]:
    """(Ray actor id, Ray node id) of this process."""
    import ray

    ctx = ray.get_runtime_context()
    return ctx.get_actor_id(), ctx.get_node_id()
