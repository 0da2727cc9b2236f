"""Tune callbacks of a sweep's driver (imported only where a Tuner is built: it imports Ray Tune).

:class:`NoTensorBoard` counts as Tune's TensorBoard logger and writes nothing, so Tune adds
none. Tune's own (``TBXLoggerCallback``, one of its default loggers) imports tensorboardX, which
imports torch: about 3 s of CPU in the driver at every sweep start and every `sweep resume`
(measured on this machine: 4.6 s of CPU for ``import ray.tune`` plus that logger against 2.0 s
without it), and the driver needs torch for nothing else before it exports the best model.
TensorBoard event files were never part of the product (learning curves: `evalctl sweep
report`); Tune still writes result.json (which resuming reads) and progress.csv. The callback
is pickled with the run (tuner.pkl), so a resumed driver has it again; a sweep started before
it existed resumes with the logger it had.

:class:`TrialsProgress` tells the sweep's registry run how many trials ended of how many the
search makes (``Registry.set_progress``, unit ``trials``: memory only, the run's heartbeat writes
it). Pickled with the run too, it holds only the sweep's name: the driver running the sweep now
names the registry run it reports to (:func:`trials_progress`), so a resumed sweep, a new
registry run, gets the progress of its own trials, those finished before the resume included.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

ENDED = ("TERMINATED", "ERROR")  # Trial.status of a trial that will not run again
# sweep name -> report(done, total) of the registry run this driver runs it in (trials_progress)
_REPORTS: dict[str, Callable[[int, int | None], None]] = {}
_LOCK = threading.Lock()


class NoTensorBoard(TBXLoggerCallback):
    """Tune's TensorBoard logger's place, taken by a logger that writes nothing."""

    def __init__(self):  # TBXLoggerCallback's own imports tensorboardX (and with it torch)
        self._trial_writer, self._trial_result = {}, {}

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


@contextlib.contextmanager
def trials_progress(sweep: str, report: Callable[[int, int | None], None]) -> Iterator[None]:
    """While the block runs (``tuner.fit()``), the sweep ``sweep``'s TrialsProgress calls ``report``."""
    with _LOCK:
        _REPORTS[sweep] = report
    try:
        yield
    finally:
        with _LOCK:
            _REPORTS.pop(sweep, None)


class TrialsProgress(Callback):
    """Trials ended (finished, stopped early by the scheduler, or failed for good) of the total the
    search makes (Tune's ``total_num_samples``: num_samples times the grid's combinations)."""

    def __init__(self, sweep: str):
        self.sweep = sweep
        self._total: int | None = None
        self._told: tuple | None = None

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        self._total = total_num_samples if total_num_samples and total_num_samples > 0 else None
        self._told = None
        self._tell(0)

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._tell(sum(t.status in ENDED for t in trials))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._tell(sum(t.status in ENDED for t in trials))

    def _tell(self, done: int) -> None:
        report = _REPORTS.get(self.sweep)
        if report is not None and (done, self._total) != self._told:
            report(done, self._total)
            self._told = (done, self._total)

    def __getstate__(self) -> dict:  # what tuner.pkl keeps: the name, never a driver's state
        return {"sweep": self.sweep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["sweep"])
