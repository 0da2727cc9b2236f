"""Runs' owner processes and heartbeats: who is running a run, and whether it is still alive.

A running run records ``host``, ``pid`` and ``heartbeat_at``; ``Registry.run()``
keeps a daemon thread that refreshes ``heartbeat_at`` every ``heartbeat_period()``
seconds while its block runs. A run is *stale* when its process is known to be
gone (same host, pid no longer alive) or when it was last seen longer than
``stale_after()`` seconds ago (another host, a lost node: clocks are assumed to
agree to well within that timeout, e.g. by NTP).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from cluster.errors import UserError
from cluster.specs.settings import settings

log = logging.getLogger(__name__)


def heartbeat_period() -> float:
    """Seconds between a running run's heartbeats (EVALCLUSTER_HEARTBEAT_S)."""
    return settings().heartbeat_s


def stale_after() -> float:
    """A run silent this long is stale (EVALCLUSTER_STALE_AFTER_S; six missed beats by default: a
    busy or briefly partitioned process is not called dead)."""
    return settings().stale_after_s


def owner_process() -> tuple[str, int]:
    """(host name, pid) of this process, as recorded on the runs it starts."""
    return socket.gethostname(), os.getpid()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(run: dict, now: datetime | None = None, after_s: float | None = None) -> str | None:
    """Why a running run looks dead ("process 123 on h is gone", "no heartbeat for 5m 2s"), else None.

    Runs recorded before heartbeats existed count from their start time.
    """
    if run.get("status") != "running":
        return None
    host, _ = owner_process()
    if run.get("host") == host and run.get("pid") and not pid_alive(int(run["pid"])):
        return f"process {run['pid']} on {host} is gone"
    age = seconds_since(run.get("heartbeat_at") or run["created_at"], now)
    limit = stale_after() if after_s is None else after_s
    return f"no heartbeat for {format_age(age)}" if age > limit else None


def seconds_since(iso: str, now: datetime | None = None) -> float:
    """Seconds from an ISO 8601 time (naive times are UTC) to ``now`` (default: the current time)."""
    then = datetime.fromisoformat(iso)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - then).total_seconds()


def format_age(seconds: float) -> str:
    """e.g. ``45s``, ``5m 2s``, ``3h 4m``, ``2d 1h``."""
    s = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s}s"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``2h``, ``1d``; UserError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not match:
        raise UserError(f'duration "{text}" not understood; use e.g. 90s, 10m, 2h or 1d')
    return float(match.group(1)) * _UNITS[match.group(2)]


class Heartbeat:
    """A daemon thread calling ``beat()`` every ``period`` seconds until stopped or ``beat()`` is False.

    ``beat`` returns False once the run is no longer running (finished, or marked
    failed by someone else); a failing beat (database briefly unreachable) is
    logged and tried again at the next period.
    """

    def __init__(self, beat: Callable[[], bool], period: float, name: str = "heartbeat"):
        self._beat = beat
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)  # a beat stuck on a hung database must not hold up the run

    def _loop(self) -> None:
        while not self._stop.wait(self._period):
            try:
                if not self._beat():
                    return
            except Exception as exc:  # noqa: BLE001 - a missed beat must not end the run
                log.warning("heartbeat failed (retrying in %.0f s): %s", self._period, exc)
