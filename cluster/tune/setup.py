"""A sweep spec as a Ray Tune Tuner: the trainable with its context and resources, checkpoints,
retries, and a resumed sweep's state checked first (the search itself: cluster/tune/search.py)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cluster.errors import UserError
from cluster.specs.workloads import SweepSpec

log = logging.getLogger(__name__)


def make_tuner(
    spec: SweepSpec,
    storage: str,
    model_path: Path,
    labels: list[str],
    splits: tuple,
    resources: tuple,
    resume: bool,
):
    """The Tuner: function trainable with its data in the object store, scheduler, checkpoints, retries."""
    from ray import tune

    from cluster.tune.callbacks import NoTensorBoard
    from cluster.tune.search import param_space, tune_config
    from cluster.tune.trial import TrialContext

    # Checkpointing at every validation is the point; Tune's "excessive sync" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cpus, gpus = resources
    trainable = make_trainable(TrialContext(spec, str(model_path), labels, *splits), cpus, gpus)
    path = f"{storage.rstrip('/')}/{spec.name}"
    if resume and tune.Tuner.can_restore(path):
        from cluster.tune.state import repair_experiment_state

        repair_experiment_state(spec, path, trainable)  # a driver killed mid-copy leaves files cut short
        return tune.Tuner.restore(path, trainable, resume_errored=True)
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=spec.checkpoints_to_keep,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.metric_mode,
        ),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        callbacks=[NoTensorBoard()],  # pickled with the run (tuner.pkl): a resumed driver has it too
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        run_config=run_config,
        tune_config=tune_config(spec, concurrency(spec, cpus, gpus)),
    )


def make_trainable(ctx, cpus: float, gpus: float):
    """cluster.tune.trial.train_trial with its context (a ``TrialContext``: the spec, the model, the
    data) in the object store and its resources attached, as Tune's class that resumes from the
    newest complete checkpoint on storage (cluster/tune/trial.py)."""
    from ray import tune

    from cluster.tune.trial import sweep_trial_class, train_trial

    fn = tune.with_resources(tune.with_parameters(train_trial, ctx=ctx), {"cpu": cpus, "gpu": gpus})
    return sweep_trial_class(fn)


def concurrency(spec: SweepSpec, cpus: float, gpus: float) -> int:
    """Trials that can run at once: max_concurrent_trials, else what the cluster's resources hold."""
    import ray

    if spec.max_concurrent_trials:
        return spec.max_concurrent_trials
    res = ray.cluster_resources()
    fits = [res.get("CPU", 1) / cpus] + ([res.get("GPU", 0) / gpus] if gpus else [])
    return max(1, int(min(fits)))


def trial_resources(spec: SweepSpec) -> tuple[float, float]:
    """(CPUs, GPUs) per trial; auto = one GPU per trial on GPU clusters. Fails before starting
    when no node could ever hold a trial (Tune would wait forever)."""
    import ray

    from cluster.ray.runtime import max_gpus_per_node

    res = ray.cluster_resources()
    gpus = spec.resources.gpus if spec.resources.gpus is not None else (1.0 if res.get("GPU") else 0.0)
    if gpus > max_gpus_per_node():
        raise UserError(
            f"resources.gpus = {gpus:g} per trial, but no node has more than {max_gpus_per_node():g} GPUs"
        )
    max_cpus = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=1)
    cpus = spec.resources.cpus or (
        1.0 if gpus else float(max(1, max_cpus // (spec.max_concurrent_trials or 1)))
    )
    if cpus > max_cpus:
        raise UserError(f"resources.cpus = {cpus:g} per trial, but no node has more than {max_cpus:g} CPUs")
    log.info("each trial gets %g CPUs and %g GPUs", cpus, gpus)
    return float(cpus), float(gpus)


# ------------------------------------------------------------------ interrupted sweeps


class SweepInterrupted(UserError):
    """Tuner.fit returned because the experiment was interrupted (SIGINT / Ctrl+C, SIGUSR1)."""

    exit_code = 130  # as a shell reports a program ended by SIGINT

    def __init__(self, name: str, results):
        started = len(results) if results is not None else 0
        super().__init__(
            f"sweep {name} was interrupted (SIGINT) with {started} trial(s) started: it is recorded as "
            f"failed, no model was registered and `best` did not move; finish it with "
            f"`evalctl sweep resume {name}` (finished trials are not run again)"
        )


class InterruptWatch:
    """Whether ``Tuner.fit`` inside this block returned because the experiment was interrupted.

    On SIGINT (or SIGUSR1), Tune's handler (ray/tune/tune.py, _setup_signal_catching) ends the
    experiment, saves its state, logs "Experiment has been interrupted" and puts back the SIGINT
    handler that was installed before fit, and fit returns the partial results as if done.
    So this block installs its own handler first: after fit, finding it in place again means
    Tune's handler ran. (Where Tune installs none, off the main thread or with
    TUNE_DISABLE_SIGINT_HANDLER=1, this handler sees the signal itself and raises
    KeyboardInterrupt, as Python would.)
    """

    def __enter__(self) -> InterruptWatch:
        import signal
        import threading

        self.fired = False
        self.main = threading.current_thread() is threading.main_thread()
        self.tune_catches = self.main and not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
        if self.main:
            self.previous = signal.getsignal(signal.SIGINT)
            self.handler = self._on_signal  # one bound method, compared with == below
            signal.signal(signal.SIGINT, self.handler)
        return self

    def _on_signal(self, signum, frame) -> None:
        self.fired = True
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        import signal

        self.was_interrupted = self.fired or (
            self.tune_catches and signal.getsignal(signal.SIGINT) == self.handler
        )
        if self.main:
            signal.signal(signal.SIGINT, self.previous)

    def interrupted(self) -> bool:
        """After the block: whether the experiment was interrupted."""
        return self.was_interrupted
