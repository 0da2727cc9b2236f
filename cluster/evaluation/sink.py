"""The pipeline's write stage: each Ray Data write task scores its rows and writes one part file.

A part file is Parquet: the task's prediction columns of the rows it holds (sorted by ``row``),
and in its footer those rows' statistics (cluster/evaluation/parts.py: ``Part``). Scoring in the
write task makes the statistics a function of exactly the rows the file holds, so whatever Ray
Data does with blocks (retry a task, rebuild a lost block, bundle two) the files add up to every
row once, and the statistics with them.

Why a ``BlockBasedFileDatasink``: Ray Data's checkpointing (ray.data.checkpoint) gives file
datasinks a two-phase commit: a pending checkpoint of the task's ``row`` ids is written before its
file, committed after it, and a resumed run deletes the files of pending checkpoints before it
skips the committed rows (docs/design.md, "Resuming"). A write task retried by Ray writes the
same file name again (names are the write's uuid and the task's index), never a second file.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import SaveMode
from ray.data.block import BlockAccessor
from ray.data.datasource import BlockBasedFileDatasink

from cluster.evaluation.parts import Coverage, Part, Span, Workers, bad_rows_of, coverage_of, encode_part
from cluster.evaluation.task import BAD, CONTENT, ROW, EvalTask

WORKER = "_worker"  # set by the model stage: which actor computed the row (cluster/evaluation/stages.py)


class PartsDatasink(BlockBasedFileDatasink):
    """Writes each write task's rows as one part file under ``path`` (appending: a resumed run adds
    its files beside the committed ones)."""

    def __init__(self, path: str, task: EvalTask, filesystem=None):
        super().__init__(path, filesystem=filesystem, file_format="parquet", mode=SaveMode.APPEND)
        self.task = task

    def write_block_to_file(self, block: BlockAccessor, file) -> None:
        table, metadata = score_rows(self.task, block.to_arrow())
        pq.write_table(table.replace_schema_metadata(metadata), file, row_group_size=max(1, table.num_rows))


def score_rows(task: EvalTask, rows: pa.Table) -> tuple[pa.Table, dict[bytes, bytes]]:
    """(the part file's prediction table, its footer metadata) for ``rows`` (bad rows included)."""
    rows = rows.sort_by(ROW)
    ids = rows[ROW].to_numpy()
    bad_mask = _bad_mask(rows)
    good = rows.filter(pc.invert(bad_mask)) if bad_mask is not None else rows
    bad = rows.filter(bad_mask) if bad_mask is not None else rows.slice(0, 0)
    part = Part(
        task=task.name,
        stats=task.statistics(good) if good.num_rows else {},
        coverage=coverage_of(ids),
        bad=bad_rows_of(bad[ROW].to_pylist(), bad[BAD].to_pylist()) if bad.num_rows else bad_rows_of([], []),
        workers=_workers(rows),  # a skipped image was read by its actor too
        written=Span(time.time(), time.time()),
        content=_content(rows),
    )
    return task.predictions(good), encode_part(part)


def _content(rows: pa.Table) -> Coverage | None:
    """The sum (mod 2**64) of the rows' ``_content`` hashes, when the task set them."""
    if CONTENT not in rows.column_names:
        return None
    h = rows[CONTENT].to_numpy().astype(np.uint64)
    return Coverage(len(h), int(h.sum(dtype=np.uint64)))


def _bad_mask(rows: pa.Table) -> pa.ChunkedArray | None:
    if BAD not in rows.column_names or rows[BAD].null_count == rows.num_rows:
        return None
    return pc.is_valid(rows[BAD])


def _workers(rows: pa.Table) -> Workers:
    if WORKER not in rows.column_names or not rows.num_rows:
        return Workers()
    counts = pc.value_counts(rows[WORKER].cast(pa.string())).to_pylist()
    return Workers({d["values"]: d["counts"] for d in counts})


def worker_key(actor, node, device: str, precision: str, ready_at: float, warm: bool = False) -> str:
    """The ``_worker`` value of the rows one model actor computed (``ready_at``: when its model was
    loaded, wall clock, so a restarted actor is a new entry; ``warm``: it was loaded already)."""
    who = {"actor": actor, "node": node, "device": device, "precision": precision, "ready_at": ready_at}
    return json.dumps({**who, "warm": warm}, sort_keys=True)
