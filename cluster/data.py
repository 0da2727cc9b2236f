"""Reading labelled text: validation and fingerprint of a dataset, and its rows in input order.

The pieces: cluster/datafiles.py (locating and reading files), cluster/shards.py
(row-contiguous shards, Ray Data), cluster/corpus.py (the sample corpus). The
names most callers need are importable from here.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from cluster.config import DataSpec
from cluster.corpus import LABELS, corpus_path, load_corpus, sample_splits  # noqa: F401  (re-exported)
from cluster.datafiles import FORMATS, check_columns, resolve_files  # noqa: F401
from cluster.errors import UserError, first_items
from cluster.shards import ROWS_PER_SHARD, Shard, plan_shards, read_shard, to_ray_dataset  # noqa: F401

log = logging.getLogger(__name__)


@dataclass
class DataSummary:
    """What one streaming pass over the input learned (bounded size, whatever the rows)."""

    num_rows: int
    label_counts: dict[str, int]
    fingerprint: str  # sha256 over text and label content, in input order (independent of sharding)


def scan(spec: DataSpec, limit: int | None = None, rows_per_shard: int = ROWS_PER_SHARD) -> DataSummary:
    """Validate every row and fingerprint the content, streaming one shard at a time.

    Raises UserError on an empty dataset, null or empty texts (how many, first rows)
    and null labels.
    """
    check_columns(spec)
    fs, shards = plan_shards(spec, limit, rows_per_shard)
    # Texts and labels are hashed apart, each value followed by a separator, so the fingerprint
    # is the same however the rows are sharded (Parquet row groups, CSV pieces, --rows-per-shard).
    text_digest, label_digest = hashlib.sha256(), hashlib.sha256()
    labels: Counter[str] = Counter()
    bad_text, bad_label, n = [], [], 0
    for shard in shards:
        t = read_shard(shard, spec, fs)
        n += t.num_rows
        text = t["text"]
        empty = pc.or_(pc.is_null(text), pc.equal(pc.utf8_trim_whitespace(pc.fill_null(text, "")), ""))
        bad_text += _rows_where(t["row"], empty, len(bad_text))
        text_digest.update(_column_bytes(text))
        if "label" in t.column_names:
            bad_label += _rows_where(t["row"], pc.is_null(t["label"]), len(bad_label))
            counts = pc.value_counts(t["label"].drop_null()).to_pylist()
            labels.update({d["values"]: d["counts"] for d in counts})
            label_digest.update(_column_bytes(t["label"]))
    _raise_if_bad(spec, n, bad_text, bad_label)
    both = text_digest.digest() + (label_digest.digest() if spec.label_column else b"")
    summary = DataSummary(n, dict(sorted(labels.items())), hashlib.sha256(both).hexdigest()[:16])
    log.info("%s: %d rows in %d shards, fingerprint %s", spec.path, n, len(shards), summary.fingerprint)
    return summary


def _rows_where(rows: pa.ChunkedArray, mask: pa.ChunkedArray, seen: int) -> list[int]:
    """Row numbers where mask is true; keeps at most enough for the error message."""
    hits = pc.filter(rows, pc.fill_null(mask, True))
    return hits.to_pylist()[: max(0, 1_000_000 - seen)] if len(hits) else []


def _column_bytes(col: pa.ChunkedArray) -> bytes:
    return "".join(("" if v is None else v) + "\x1f" for v in col.to_pylist()).encode()


def _raise_if_bad(spec: DataSpec, n: int, bad_text: list[int], bad_label: list[int]) -> None:
    if n == 0:
        raise UserError(f"dataset {spec.path} is empty (0 rows)")
    if bad_text:
        raise UserError(
            f'{len(bad_text)} row(s) of {spec.path} have a null or empty "{spec.text_column}" '
            f"(first rows: {first_items(bad_text)}); drop or fill them"
        )
    if bad_label:
        raise UserError(
            f'{len(bad_label)} row(s) of {spec.path} have a null "{spec.label_column}" '
            f"(first rows: {first_items(bad_label)})"
        )


def iter_tables(
    spec: DataSpec, limit: int | None = None, rows_per_shard: int = ROWS_PER_SHARD
) -> Iterator[pa.Table]:
    """Shard tables in input order, read here (small data, tests, training sets)."""
    fs, shards = plan_shards(spec, limit, rows_per_shard)
    for s in shards:
        yield read_shard(s, spec, fs)


def read_pandas(spec: DataSpec, limit: int | None = None):
    """The whole dataset as a pandas DataFrame (training data that fits in memory)."""
    tables = list(iter_tables(spec, limit))
    return pa.concat_tables(tables).to_pandas()
