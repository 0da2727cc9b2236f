"""A sweep spec as a Ray Tune Tuner: the trainable with its context and resources, checkpoints,
retries, and a resumed sweep's state checked first (the search itself: cluster/tune/search.py)."""

from __future__ import annotations

import logging
import os
import time
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
    key_file: Path,
):
    """The Tuner: function trainable with its data in the object store, scheduler, checkpoints, retries;
    its storage signs and checks Tune's pickled state with ``key_file`` (cluster/tune/signing.py)."""
    from ray import tune

    from cluster.tune.callbacks import NoTensorBoard, TrialsProgress
    from cluster.tune.search import param_space, tune_config
    from cluster.tune.signing import signed_filesystem
    from cluster.tune.trial import TrialContext

    # Checkpointing at every validation is the point; Tune's "excessive sync" warning is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cpus, gpus = resources
    if spec.task == "translation":  # splits: a TranslationData (cluster/tune/translation_trial.py)
        from cluster.tune.translation_trial import translation_trainable

        trainable = translation_trainable(spec, str(model_path), splits, cpus, gpus)
        train_rows = len(splits.train)
    else:
        trainable = make_trainable(TrialContext(spec, str(model_path), labels, *splits), cpus, gpus)
        train_rows = len(splits[0].y)
    path = f"{storage.rstrip('/')}/{spec.name}"
    fs, root = signed_filesystem(path, key_file)
    if resume and tune.Tuner.can_restore(path):
        from cluster.tune.state import repair_experiment_state

        # signatures checked, and a driver killed mid-copy leaves files cut short: before Tune reads
        repair_experiment_state(spec, path, trainable, key_file)
        return tune.Tuner.restore(root, trainable, resume_errored=True, storage_filesystem=fs)
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=root.rsplit("/", 1)[0],
        storage_filesystem=fs,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=spec.checkpoints_to_keep,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.metric_mode,
        ),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # pickled with the run (tuner.pkl): a resumed driver has them too
        callbacks=[NoTensorBoard(), TrialsProgress(spec.name)],
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        run_config=run_config,
        tune_config=tune_config(spec, concurrency(spec, cpus, gpus), train_rows),
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
    """Trials that can run at once: max_concurrent_trials, else what the cluster's free resources
    hold (a CPU a Serve replica or a warm actor holds is not a trial's)."""
    import ray

    if spec.max_concurrent_trials:
        return spec.max_concurrent_trials
    res = ray.available_resources()
    fits = [res.get("CPU", 0) / cpus] + ([res.get("GPU", 0) / gpus] if gpus else [])
    return max(1, int(min(fits)))


def trial_resources(spec: SweepSpec) -> tuple[float, float]:
    """(CPUs, GPUs) per trial; auto = one GPU per trial on GPU clusters, and the CPUs free on the
    freest node (split among max_concurrent_trials). Fails at once, saying what is missing and how
    to change it, when no node could hold a trial now (Tune would leave it PENDING, silently)."""
    import ray

    from cluster.ray.runtime import max_gpus_per_node

    res = ray.cluster_resources()
    gpus = spec.resources.gpus if spec.resources.gpus is not None else (1.0 if res.get("GPU") else 0.0)
    if gpus > max_gpus_per_node():
        raise UserError(
            f"resources.gpus = {gpus:g} per trial, but no node has more than {max_gpus_per_node():g} GPUs"
        )
    node = _node_cpus(gpus, spec.resources.cpus or 1.0)
    if node is None:
        raise UserError(
            f"resources.gpus = {gpus:g} per trial, but no node has {gpus:g} GPU(s) free now (held by other "
            "work: `ray status` lists it); free them, or lower resources.gpus"
        )
    total, free = node
    if spec.resources.cpus is None:
        cpus = 1.0 if gpus else float(max(1, free // (spec.max_concurrent_trials or 1)))
    else:
        cpus = spec.resources.cpus
    held = f"{total:g} CPUs, {total - free:g} held by other work (a Serve replica, an evaluation, "
    held += "another job: `ray status` lists them)"
    if cpus > total:
        raise UserError(f"resources.cpus = {cpus:g} per trial, but no node has more than {total:g} CPUs")
    if free < 1 and spec.resources.cpus is None:
        share = f"give resources: {{cpus: {free:g}}} in the sweep's YAML, or " if free > 0 else ""
        raise UserError(f"no node has a free CPU for a trial (the freest has {held}); {share}free one")
    if cpus > free:
        raise UserError(
            f"resources.cpus = {cpus:g} per trial, but at most {free:g} CPUs are free on one node "
            f"({held}): a trial would wait for them; lower resources.cpus or free them"
        )
    log.info("each trial gets %g CPUs and %g GPUs", cpus, gpus)
    return float(cpus), float(gpus)


def _node_cpus(gpus: float, want: float, settle_s: float = 2.0) -> tuple[float, float] | None:
    """(total, free) CPUs of the node with the most free CPUs among those with ``gpus`` GPUs free
    (None: no such node). Ray's view of what is free lags a finished task by a moment: looked at
    again for up to ``settle_s`` while it shows less than ``want``."""
    import ray

    from cluster.ray.compat import available_resources_per_node

    totals = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
    deadline = time.monotonic() + settle_s
    while True:
        free = available_resources_per_node()
        nodes = [(free.get(i, {}).get("CPU", 0.0), r.get("CPU", 0.0)) for i, r in totals.items()
                 if free.get(i, {}).get("GPU", 0.0) >= gpus]  # fmt: skip
        best = max(nodes, default=None)
        if (best is not None and best[0] >= want) or time.monotonic() > deadline:
            return (best[1], best[0]) if best is not None else None
        time.sleep(0.2)


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
