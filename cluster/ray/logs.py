"""What Ray prints on our console: as much as our log level asks for (`evalctl --log-level`,
jobs/entry.py), no more. Ray's full logs stay in its session directory either way."""

from __future__ import annotations

import logging
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
            if not any(isinstance(f, _NoProgressNotice) for f in handler.filters):
                handler.addFilter(_NoProgressNotice())


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


class _NoProgressNotice(logging.Filter):
    """Drops Ray Data's notice that progress bars are off: we turned them off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled.")
