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
"""

from __future__ import annotations

from ray.tune.logger import TBXLoggerCallback


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
