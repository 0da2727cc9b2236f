"""Shards: row-contiguous pieces of a dataset that keep their input offsets.

Shards are planned on the driver from cheap metadata (Parquet row groups; CSV/JSONL
files in pieces) so that every row keeps its 0-based position in the input (``row``),
which the predictions need and Ray's own readers do not expose. The evaluation reads each
shard as one Ray Data block (cluster/data/blocks.py), so no table that grows with the dataset
passes through the driver.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.data.files import input_column, read_file, resolve_files, source_columns
from cluster.data.storage import as_uri, resolve
from cluster.errors import UserError
from cluster.specs.workloads import DataSpec

log = logging.getLogger(__name__)
ROWS_PER_SHARD = 1024  # default target rows per shard (= per Ray Data block, the unit of parallel work)
MAX_PIECES_PER_TEXT_FILE = 8  # a CSV/JSONL piece re-reads its whole file: cap the re-reads


@dataclass
class Shard:
    """A contiguous run of input rows: ``num_rows`` rows starting at input row ``offset``."""

    uri: str  # filesystem URI or local path of one file
    fmt: str  # parquet | csv | jsonl
    offset: int
    num_rows: int
    row_groups: list[int] | None = None  # Parquet only
    start: int = 0  # rows to skip in what is read (the file, or its row groups)


def plan_shards(
    spec: DataSpec, limit: int | None = None, rows_per_shard: int = ROWS_PER_SHARD
) -> tuple[pafs.FileSystem, list[Shard]]:
    """Split the input into row-contiguous shards with their offsets, cut at the global multiples of
    ``rows_per_shard`` (and at file ends) only: which rows share a shard, and so a sort group
    (PipelineSpec.sort_rows divides rows_per_shard), is a function of the rows' positions."""
    fs, files, fmt = resolve_files(spec.path)
    shards: list[Shard] = []
    offset = 0
    for path in files:
        uri = as_uri(spec.path, fs, path)  # s3://bucket/key: a read task on any node opens it by URI
        if fmt == "parquet":
            groups = _row_group_sizes(fs, path, uri)
            n, size = sum(groups), rows_per_shard
        else:  # a CSV/JSONL piece re-reads its whole file: at most MAX_PIECES_PER_TEXT_FILE pieces
            groups, n = None, read_file(fs, path, fmt, columns=None, encoding=spec.encoding).num_rows
            size = rows_per_shard * max(1, -(-n // (MAX_PIECES_PER_TEXT_FILE * rows_per_shard)))
        shards += _aligned(uri, fmt, offset, n, size, groups)
        offset += n
        if limit is not None and offset >= limit:
            break
    if limit is not None:
        shards = _cut(shards, limit)
    shards = [s for s in shards if s.num_rows > 0]
    log.debug("%s: %d %s file(s) -> %d shards", spec.path, len(files), fmt, len(shards))
    return fs, shards


def _row_group_sizes(fs: pafs.FileSystem, fs_path: str, path: str) -> list[int]:
    """Rows of each row group of a Parquet file (``fs_path`` on ``fs``; ``path`` as errors name it)."""
    try:
        with fs.open_input_file(fs_path) as f:
            meta = pq.ParquetFile(f).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from exc
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _aligned(uri: str, fmt: str, offset: int, n: int, size: int, groups: list[int] | None) -> list[Shard]:
    """The shards of one file holding input rows [offset, offset + n): cut at the global multiples
    of ``size``. Parquet shards name the row groups they overlap and where in them they start;
    CSV/JSONL ones where in the file."""
    bounds = [offset, *range((offset // size + 1) * size, offset + n, size), offset + n]
    starts = list(itertools.accumulate([0, *(groups or [])]))  # row group i: [starts[i], starts[i+1])
    shards = []
    for lo, hi in itertools.pairwise(bounds):
        if hi == lo:  # an empty file
            continue
        a, b = lo - offset, hi - offset  # within the file
        if groups is None:
            shards.append(Shard(uri, fmt, lo, hi - lo, None, a))
            continue
        overlap = [i for i in range(len(groups)) if starts[i] < b and starts[i + 1] > a]
        shards.append(Shard(uri, fmt, lo, hi - lo, overlap, a - starts[overlap[0]]))
    return shards


def _cut(shards: list[Shard], limit: int) -> list[Shard]:
    out = []
    for s in shards:
        if s.offset >= limit:
            break
        out.append(Shard(s.uri, s.fmt, s.offset, min(s.num_rows, limit - s.offset), s.row_groups, s.start))
    return out


def read_shard(
    shard: Shard, spec: DataSpec, fs: pafs.FileSystem | None = None, modality: str = "text"
) -> pa.Table:
    """Read one shard as a table with ``row``, ``text`` (or ``image``: bytes, or a path/URI string)
    and, when set, ``label``/``id``/``slice``."""
    if fs is None:
        fs, path = resolve(shard.uri)
    else:
        path = shard.uri.split("://", 1)[-1]
    wanted = source_columns(spec, modality)
    table = read_file(fs, path, shard.fmt, wanted, shard.row_groups, encoding=spec.encoding)
    table = table.slice(shard.start, shard.num_rows)
    out = {"row": pa.array(range(shard.offset, shard.offset + table.num_rows), pa.int64())}
    if modality == "image":
        out["image"] = _image_values(table[input_column(spec, modality)], spec)
    else:
        out["text"] = table[spec.text_column].cast(pa.string())
    if spec.label_column:
        out["label"] = table[spec.label_column].cast(pa.string())
    if spec.id_column:
        out["id"] = table[spec.id_column]
    if spec.slice_column:
        out["slice"] = table[spec.slice_column].cast(pa.string())
    return pa.table(out)


def _image_values(col: pa.ChunkedArray, spec: DataSpec) -> pa.ChunkedArray:
    """Encoded images stay binary; a string column holds paths or URIs."""
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return col.cast(pa.binary())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    raise UserError(
        f'image column "{spec.image_column}" of {spec.path} is {t}; '
        "allowed: binary (PNG/JPEG bytes) or string (a path or URI of an image file)"
    )
