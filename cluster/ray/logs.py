"""What Ray prints on our console: as much as our log level asks for (`evalctl --log-level`,
jobs/entry.py), no more. Ray's full logs stay in its session directory either way."""

from __future__ import annotations

import logging
import os
import sys
import threading
from contextlib import contextmanager


def quiet_ray_data() -> None:
    """Ray Data's console progress (INFO lines, progress bars) only when our log level asks for INFO;
    its full logs still go to Ray's session directory (logs/ray-data/)."""
    import ray.data

    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    ray.data.DataContext.get_current().enable_progress_bars = verbose
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console; the session file keeps everything
            handler.setLevel(logging.INFO if verbose else logging.WARNING)
            for kind in (_NoProgressNotice, _NoErrorsWhenQuiet):
                if not any(isinstance(f, kind) for f in handler.filters):
                    handler.addFilter(kind())


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """Ray's ``name`` logger at ``level`` within the block unless our log level asks for INFO:
    e.g. Serve's start-up lines, and its warning that a differing HTTP config is ignored (which
    jobs/deploy.py turns into its own one-line error)."""
    logger = logging.getLogger(name)
    before = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


class _NoErrorsWhenQuiet(logging.Filter):
    """Drops Ray Data's error records (a stage's exception and its stack) from the console unless our
    log level asks for INFO: the evaluation raises that exception itself, a user's error as one line
    (its stack with --debug); Ray Data's log file keeps the records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or logging.getLogger().getEffectiveLevel() <= logging.INFO


class _NoProgressNotice(logging.Filter):
    """Drops Ray Data's notice that progress bars are off: we turned them off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled.")


# Ray core's line for every Ray Data actor (Ray Data always passes an actor its map function by
# reference, and its actors restart: ray-project/ray#53727). The reference lives as long as the
# driver's execution, which is as long as a restart can be needed: nothing to act on.
ACTOR_ARGUMENT_NOTICE = b"has constructor arguments in the object store and max_restarts > 0"


@contextmanager
def without_stderr_lines(*needles: bytes):
    """Within the block, lines written to this process's stderr (file descriptor 2: Ray core's C++
    logging writes there directly) that contain one of ``needles`` are dropped, unless our log level
    asks for INFO; everything else passes at once (a line that may be Ray core's, starting with "[",
    waits for its end). Only processes started inside the block would inherit the pipe: Ray starts
    its workers from its raylet, not from this process."""
    if logging.getLogger().getEffectiveLevel() <= logging.INFO or not needles:
        yield
        return
    sys.stderr.flush()
    saved, (read, write) = os.dup(2), os.pipe()
    os.dup2(write, 2)
    os.close(write)
    pump = threading.Thread(target=_pump, args=(read, saved, needles), name="stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the pump sees the end and stops
        pump.join(timeout=10)
        os.close(saved)


def _pump(read: int, out: int, needles: tuple[bytes, ...]) -> None:
    held = b""
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, held = (held + chunk).split(b"\n")
            for line in lines:
                if not any(n in line for n in needles):
                    os.write(out, line + b"\n")
            if held and not held.startswith(b"["):  # not a log line: a progress bar's update, pass it
                os.write(out, held)
                held = b""
    if held and not any(n in held for n in needles):
        os.write(out, held)
