"""Reading an evaluation's predictions, in either version of the contract (docs/contracts.md):

    version 2   ``predictions/``: part files, each row exactly once, in no particular order
    version 1   ``predictions.parquet``: one file, in input order (runs before version 2)

Both are read as one ``pyarrow.dataset`` (``pandas.read_parquet`` reads either too). Two runs'
predictions are compared row by row through :func:`aligned`, which reads both by ranges of
``row`` (each part file is one row group whose statistics give its rows' range, so a range
reads only the files that hold it): memory is one range of both, whatever the rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from cluster.data.storage import resolve, storage_error
from cluster.errors import UserError

ROW = "row"
CHUNK_ROWS = 1 << 20  # rows of each run held at once while aligning two runs


def open_predictions(location: str) -> pads.Dataset:
    """A run's predictions (a directory of part files, or one file) as a pyarrow dataset."""
    fs, path = resolve(location)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"predictions {location} not found")
        return pads.dataset(path, filesystem=fs, format="parquet")  # skips "_" and "." names
    except OSError as exc:
        raise storage_error(exc, location, "read") from exc


def read_predictions(location, columns: list[str] | None = None):
    """All of a run's predictions as a pandas DataFrame sorted by ``row`` (small runs, tests,
    notebooks; ``location``: a path, URI or pathlib.Path)."""
    table = open_predictions(str(location)).to_table(columns=columns).sort_by(ROW)
    return table.to_pandas()


def aligned(location_a: str, location_b: str, columns: list[str], chunk_rows: int = CHUNK_ROWS) -> Iterator:
    """(table_a, table_b) of ``columns`` (``row`` included), sorted by row, chunk by chunk of rows;
    UserError when the two runs did not predict the same rows."""
    a, b = open_predictions(location_a), open_predictions(location_b)
    na, nb = a.count_rows(), b.count_rows()
    if na != nb:
        raise UserError(
            f"the runs predicted different numbers of rows ({na} vs {nb}); compare evaluations of the "
            "same full dataset"
        )
    cols = list(dict.fromkeys([ROW, *columns]))
    top = _max_row(a)
    for lo in range(0, top + 1, chunk_rows):
        keep = (pc.field(ROW) >= lo) & (pc.field(ROW) < lo + chunk_rows)
        ta = a.to_table(columns=cols, filter=keep).sort_by(ROW)
        tb = b.to_table(columns=cols, filter=keep).sort_by(ROW)
        if not ta[ROW].equals(tb[ROW]):
            raise UserError("the runs' predictions are not aligned row by row; were they on the same data?")
        if ta.num_rows:
            yield ta, tb


def _max_row(ds: pads.Dataset) -> int:
    top = -1
    for batch in ds.to_batches(columns=[ROW]):
        if batch.num_rows:
            top = max(top, pc.max(batch.column(ROW)).as_py())
    return top
