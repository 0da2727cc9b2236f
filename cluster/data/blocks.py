"""Blocks: the evaluation pipeline's read, as a Ray Data datasource of row-contiguous blocks.

    fs, blocks = plan_blocks(spec, limit, rows_per_block=1024, align=64)
    source = BlocksDatasource(blocks, {"text": "tweet", "label": "gold"})
    ds = ray.data.read_datasource(source, override_num_blocks=len(blocks))

The blocks are the shards of cluster/data/shards.py, planned on the driver from metadata alone
(Parquet row groups; CSV/JSONL files in pieces) and cut only at the global multiples of the block
size and at file ends. A read task on any node opens its block by path or URI
(cluster/data/storage.py, with that node's AWS settings) and yields it as one Ray Data block whose
rows carry ``row``, their 0-based position in the input, which Ray's own readers do not expose.
Which rows share a block is then a function of their positions: the task's sort groups and model
batches inside it do not depend on anything else (docs/design.md, "Deterministic batches").
"""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.fs as pafs
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from cluster.data.files import read_file
from cluster.data.shards import Shard, plan_shards
from cluster.data.storage import resolve
from cluster.specs.workloads import DataSpec

EST_BYTES_PER_ROW = 200  # Ray Data's memory estimate before a block is read (tweets: ~150 B)


def plan_blocks(
    spec: DataSpec, limit: int | None, rows_per_block: int, align: int = 1, min_blocks: int = 1
) -> tuple[pafs.FileSystem, list[Shard]]:
    """The input's rows in blocks of ``rows_per_block`` (a multiple of ``align``), or smaller ones
    (still multiples of ``align``) when that gives fewer than ``min_blocks`` (a small input spread
    over the actors)."""
    fs, blocks = plan_shards(spec, limit, rows_per_block)
    total = sum(b.num_rows for b in blocks)
    wanted = math.ceil(total / max(1, min_blocks))
    size = max(align, math.ceil(wanted / align) * align)
    if size < rows_per_block:  # planned again, smaller (metadata only)
        fs, blocks = plan_shards(spec, limit, size)
    return fs, blocks


def read_block(block: Shard, columns: dict[str, str], constants: dict | None = None) -> pa.Table:
    """``row`` plus the input columns named in ``columns`` (pipeline name -> file column), renamed,
    plus a column per entry of ``constants`` (name -> the same value on every row, e.g. a side)."""
    fs, path = resolve(block.uri)
    wanted = list(dict.fromkeys(columns.values()))
    t = read_file(fs, path, block.fmt, columns=wanted, row_groups=block.row_groups)
    t = t.slice(block.start, block.num_rows)
    cols = {"row": pa.array(range(block.offset, block.offset + t.num_rows), pa.int64())}
    cols.update({name: t[source] for name, source in columns.items()})
    for name, value in (constants or {}).items():
        cols[name] = pa.array([value] * t.num_rows, pa.string())
    return pa.table(cols)


class BlocksDatasource(Datasource):
    """Reads planned ``blocks``: one read task, and one output block, per block."""

    def __init__(self, blocks: list[Shard], columns: dict[str, str], constants: dict | None = None):
        super().__init__()
        self.blocks, self.columns, self.constants = blocks, columns, constants

    def get_name(self) -> str:
        return "Blocks"  # Ray Data names the read stage "ReadBlocks"

    def estimate_inmemory_data_size(self) -> int:
        return sum(b.num_rows for b in self.blocks) * EST_BYTES_PER_ROW

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        # One task per planned block, whatever ``parallelism`` asks: the blocks are the layout.
        return [_read_task(b, self.columns, self.constants) for b in self.blocks]


def _read_task(block: Shard, columns: dict[str, str], constants: dict | None) -> ReadTask:
    n = block.num_rows
    meta = BlockMetadata(
        num_rows=n, size_bytes=n * EST_BYTES_PER_ROW, input_files=(block.uri,), exec_stats=None
    )
    return ReadTask(lambda: [read_block(block, columns, constants)], meta)
