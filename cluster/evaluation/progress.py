"""An evaluation's progress while its pipeline runs: the rows in part files so far, of those planned.

The driver does not see Ray Data's write tasks end one by one (``write_datasink`` returns when all
have); it sees their part files land. A thread of the driver lists the predictions directory once
per heartbeat period, reads the footer of each part file it has not counted yet (the ``Coverage``
rows of cluster/evaluation/parts.py: bad rows included, as in the plan's count) and tells the
registry (``Registry.set_progress``: memory only; the run's heartbeat writes it). A file still
being written is not readable yet: it is counted at a later look. A resumed run's earlier files
count from the first look: they are done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cluster.evaluation.parts import decode_part, part_files

log = logging.getLogger(__name__)


class PartsWatch:
    """Counts the rows of the part files under ``path``; ``count()`` looks once (new files only)."""

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.fs, self.path = fs, path
        self.rows = 0
        self._counted: set[str] = set()

    def count(self) -> int:
        for file in part_files(self.fs, self.path):
            if file in self._counted:
                continue
            try:
                with self.fs.open_input_file(file) as f:
                    part = decode_part(pq.ParquetFile(f).schema_arrow.metadata, file)
            except (OSError, ValueError):  # being written (no footer yet), or gone (a retried task's)
                continue
            self._counted.add(file)
            self.rows += part.coverage.rows
        return self.rows


@contextlib.contextmanager
def parts_progress(
    fs: pafs.FileSystem, path: str, report: Callable[[int], None], period_s: float
) -> Iterator[PartsWatch]:
    """While the block runs, ``report(rows)`` every ``period_s`` seconds when the count grew. A look
    that fails (a store briefly away) is logged and tried at the next one: it never fails the run."""
    watch, stop = PartsWatch(fs, path), threading.Event()

    def loop() -> None:
        told = -1
        while not stop.wait(period_s):
            try:
                rows = watch.count()
            except Exception as exc:  # noqa: BLE001 - progress is a view; the pipeline decides the run
                log.warning("progress: cannot list %s (trying again in %.0f s): %s", path, period_s, exc)
                continue
            if rows != told and not stop.is_set():  # after the block, the caller has the last word
                report(rows)
                told = rows

    thread = threading.Thread(target=loop, name="evaluation-progress", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=period_s + 5)
