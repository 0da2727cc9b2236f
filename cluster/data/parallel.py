"""Parallel corpora: source/target pairs (and more references) from Parquet, CSV or JSONL, local or URI.

A dataset spec names the columns (cluster/specs/translation.py: ``source_column``,
``target_column``, ``reference_columns``, ``max_chars``). Every row keeps its 0-based
input position (``row``), as the classification data does (cluster/data/shards.py).

Bad rows: a null, blank or over-long source or target (or an over-long extra reference;
extra references may be empty) is a one-line error naming the row, the column and the
limit; with ``skip_bad_rows`` those rows are left out and returned, counted, instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.data.files import file_schema, read_file, resolve_files
from cluster.data.images import BadRow
from cluster.data.scan import DataSummary
from cluster.data.shards import ROWS_PER_SHARD, Shard, plan_shards
from cluster.data.storage import resolve
from cluster.errors import UserError, did_you_mean, first_items
from cluster.specs.workloads import DataSpec


def pair_columns(spec: DataSpec) -> list[str]:
    """The input columns a translation dataset is read from, each once."""
    cols = [spec.source_column, spec.target_column, *spec.reference_columns, spec.id_column]
    return list(dict.fromkeys(c for c in cols if c))


def check_pair_columns(spec: DataSpec) -> pa.Schema:
    """Fail with the existing columns when a named column is missing (before anything starts)."""
    fs, files, fmt = resolve_files(spec.path)
    schema = file_schema(fs, files[0], fmt)
    roles = [("source", spec.source_column), ("target", spec.target_column), ("id", spec.id_column)]
    roles += [("reference", c) for c in spec.reference_columns]
    for role, col in roles:
        if col and col not in schema.names:
            raise UserError(
                f'{role} column "{col}" not found in {spec.path}{did_you_mean(col, schema.names)}; '
                f"columns: {', '.join(schema.names)} (set --source-column/--target-column)"
            )
    return schema


def read_pair_shard(shard: Shard, spec: DataSpec, fs=None) -> pa.Table:
    """One shard as a table: ``row``, ``source``, ``target``, ``ref_1``... (extra references) and
    ``id`` when set; texts as strings, in input order."""
    if fs is None:
        fs, path = resolve(shard.uri)
    else:
        path = shard.uri.split("://", 1)[-1]
    table = read_file(fs, path, shard.fmt, pair_columns(spec), shard.row_groups, encoding=spec.encoding)
    table = table.slice(shard.start, shard.num_rows)
    out = {"row": pa.array(range(shard.offset, shard.offset + table.num_rows), pa.int64())}
    out["source"] = _strings(table, spec.source_column, spec)
    out["target"] = _strings(table, spec.target_column, spec)
    for i, col in enumerate(spec.reference_columns, start=1):
        out[f"ref_{i}"] = _strings(table, col, spec)
    if spec.id_column:
        out["id"] = table[spec.id_column].cast(pa.string())
    return pa.table(out)


def _strings(table: pa.Table, col: str, spec: DataSpec) -> pa.ChunkedArray:
    t = table[col].type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        raise UserError(f'column "{col}" of {spec.path} is {t}, not text')
    return table[col].cast(pa.string())


# ------------------------------------------------------------------ validation


def bad_pairs(table: pa.Table, spec: DataSpec) -> list[BadRow]:
    """The rows of a shard table (``read_pair_shard``) that cannot be used, with why, in row order."""
    rows = table["row"].to_numpy()
    reasons: dict[int, str] = {}
    required = [("source", spec.source_column), ("target", spec.target_column)]
    extra = [(f"ref_{i}", c) for i, c in enumerate(spec.reference_columns, start=1)]
    for key, col in required + extra:
        values = table[key]
        n_chars = pc.fill_null(pc.utf8_length(values), 0).to_numpy(zero_copy_only=False)
        if (key, col) in required:
            blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
            for i in np.flatnonzero(blank.to_numpy(zero_copy_only=False)):
                reasons.setdefault(int(rows[i]), f'empty "{col}"')
        for i in np.flatnonzero(n_chars > spec.max_chars):
            reasons.setdefault(
                int(rows[i]),
                f'"{col}" has {int(n_chars[i])} characters > limit {spec.max_chars} (--max-chars)',
            )
    return [BadRow(r, why) for r, why in sorted(reasons.items())]


def drop_bad(table: pa.Table, spec: DataSpec, skip_bad_rows: bool) -> tuple[pa.Table, list[BadRow]]:
    """``table`` without its bad rows, and those rows; without ``skip_bad_rows`` the first bad
    row is a UserError naming it (and how many more there are in this shard)."""
    bad = bad_pairs(table, spec)
    if not bad:
        return table, []
    if not skip_bad_rows:
        more = (
            f" ({len(bad) - 1} more bad row(s) in rows {first_items([b.row for b in bad])})"
            if len(bad) > 1
            else ""
        )
        raise UserError(
            f"row {bad[0].row} of {spec.path}: {bad[0].reason}{more}; fix the data or pass --skip-bad-rows"
        )
    keep = ~np.isin(table["row"].to_numpy(), [b.row for b in bad])
    return table.filter(pa.array(keep)), bad


def reference_streams(table: pa.Table) -> list[list[str | None]]:
    """sacrebleu's reference streams of a shard table: the target, then each extra reference
    (None where a row leaves it empty)."""
    streams = [table["target"].to_pylist()]
    for name in sorted(c for c in table.column_names if c.startswith("ref_")):
        streams.append([v if v and v.strip() else None for v in table[name].to_pylist()])
    return streams


# ------------------------------------------------------------------ whole datasets


@dataclass
class Pairs:
    """A parallel corpus read whole (training and validation splits, small evaluations)."""

    sources: list[str]
    targets: list[str]
    rows: np.ndarray  # (n,) int64 input positions
    references: list[list[str | None]] = field(default_factory=list)  # streams, the target first
    bad: list[BadRow] = field(default_factory=list)
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, idx) -> Pairs:
        idx = np.asarray(idx, dtype=np.int64)
        return Pairs(
            [self.sources[i] for i in idx],
            [self.targets[i] for i in idx],
            self.rows[idx],
            [[s[i] for i in idx] for s in self.references],
            self.bad,
            self.fingerprint,
        )


def read_pairs(
    spec: DataSpec,
    limit: int | None = None,
    skip_bad_rows: bool = False,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> Pairs:
    """Every usable pair of ``spec`` in input order, its bad rows, and its content fingerprint."""
    check_pair_columns(spec)
    fs, shards = plan_shards(spec, limit, rows_per_shard)
    digest = Fingerprint()
    tables, bad = [], []
    for shard in shards:
        table = read_pair_shard(shard, spec, fs)
        digest.update(table)
        table, dropped = drop_bad(table, spec, skip_bad_rows)
        tables.append(table)
        bad += dropped
    if not tables or sum(t.num_rows for t in tables) == 0:
        raise UserError(f"dataset {spec.path} has no usable rows" + (f" ({len(bad)} bad)" if bad else ""))
    table = pa.concat_tables(tables)
    return Pairs(
        table["source"].to_pylist(),
        table["target"].to_pylist(),
        table["row"].to_numpy(),
        reference_streams(table),
        bad,
        digest.hexdigest(),
    )


class Fingerprint:
    """sha256 over the source, target and reference texts in input order, per column, each value
    followed by a separator: the same however the rows are sharded (as cluster/data/scan.py's)."""

    def __init__(self):
        self.columns: dict[str, hashlib._Hash] = {}

    def update(self, table: pa.Table) -> None:
        for name in table.column_names:
            if name in ("row", "id"):
                continue
            h = self.columns.setdefault(name, hashlib.sha256())
            h.update("".join(("" if v is None else v) + "\x1f" for v in table[name].to_pylist()).encode())

    def hexdigest(self) -> str:
        both = b"".join(self.columns[k].digest() for k in sorted(self.columns))
        return hashlib.sha256(b"translation\x1f" + both).hexdigest()[:16]


def subsample(pairs: Pairs, cap: int | None, seed: int = 0) -> Pairs:
    """At most ``cap`` pairs: a seeded random choice, kept in input order (the same for a seed)."""
    if cap is None or cap >= len(pairs):
        return pairs
    chosen = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:cap])
    return pairs.take(chosen)


def scan_pairs(spec: DataSpec, limit: int | None = None, skip_bad_rows: bool = False, rows_per_shard=None):
    """Validate and fingerprint a parallel corpus streaming one shard at a time (nothing that grows
    with the data is kept): a cluster.data.scan.DataSummary (no labels) and the bad rows' count.
    Without ``skip_bad_rows`` the first bad row is a UserError naming it."""
    check_pair_columns(spec)
    fs, shards = plan_shards(spec, limit, rows_per_shard or ROWS_PER_SHARD)
    digest, n, bad = Fingerprint(), 0, 0
    for shard in shards:
        table = read_pair_shard(shard, spec, fs)
        digest.update(table)
        n += table.num_rows
        bad += len(drop_bad(table, spec, skip_bad_rows)[1])
    if n == 0:
        raise UserError(f"dataset {spec.path} is empty (0 rows)")
    return DataSummary(n, {}, digest.hexdigest()), bad
