"""The seam every evaluation task plugs into: what a task tells the Ray Data pipeline, and no more.

The pipeline (cluster/evaluation/pipeline.py) is the same for every task; a task supplies the
four steps marked ``task.``:

    read        cluster/data/blocks.py         row-contiguous blocks; every row carries ``row``
    preprocess  task.preprocess(block)         Ray Data tasks on CPUs, one whole block per call
    model       task.load(device).predict(b)   Ray Data actors (a GPU each when asked or present),
                                               batches of ``spec.batch_size`` rows
    write       task.statistics(rows)          Ray Data tasks: the rows of one part file -> their
                task.predictions(rows)         mergeable statistics (in the file's footer) and the
                                               prediction columns the file keeps
    driver      merged = a + b + ...           the part files' statistics, read back one at a time
                task.finalize(merged)          -> the scores of metrics.json

Everything between stages is a ``pyarrow.Table``. Column conventions, kept by every stage:

    row      int64, the row's 0-based position in the input: each row exactly once, never renamed
    _bad     string or null: set (to the reason) on a row the task cannot use, e.g. an undecodable
             image under ``skip_bad_rows``; the row still flows to the write stage, which lists it
             (metrics.json ``bad_rows``) and leaves it out of the statistics and predictions
    _batch   int64, set by ``preprocess``: the model batch of a row. The model stage runs one
             forward pass per value, so what a row's prediction depends on (padding, batch size)
             is fixed by its block, never by how Ray sliced or bundled the batches
    _content uint64, optional (``preprocess``): a hash of the row's inputs and label; their sum is
             the fingerprint of a run on a ray.data.Dataset (a path's is the driver's scan)
    _*       any other leading-underscore column is the task's own intermediate data: carried from
             stage to stage, never written to the predictions

The rules that make the statistics exact (tests/test_task_contract.py checks them for each task):

1. ``statistics(rows)`` is a pure function of the rows it is given, and merging is exact and
   order-free: ``statistics(a ∪ b) == statistics(a) + statistics(b)`` for disjoint row sets (in
   value, bit for bit where the parts are integer counts). Ray Data may cut, bundle and retry
   blocks as it likes; the driver's merge over the part files is then the statistic of every row.
   A per-row contribution that needs the model (a perturbed prediction, an embedding, a per-row
   confusion matrix) is a column the model stage adds, so the write stage only adds it up.
2. Every value ``statistics`` returns has ``__add__`` and is a type the statistics codec knows
   (cluster/stats/codec.py: numpy arrays, numbers, strings, lists, tuples, dicts and dataclasses
   registered with ``codec.register``): part files are read back without pickle.
3. A task object travels to every worker (pickled once per stage): it holds settings and the model's
   location, never a loaded model; ``load`` runs in the model actor.

Implementations: cluster/evaluation/classify.py (text and image classification),
cluster/evaluation/segment.py (semantic segmentation) and cluster/evaluation/translate.py
(translation), chosen by :func:`task_for` (cluster/evaluation/tasks.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import pyarrow as pa

ROW, BAD, BATCH = "row", "_bad", "_batch"
CONTENT = "_content"  # optional, set by ``preprocess``: a uint64 hash of the row's inputs (see above)


class TaskModel(Protocol):
    """A task's model, loaded in a model-stage actor (or a warm actor that outlives the run)."""

    device: str  # "cpu" or "cuda"
    precision: str  # what the forward passes run at: fp32, bf16, fp16

    def predict(self, batch: pa.Table) -> pa.Table:
        """One model batch (rows of one ``_batch`` value, bad rows included) -> the same rows with the
        model's per-row output columns added; columns only the model needed (token ids, pixels) are
        dropped. Bad rows pass through with null outputs."""
        ...

    def use(self, task: EvalTask) -> None:
        """A warm model actor (cluster/evaluation/warm.py) serves a later run of the same model: that
        run's settings (its task object) from now on, e.g. its torch threads and per-run state."""
        ...


class EvalTask(ABC):
    """One kind of evaluation: its inputs, its CPU and model steps, its statistics and scores."""

    name: ClassVar[str]  # e.g. "classification"; metrics.json ``task``

    # ------------------------------------------------------------------ on the driver, before

    @abstractmethod
    def input_columns(self) -> dict[str, str]:
        """Pipeline column -> the input file's column, e.g. ``{"text": "tweet", "label": "gold"}``
        (the read stage reads and renames exactly these, and adds ``row``)."""

    def block_rows(self, rows_per_block: int) -> int:
        """Rows per read block for a requested size (images: fewer, so a decoded block stays small)."""
        return rows_per_block

    # ------------------------------------------------------------------ CPU stage (tasks)

    @abstractmethod
    def preprocess(self, block: pa.Table) -> pa.Table:
        """A whole read block -> model-ready columns (token ids, decoded pixels) plus ``_batch``;
        a row that cannot be used is kept with ``_bad`` set (or raises a UserError naming its row).
        Order the rows as the model should see them (e.g. by length, so batches pad little)."""

    # ------------------------------------------------------------------ model stage (actors)

    @abstractmethod
    def load(self, device: str) -> TaskModel:
        """Load the model onto ``device`` ("cpu" or "cuda"), ready for ``predict``."""

    # ------------------------------------------------------------------ write stage (tasks)

    @abstractmethod
    def statistics(self, rows: pa.Table) -> dict[str, Any]:
        """The mergeable statistics of ``rows`` (bad rows excluded by the caller), by name."""

    @abstractmethod
    def predictions(self, rows: pa.Table) -> pa.Table:
        """The prediction columns a part file keeps for ``rows`` (``row`` first; bad rows excluded)."""

    # ------------------------------------------------------------------ on the driver, after

    @abstractmethod
    def finalize(self, merged: dict[str, Any]) -> dict:
        """metrics.json's scores from the statistics of every row (``merged``: name -> a + b + ...;
        a name no part had is absent)."""
