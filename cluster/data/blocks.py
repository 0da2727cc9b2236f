"""Blocks: the evaluation pipeline's read, as a Ray Data datasource of row-contiguous blocks.

    fs, blocks = plan_blocks(spec, limit, rows_per_block=1024, align=64)
    source = BlocksDatasource(blocks, {"text": "tweet", "label": "gold"})
    ds = ray.data.read_datasource(source, override_num_blocks=len(blocks))

The blocks are planned on the driver from metadata alone (cluster/data/shards.py: Parquet row
groups, CSV/JSONL files in pieces); a read task on any node opens its pieces by path or URI
(cluster/data/storage.py, with that node's AWS settings) and yields one block whose rows carry
``row``, their 0-based position in the input, which Ray's own readers do not expose.

Every block starts at a multiple of ``align`` input rows (the batch size) and holds at least
``align`` rows (unless the whole input is smaller), so Ray Data never bundles two blocks into
one model batch, and a block's rows are the same whatever else the run does (docs/design.md).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pyarrow as pa
import pyarrow.fs as pafs
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from cluster.data.files import read_file
from cluster.data.shards import Shard, plan_shards
from cluster.data.storage import resolve
from cluster.specs.workloads import DataSpec

Block = list[Shard]  # contiguous pieces, each within one file
EST_BYTES_PER_ROW = 200  # Ray Data's memory estimate before a block is read (tweets: ~150 B)


def plan_blocks(
    spec: DataSpec, limit: int | None, rows_per_block: int, align: int, min_blocks: int = 1
) -> tuple[pafs.FileSystem, list[Block]]:
    """The input's rows cut into blocks of about ``rows_per_block`` (at least ``min_blocks`` of
    them when the rows allow: spreads a small input over the actors), cut at multiples of ``align``."""
    fs, pieces = plan_shards(spec, limit, rows_per_block)
    total = sum(p.num_rows for p in pieces)
    wanted = max(1, math.ceil(total / max(1, min_blocks)))
    if wanted < rows_per_block:  # re-planned smaller (metadata only)
        fs, pieces = plan_shards(spec, limit, max(align, wanted))
    return fs, cut_blocks(pieces, align)


def cut_blocks(pieces: list[Shard], align: int) -> list[Block]:
    """Contiguous ``pieces`` regrouped into blocks whose bounds are multiples of ``align`` (the
    pieces' own starts, rounded down), each at least ``align`` rows but perhaps the only one."""
    if not pieces:
        return []
    total = pieces[-1].offset + pieces[-1].num_rows
    cuts = sorted({align * (p.offset // align) for p in pieces} - {0})
    if cuts and total - cuts[-1] < align:
        cuts.pop()  # the tail joins the block before it
    bounds = [0, *cuts, total]
    return [_within(pieces, lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]


def _within(pieces: list[Shard], lo: int, hi: int) -> Block:
    """The parts of ``pieces`` covering input rows [lo, hi)."""
    out = []
    for p in pieces:
        a, b = max(lo, p.offset), min(hi, p.offset + p.num_rows)
        if a < b:
            out.append(replace(p, offset=a, num_rows=b - a, start=p.start + a - p.offset))
    return out


def block_rows(block: Block) -> tuple[int, int]:
    """(first input row, rows) of a block."""
    return block[0].offset, sum(p.num_rows for p in block)


def read_block(block: Block, columns: dict[str, str], constants: dict | None = None) -> pa.Table:
    """``row`` plus the input columns named in ``columns`` (pipeline name -> file column), renamed,
    plus a column per entry of ``constants`` (name -> the same value on every row, e.g. a side)."""
    tables = []
    for piece in block:
        fs, path = resolve(piece.uri)
        wanted = list(dict.fromkeys(columns.values()))
        t = read_file(fs, path, piece.fmt, columns=wanted, row_groups=piece.row_groups)
        t = t.slice(piece.start, piece.num_rows)
        cols = {"row": pa.array(range(piece.offset, piece.offset + t.num_rows), pa.int64())}
        cols.update({name: t[source] for name, source in columns.items()})
        for name, value in (constants or {}).items():
            cols[name] = pa.array([value] * t.num_rows, pa.string())
        tables.append(pa.table(cols))
    return pa.concat_tables(tables, promote_options="permissive")


class BlocksDatasource(Datasource):
    """Reads planned ``blocks``: one read task, and one output block, per block."""

    def __init__(self, blocks: list[Block], columns: dict[str, str], constants: dict | None = None):
        super().__init__()
        self.blocks, self.columns, self.constants = blocks, columns, constants

    def get_name(self) -> str:
        return "ReadBlocks"

    def estimate_inmemory_data_size(self) -> int:
        return sum(block_rows(b)[1] for b in self.blocks) * EST_BYTES_PER_ROW

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        # One task per planned block, whatever ``parallelism`` asks: the blocks are the layout.
        return [_read_task(b, self.columns, self.constants) for b in self.blocks]


def _read_task(block: Block, columns: dict[str, str], constants: dict | None) -> ReadTask:
    _, n = block_rows(block)
    files = tuple(dict.fromkeys(p.uri for p in block))
    meta = BlockMetadata(num_rows=n, size_bytes=n * EST_BYTES_PER_ROW, input_files=files, exec_stats=None)
    return ReadTask(lambda: [read_block(block, columns, constants)], meta)
