"""Where a command's wall time goes: the process's own start time, and named phase marks.

``process_age_s()`` is read from the kernel's record of when this process started
(``/proc/self/stat``), not from a clock taken at import, so it includes the
interpreter's start and every import before the first line of our code ran.
"""

from __future__ import annotations

import os
import sys
import time


def process_age_s() -> float | None:
    """Seconds since this process started, or None where the OS does not say.

    Linux: ``starttime`` (clock ticks since boot, field 22 of /proc/self/stat) against
    CLOCK_BOOTTIME, the same clock, so the figure is good to one tick (10 ms).
    Elsewhere: psutil's create time when psutil is installed.
    """
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/stat", "rb") as f:
                stat = f.read()
            # The command name (field 2) may hold spaces and parentheses: split after its last ")".
            start_ticks = int(stat.rsplit(b")", 1)[1].split()[19])
            return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
    try:
        import psutil
    except ImportError:
        return None
    return time.time() - psutil.Process().create_time()


def process_started_at() -> float | None:
    """The wall-clock time (``time.time()``) this process started, or None."""
    age = process_age_s()
    return None if age is None else time.time() - age


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc), else its peak (``getrusage``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class Phases:
    """Wall-clock marks of one command, turned into the ``timings`` of metrics.json.

    Marks are ``time.time()`` values (they may come from other processes, e.g. an actor's
    "model loaded" moment), so every figure is a difference of two marks on one clock.

    >>> p = Phases(start=100.0)
    >>> p.mark("ray_up", 102.5); p.between("start", "ray_up")
    2.5
    """

    def __init__(self, start: float | None = None):
        self.marks: dict[str, float] = {"start": time.time() if start is None else start}

    def mark(self, name: str, at: float | None = None) -> float:
        """Record ``name`` at ``at`` (default now); the first mark of a name wins."""
        return self.marks.setdefault(name, time.time() if at is None else at)

    def between(self, a: str, b: str) -> float | None:
        """Seconds from mark ``a`` to mark ``b`` (None if either is missing)."""
        if a not in self.marks or b not in self.marks:
            return None
        return round(max(0.0, self.marks[b] - self.marks[a]), 3)
