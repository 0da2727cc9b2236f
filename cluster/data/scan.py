"""Reading labelled text: validation and fingerprint of a dataset, and its rows in input order.

The pieces: cluster/data/files.py (locating and reading files), cluster/data/shards.py
(row-contiguous shards, Ray Data), cluster/data/corpus.py (the sample corpus). The
names most callers need are importable from here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cluster.data.files import check_columns, resolve_files
from cluster.data.shards import ROWS_PER_SHARD, plan_shards, read_shard
from cluster.errors import UserError, first_items
from cluster.specs.workloads import DataSpec

log = logging.getLogger(__name__)


@dataclass
class DataSummary:
    """What one streaming pass over the input learned (bounded size, whatever the rows)."""

    num_rows: int
    label_counts: dict[str, int]
    fingerprint: str  # sha256 over text and label content, in input order (independent of sharding)


def scan(
    spec: DataSpec,
    limit: int | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    modality: str = "text",
    skip_bad_rows: bool = False,
) -> DataSummary:
    """Validate every row and fingerprint the content, streaming one shard at a time.

    Raises UserError on an empty dataset, null or empty texts or images (how many, first
    rows) and null labels. Images are decoded later, by the model's preprocessing; with
    ``skip_bad_rows`` a null or 0-byte image is left to it, a bad row like an undecodable one
    (left out, counted and listed).
    """
    check_columns(spec, modality)
    fs, shards = plan_shards(spec, limit, rows_per_shard)
    # Texts and labels are hashed apart, each value followed by a separator, so the fingerprint
    # is the same however the rows are sharded (Parquet row groups, CSV pieces, --rows-per-shard).
    text_digest, label_digest = hashlib.sha256(), hashlib.sha256()
    labels: Counter[str] = Counter()
    bad_text, bad_label, n = [], [], 0
    for shard in shards:
        t = read_shard(shard, spec, fs, modality)
        n += t.num_rows
        if modality == "text" or not skip_bad_rows:
            bad_text += _rows_where(t["row"], _empty(t[modality]), len(bad_text))
        text_digest.update(_column_bytes(t[modality]))
        if "label" in t.column_names:
            bad_label += _rows_where(t["row"], pc.is_null(t["label"]), len(bad_label))
            counts = pc.value_counts(t["label"].drop_null()).to_pylist()
            labels.update({d["values"]: d["counts"] for d in counts})
            label_digest.update(_column_bytes(t["label"]))
    _raise_if_bad(spec, n, bad_text, bad_label, modality)
    both = text_digest.digest() + (label_digest.digest() if spec.label_column else b"")
    summary = DataSummary(n, dict(sorted(labels.items())), hashlib.sha256(both).hexdigest()[:16])
    log.info("%s: %d rows in %d shards, fingerprint %s", spec.path, n, len(shards), summary.fingerprint)
    return summary


def _rows_where(rows: pa.ChunkedArray, mask: pa.ChunkedArray, seen: int) -> list[int]:
    """Row numbers where mask is true; keeps at most enough for the error message."""
    hits = pc.filter(rows, pc.fill_null(mask, True))
    return hits.to_pylist()[: max(0, 1_000_000 - seen)] if len(hits) else []


def _empty(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Null or blank texts; null or zero-length images (bytes or paths)."""
    if pa.types.is_binary(col.type):
        return pc.or_(pc.is_null(col), pc.equal(pc.binary_length(pc.fill_null(col, b"")), 0))
    return pc.or_(pc.is_null(col), pc.equal(pc.utf8_trim_whitespace(pc.fill_null(col, "")), ""))


def _column_bytes(col: pa.ChunkedArray) -> bytes:
    if pa.types.is_binary(col.type):  # images: each one's sha256 (fixed size: sharding cannot shift it)
        return b"".join(hashlib.sha256(v or b"").digest() for v in col.to_pylist())
    return "".join(("" if v is None else v) + "\x1f" for v in col.to_pylist()).encode()


def _raise_if_bad(spec: DataSpec, n: int, bad_text: list[int], bad_label: list[int], modality: str) -> None:
    if n == 0:
        raise UserError(f"dataset {spec.path} is empty (0 rows)")
    if bad_text:
        column = spec.image_column if modality == "image" else spec.text_column
        skip = ", or skip bad images (--skip-bad-rows)" if modality == "image" else ""
        raise UserError(
            f'{len(bad_text)} row(s) of {spec.path} have a null or empty "{column}" '
            f"(first rows: {first_items(bad_text)}); drop or fill them{skip}"
        )
    if bad_label:
        raise UserError(
            f'{len(bad_label)} row(s) of {spec.path} have a null "{spec.label_column}" '
            f"(first rows: {first_items(bad_label)})"
        )


def image_folder_spec(spec: DataSpec, modality: str, workdir: str | Path) -> DataSpec:
    """A ``label/xxx.png`` directory tree as a dataset: its index (path, label) written as
    Parquet into ``workdir``; any other dataset is returned as it is. The images are read
    where they are decoded, so the tree must be visible to the workers (local runs)."""
    from cluster.data.image_data import folder_index, is_image_folder

    if modality != "image" or not is_image_folder(spec.path):
        return spec
    Path(workdir).mkdir(parents=True, exist_ok=True)
    index = folder_index(spec.path, Path(workdir) / "image_folder_index.parquet")
    log.info("%s: image folder tree, indexed in %s", spec.path, index)
    return spec.model_copy(update={"path": str(index), "image_column": "image", "label_column": "label"})


def iter_tables(
    spec: DataSpec, limit: int | None = None, rows_per_shard: int = ROWS_PER_SHARD, modality: str = "text"
) -> Iterator[pa.Table]:
    """Shard tables in input order, read here (small data, tests, training sets)."""
    fs, shards = plan_shards(spec, limit, rows_per_shard)
    for s in shards:
        yield read_shard(s, spec, fs, modality)


def read_pandas(spec: DataSpec, limit: int | None = None, modality: str = "text"):
    """The whole dataset as a pandas DataFrame (training data that fits in memory)."""
    tables = list(iter_tables(spec, limit, modality=modality))
    return pa.concat_tables(tables).to_pandas()


def data_modality(spec: DataSpec) -> str:
    """What a dataset holds when no model says: ``image`` for a label-folder tree, or a file with
    the image column and no text column; else ``text`` (whose errors name the text column)."""
    from cluster.data.files import file_schema
    from cluster.data.image_data import is_image_folder

    if is_image_folder(spec.path):
        return "image"
    fs, files, fmt = resolve_files(spec.path)
    names = file_schema(fs, files[0], fmt, spec.encoding).names
    return "image" if spec.image_column in names and spec.text_column not in names else "text"


def scan_any(spec: DataSpec, limit: int | None = None) -> DataSummary:
    """:func:`scan` of a dataset of either modality (:func:`data_modality`): its fingerprint is the
    one an evaluation of it records (`evalctl leaderboard --data`, `evalctl data check`)."""
    import tempfile

    modality = data_modality(spec)
    with tempfile.TemporaryDirectory(prefix="evalcluster-") as work:
        return scan(image_folder_spec(spec, modality, work), limit, modality=modality)
