"""What every part file records besides its task's statistics, and the merge of all part files.

A part file (cluster/evaluation/sink.py) holds the predictions of some rows and, in its Parquet
footer, a :class:`Part`: the task's statistics of those rows plus three pipeline-level summaries,
all mergeable (``a + b``, exact, any order):

    Coverage  how many rows, and a sum of a hash of each ``row``: the driver compares the total
              with the input's, so every row was written exactly once (no loss, no double count)
    BadRows   the rows the task could not use (``_bad``): count, reasons, the first rows
    Workers   rows per model actor (its Ray actor id, node, device and precision)

:func:`merge_parts` reads the footers one file at a time and adds them up: memory is one part
plus the running totals, whatever the number of rows.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.stats import codec
from cluster.stats.rowhash import hash64
from cluster.stats.threshold_cells import MergeTree

KEY = b"evalcluster.part"  # the footer's key-value metadata entry
VERSION = 1
COVERAGE_SALT = 0x636F766572  # decorrelates the coverage hash from the bootstrap's use of hash64
MASK = (1 << 64) - 1
FIRST_BAD = 100  # bad rows listed in metrics.json (all are counted)


@dataclass
class Coverage:
    """Rows seen and the sum (mod 2**64) of a 64-bit hash of each one's ``row``."""

    rows: int = 0
    hashsum: int = 0

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(self.rows + other.rows, (self.hashsum + other.hashsum) & MASK)


def coverage_of(rows: np.ndarray) -> Coverage:
    h = hash64(np.asarray(rows, np.int64), COVERAGE_SALT)
    return Coverage(len(h), int(h.sum(dtype=np.uint64)) & MASK)  # uint64 sums wrap: mod 2**64


def expected_coverage(ranges: Iterable[tuple[int, int]], chunk: int = 1 << 20) -> Coverage:
    """The coverage of the input rows [start, start + n) of each range (computed in chunks)."""
    total = Coverage()
    for start, n in ranges:
        for lo in range(start, start + n, chunk):
            total = total + coverage_of(np.arange(lo, min(start + n, lo + chunk), dtype=np.int64))
    return total


@dataclass
class BadRows:
    """Rows left out: how many, per reason, and the ``FIRST_BAD`` lowest (row, reason)."""

    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    first: list[tuple[int, str]] = field(default_factory=list)

    def __add__(self, other: BadRows) -> BadRows:
        reasons = Counter(self.reasons)
        reasons.update(other.reasons)
        first = sorted(self.first + other.first)[:FIRST_BAD]
        return BadRows(self.count + other.count, dict(reasons), first)

    def report(self) -> dict:
        """metrics.json's ``bad_rows`` (docs/contracts.md)."""
        reasons = sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "count": self.count,
            "first_rows": [{"row": r, "reason": why} for r, why in self.first],
            "reasons": dict(reasons),
        }


def bad_rows_of(rows: list[int], reasons: list[str]) -> BadRows:
    short = Counter(r.split(" (")[0] for r in reasons)  # "not an image (3 bytes)" -> "not an image"
    return BadRows(len(rows), dict(short), sorted(zip(rows, reasons, strict=True))[:FIRST_BAD])


@dataclass
class Workers:
    """Rows computed per model actor: ``{json {actor, node, device, precision}: rows}``."""

    rows: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: Workers) -> Workers:
        rows = Counter(self.rows)
        rows.update(other.rows)
        return Workers(dict(rows))

    def report(self) -> list[dict]:
        """metrics.json's ``workers``: rows per model actor and node (an actor restarted on another
        node after its node was lost is listed once per node), most rows first."""
        per: Counter = Counter()
        for key, n in self.rows.items():
            w = json.loads(key)
            per[(w.get("actor"), w.get("node"), w.get("device"), w.get("precision"))] += n
        names = ("actor", "node", "device", "precision")
        out = [{**dict(zip(names, who, strict=True)), "rows": n} for who, n in per.items()]
        return sorted(out, key=lambda w: (-w["rows"], w["actor"] or "", w["node"] or ""))

    def warm(self) -> int:
        """Model actors that were loaded before this run (warm ones on a running head)."""
        return len({json.loads(k)["actor"] for k in self.rows if json.loads(k).get("warm")})

    def first_ready(self) -> float | None:
        """When the first model actor that computed rows had its model loaded (wall clock)."""
        return min((json.loads(k).get("ready_at") or 0.0 for k in self.rows), default=None)


