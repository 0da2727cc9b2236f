"""How far a running run got: ``{"done": int, "total": int | None, "unit": "rows" | "trials" | "steps"}``.

A run's process says it as often as it likes (``Registry.set_progress``: memory only, never a
database round trip); the run's heartbeat thread writes the newest value with its next beat
(cluster/registry/heartbeat.py), and the run's finish (or failure) writes it with the status, so
an ended run keeps how far it got. A beat that finds the database away keeps the value for the
next one: progress never fails a run. Readers (``evalctl runs``, the dashboard) show it with
:func:`describe`.
"""

from __future__ import annotations

import json
import threading

UNITS = ("rows", "trials", "steps")


def progress_value(done: int, total: int | None = None, unit: str = "rows") -> dict:
    """The recorded value, checked: ``done`` >= 0, ``total`` None (unknown) or >= 0, a known unit."""
    if unit not in UNITS:
        raise ValueError(f"progress unit {unit!r}: one of {', '.join(UNITS)}")
    done = int(done)
    total = None if total is None else int(total)
    if done < 0 or (total is not None and total < 0):
        raise ValueError(f"progress {done} / {total}: counts are never negative")
    return {"done": done, "total": total, "unit": unit}


def _read(progress) -> tuple[int, int | None, str] | None:
    """(done, total, unit) of a recorded value, None unless it has the recorded shape (a row written
    by hand, or by a newer evalcluster, is shown as no progress rather than breaking a page)."""
    if not isinstance(progress, dict):
        return None
    done, total, unit = progress.get("done"), progress.get("total"), progress.get("unit", "rows")
    counts = (done,) if total is None else (done, total)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return None
    return done, total, unit if unit in UNITS else "units"


def fraction(progress: dict | None) -> float | None:
    """done / total in [0, 1], or None (no progress, unknown or zero total)."""
    read = _read(progress)
    if read is None or not read[1]:
        return None
    return min(1.0, read[0] / read[1])


def describe(progress: dict | None) -> str | None:
    """``1,234 / 3,725 rows (33%)``, ``1,234 rows`` (total unknown), None without progress."""
    read = _read(progress)
    if read is None:
        return None
    done, total, unit = read
    share = fraction(progress)
    text = f"{done:,}" + (f" / {total:,}" if total is not None else "") + f" {unit}"
    return text + (f" ({int(share * 100)}%)" if share is not None else "")


class PendingProgress:
    """The newest progress of each run this process runs, until a write takes it (thread-safe:
    writers call ``set`` from their threads, the heartbeat thread writes)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._newest: dict[str, str] = {}  # run id -> JSON text not written yet

    def set(self, run_id: str, value: dict) -> None:
        with self._lock:
            self._newest[run_id] = json.dumps(value)

    def peek(self, run_id: str) -> str | None:
        """The value to write (it stays until :meth:`written`: a finish racing a beat still has it)."""
        with self._lock:
            return self._newest.get(run_id)

    def written(self, run_id: str, text: str) -> None:
        """``text`` is in the database now: forgotten, unless a newer value came meanwhile."""
        with self._lock:
            if self._newest.get(run_id) == text:
                del self._newest[run_id]
