"""A run's predictions, read in row order whether they are one Parquet file or a directory of parts.

``predictions.parquet`` (docs/contracts.md) is one file today; written by Ray Data it is a
directory of part files. :func:`open_predictions` accepts both, from a local path or the
artifact store, so the readers (compare, the gate's baseline, the dashboard) do not care
which. Parts are put in row order by the ``row`` column's minimum in each file's Parquet
statistics (part file names say nothing about order), and :meth:`Predictions.batches`
yields batches of exactly ``rows`` rows across part boundaries, so two runs' predictions
can be walked side by side batch for batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.data.storage import join, resolve, storage_error
from cluster.errors import UserError

NAMES = ("predictions.parquet", "predictions")  # one file, or a directory of parts, in a run's artifacts


@dataclass(frozen=True)
class Predictions:
    """The part files of one run's predictions, in row order, on one filesystem."""

    location: str
    fs: pafs.FileSystem
    parts: tuple[str, ...]
    num_rows: int

    def batches(self, columns: Sequence[str], rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """``columns`` in batches of exactly ``rows`` rows (the last one shorter)."""
        pending: list[pa.RecordBatch] = []
        held = 0
        for part in self.parts:
            with self.fs.open_input_file(part) as f:
                for batch in pq.ParquetFile(f).iter_batches(rows, columns=list(columns)):
                    pending.append(batch)
                    held += batch.num_rows
                    while held >= rows:
                        table = pa.Table.from_batches(pending)
                        yield from table.slice(0, rows).combine_chunks().to_batches()
                        rest = table.slice(rows)
                        pending, held = rest.combine_chunks().to_batches(), rest.num_rows
        if held:
            yield from pa.Table.from_batches(pending).combine_chunks().to_batches()

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every row at once, in row order (small runs, notebooks, tests)."""
        tables = []
        for part in self.parts:
            with self.fs.open_input_file(part) as f:
                tables.append(pq.read_table(f, columns=None if columns is None else list(columns)))
        return pa.concat_tables(tables)


def read_predictions(location, columns: Sequence[str] | None = None):
    """The predictions at ``location`` (a file or a directory of parts; a path, URI or
    ``pathlib.Path``) as a pandas DataFrame in row order."""
    return open_predictions(str(location)).read(columns).to_pandas()


def run_predictions(artifact_path: str) -> Predictions:
    """The predictions in a run's artifact directory (a path or a URI), in either form."""
    fs, root = resolve(artifact_path)
    for name in NAMES:
        try:
            found = fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound
        except OSError as exc:
            raise storage_error(exc, artifact_path, "read") from exc
        if found:
            return open_predictions(join(artifact_path, name))
    raise UserError(f"predictions {join(artifact_path, NAMES[0])} not found")


def open_predictions(location: str) -> Predictions:
    """Predictions at ``location``: a Parquet file, or a directory of Parquet part files."""
    fs, path = resolve(location)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"predictions {location} not found")
        if info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(path, recursive=True)
            parts = [i.path for i in fs.get_file_info(selector) if _is_part(i)]
        else:
            parts = [path]
        found = sorted((*_footer(fs, p), p) for p in parts)  # (first row, rows, path), in row order
    except OSError as exc:
        raise storage_error(exc, location, "read") from exc
    if not found:
        raise UserError(f"predictions {location} is an empty directory (no .parquet part files)")
    return Predictions(location, fs, tuple(p for _, _, p in found), sum(n for _, n, _ in found))


def _is_part(info: pafs.FileInfo) -> bool:
    name = info.base_name
    return info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith((".", "_"))


def _footer(fs: pafs.FileSystem, path: str) -> tuple[int, int]:
    """(first ``row`` value, rows) of one part, from its footer only; the first row is -1 without
    statistics (such parts keep their path order)."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    first = -1
    names = meta.schema.names
    if meta.num_row_groups and "row" in names:
        stats = meta.row_group(0).column(names.index("row")).statistics
        if stats is not None and stats.has_min_max:
            first = int(stats.min)
    return first, meta.num_rows