@dataclass
class Span:
    """When part files were written: the first and the last (wall clock, seconds)."""

    first: float = float("inf")
    last: float = float("-inf")

    def __add__(self, other: Span) -> Span:
        return Span(min(self.first, other.first), max(self.last, other.last))


codec.register(Coverage, BadRows, Workers, Span)


@dataclass
class Part:
    """One part file's footer: the task's statistics and the pipeline's summaries of its rows."""

    task: str
    stats: dict[str, Any]
    coverage: Coverage
    bad: BadRows
    workers: Workers
    written: Span = field(default_factory=Span)
    content: Coverage | None = None  # an order-free hash of the rows' inputs (``_content``), if set


def encode_part(part: Part) -> dict[bytes, bytes]:
    """The Parquet key-value metadata holding ``part`` (base64 text: every Parquet reader keeps it)."""
    body = {"version": VERSION, "task": part.task, "stats": part.stats}
    body.update(coverage=part.coverage, bad=part.bad, workers=part.workers, written=part.written)
    body.update(content=part.content)
    return {KEY: base64.b64encode(codec.encode(body))}


def decode_part(metadata: dict[bytes, bytes] | None, where: str) -> Part:
    raw = (metadata or {}).get(KEY)
    if raw is None:
        raise ValueError(f"{where} is not an evaluation part file (no {KEY.decode()} in its footer)")
    body = codec.decode(base64.b64decode(raw))
    if body.get("version") != VERSION:
        raise ValueError(f"{where}: part format {body.get('version')}, this code reads {VERSION}")
    fields = ("coverage", "bad", "workers", "written", "content")
    return Part(body["task"], body["stats"], *(body[f] for f in fields))


# ------------------------------------------------------------------ the driver's merge


def part_files(fs: pafs.FileSystem, directory: str) -> list[str]:
    """The part files of a predictions directory, sorted (hidden and ``_`` files left out)."""
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=False, allow_not_found=True))
    hidden = (".", "_")
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File and i.path.endswith(".parquet") and not i.base_name.startswith(hidden)
    )


def read_parts(fs: pafs.FileSystem, directory: str) -> Iterator[tuple[str, Part]]:
    """(path, footer) of each part file, one at a time (the rows themselves are never read)."""
    for path in part_files(fs, directory):
        with fs.open_input_file(path) as f:
            yield path, decode_part(pq.ParquetFile(f).schema_arrow.metadata, path)


@dataclass
class Merged:
    """Every part added up; ``earlier``: the coverage of files that were there before this run
    (a resumed run's committed rows)."""

    stats: dict[str, Any]
    coverage: Coverage
    bad: BadRows
    workers: Workers
    written: Span
    content: Coverage | None
    files: int
    earlier: Coverage


def merge_parts(parts: Iterable[tuple[str, Part]], earlier: frozenset[str] = frozenset()) -> Merged:
    """Adds up parts; each statistic through a MergeTree (each part copied O(log n) times)."""
    trees: dict[str, MergeTree] = {}
    total = Merged({}, Coverage(), BadRows(), Workers(), Span(), None, 0, Coverage())
    for path, part in parts:
        for name, value in part.stats.items():
            trees.setdefault(name, MergeTree()).push(value)
        total.coverage, total.bad = total.coverage + part.coverage, total.bad + part.bad
        total.workers, total.written = total.workers + part.workers, total.written + part.written
        if part.content is not None:
            total.content = part.content if total.content is None else total.content + part.content
        if path in earlier:
            total.earlier = total.earlier + part.coverage
        total.files += 1
    total.stats = {name: tree.total() for name, tree in trees.items()}
    return total
