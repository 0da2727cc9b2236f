"""Shards: row-contiguous pieces of a dataset that keep their input offsets.

Shards are planned on the driver from cheap metadata (Parquet row groups; CSV/JSONL
files in pieces) so that every row keeps its 0-based position in the input (``row``),
which predictions.parquet needs and Ray's own readers do not expose. Each shard is
read inside a Ray Data task, so no table that grows with the dataset passes through
the driver.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.data.files import input_column, read_file, resolve_files, source_columns
from cluster.data.storage import as_uri, resolve
from cluster.errors import UserError
from cluster.specs.workloads import DataSpec

log = logging.getLogger(__name__)
ROWS_PER_SHARD = 1024  # default target rows per shard (= per Ray Data block, the unit of parallel work)
# Image shards per actor: with 4, an actor that ends first idles at most about a quarter of its
# share while the others finish (the driver keeps 2 shards in flight per actor).
SHARDS_PER_ACTOR = 4
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
    """Split the input into row-contiguous shards of about ``rows_per_shard`` rows, with their offsets."""
    fs, files, fmt = resolve_files(spec.path)
    shards: list[Shard] = []
    offset = 0
    for path in files:
        uri = as_uri(spec.path, fs, path)  # s3://bucket/key: a read task on any node opens it by URI
        if fmt == "parquet":
            shards += _parquet_shards(fs, path, uri, offset, rows_per_shard)
            offset = shards[-1].offset + shards[-1].num_rows if shards else offset
        else:
            n = read_file(fs, path, fmt, columns=None, encoding=spec.encoding).num_rows
            size = max(rows_per_shard, -(-n // MAX_PIECES_PER_TEXT_FILE))
            shards += _pieces(uri, fmt, offset, n, size)
            offset += n
        if limit is not None and offset >= limit:
            break
    if limit is not None:
        shards = _cut(shards, limit)
    shards = [s for s in shards if s.num_rows > 0]
    log.debug("%s: %d %s file(s) -> %d shards", spec.path, len(files), fmt, len(shards))
    return fs, shards


def _parquet_shards(fs: pafs.FileSystem, fs_path: str, path: str, offset: int, size: int) -> list[Shard]:
    """Small row groups are merged up to ``size`` rows; large ones are split into pieces.
    ``fs_path`` is the file on ``fs``; ``path`` its location as the shards carry it."""
    try:
        with fs.open_input_file(fs_path) as f:
            meta = pq.ParquetFile(f).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot read {path} as parquet: {str(exc).splitlines()[0]}") from exc
    shards, group, rows = [], [], 0
    for i in range(meta.num_row_groups):
        n = meta.row_group(i).num_rows
        if n > size:
            if group:
                shards.append(Shard(path, "parquet", offset, rows, group))
                offset, group, rows = offset + rows, [], 0
            for piece in _pieces(path, "parquet", offset, n, size, [i]):
                shards.append(piece)
            offset += n
            continue
        group.append(i)
        rows += n
        if rows >= size:
            shards.append(Shard(path, "parquet", offset, rows, group))
            offset, group, rows = offset + rows, [], 0
    if group:
        shards.append(Shard(path, "parquet", offset, rows, group))
    return shards


def _pieces(path: str, fmt: str, offset: int, n: int, size: int, groups: list[int] | None = None):
    """Shards of ``size`` rows covering ``n`` rows that are read together."""
    for start in range(0, n, size):
        yield Shard(path, fmt, offset + start, min(size, n - start), groups, start)


def _cut(shards: list[Shard], limit: int) -> list[Shard]:
    out = []
    for s in shards:
        if s.offset >= limit:
            break
        out.append(Shard(s.uri, s.fmt, s.offset, min(s.num_rows, limit - s.offset), s.row_groups, s.start))
    return out


def shards_for_actors(shards: list[Shard], actors: int, align: int) -> list[Shard]:
    """The same rows cut into about SHARDS_PER_ACTOR shards per actor, at multiples of ``align``
    input rows (the batch size: every batch an actor runs then holds the same rows however the
    input was sharded). Shards only get smaller; each piece re-reads its shard's row groups
    and slices them (``start``), light next to decoding and inference.

    For images, whose inputs all have one size: in bf16 an image's probabilities do not
    depend on the other rows of its batch nor on its size (checked bit for bit:
    benchmarks/image_throughput.py ``parts``); in fp32 they move by ~5e-7 with the batch's
    size, which aligned cuts keep the same for all but a file's last batch.
    """
    total = sum(s.num_rows for s in shards)
    per_shard = -(-total // max(1, SHARDS_PER_ACTOR * actors))  # rows, rounded up
    size = max(1, -(-per_shard // align)) * align
    out = []
    for s in shards:
        cuts = range((s.offset // size + 1) * size, s.offset + s.num_rows, size)
        bounds = [s.offset, *cuts, s.offset + s.num_rows]
        for lo, hi in itertools.pairwise(bounds):
            out.append(Shard(s.uri, s.fmt, lo, hi - lo, s.row_groups, s.start + lo - s.offset))
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


def to_ray_dataset(
    spec: DataSpec, limit: int | None = None, read_cpus: float = 0.0, rows_per_shard: int = ROWS_PER_SHARD
):
    """A ``ray.data.Dataset`` with one block per shard: columns row, text[, label, id, slice]."""
    _, shards = plan_shards(spec, limit, rows_per_shard)
    return shards_dataset(spec, shards, read_cpus)


def shards_dataset(spec: DataSpec, shards: list[Shard], read_cpus: float = 0.0, modality: str = "text"):
    """A ``ray.data.Dataset`` reading the planned ``shards``, one block each.

    ``read_cpus``: CPUs each read task asks for. Reading a shard is light I/O next
    to inference, and with 0 the reads never wait behind inference actors that
    hold every CPU of a small machine (Ray Data's backpressure still bounds them).
    """
    import ray.data

    items = [asdict(s) for s in shards]

    def read_shards(batch: dict) -> pa.Table:
        tables = [
            read_shard(Shard(**{k: batch[k][i] for k in batch}), spec, modality=modality)
            for i in range(len(batch["uri"]))
        ]
        return pa.concat_tables(tables)

    # batch_size=1: one input item (a shard) per task call, so blocks follow shards.
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _to_lists(read_shards), batch_size=1, batch_format="pyarrow", num_cpus=read_cpus
    )


def _to_lists(fn):
    def wrapped(batch: pa.Table) -> pa.Table:  # Arrow list cells -> Python lists
        d = batch.to_pydict()
        d["row_groups"] = [list(v) if v is not None else None for v in d.get("row_groups", [])]
        return fn(d)

    wrapped.__name__ = fn.__name__  # Ray Data names the stage after the function
    return wrapped
