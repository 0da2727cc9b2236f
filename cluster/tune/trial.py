"""One sweep trial: a fine-tuning run of cluster/train/loop.py inside Ray Tune, with checkpoints.

A trial reports validation metrics (and the node it runs on) with
``tune.report(metrics, checkpoint=...)`` at each validation; each checkpoint carries a
manifest of its files (cluster/train/checkpoint.py). A trial restarted after a failure, or after
the sweep's driver was killed and `evalctl sweep resume` restored it, resumes from
``tune.get_checkpoint()`` (model, optimizer, scheduler, step and RNG states).

Which checkpoint: the newest *complete* one of the trial on storage (:class:`SweepTrial`),
not necessarily the one the driver's last experiment snapshot named. The snapshot is
taken every 10 s or more, while ``CheckpointConfig(num_to_keep=...)`` deletes older
checkpoints as newer ones are reported: after a SIGKILLed driver the snapshot can name a
checkpoint that no longer exists (Ray's own restore then fails with "Could not recover
from checkpoint as it does not exist on storage anymore"), or name an older one than
storage holds (a finished trial would train again). Resuming from storage instead is
correct whatever moment the driver died at, at no disk cost. When the driver never recorded
that checkpoint's report (it died between the trial writing the checkpoint and the next
snapshot), the resumed trial reports it again first (:func:`resume_point`): so each
validation is recorded once, a trial resumed at its very end included.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster.specs.search_space import TrialParams
from cluster.specs.workloads import SweepSpec
from cluster.train.loop import Split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares besides its hyperparameters: the sweep's validated spec
    (precision, validations per epoch, how a new model starts), the model it starts from, its
    labels and the data (put once in Ray's object store by ``tune.with_parameters``)."""

    spec: SweepSpec
    model_path: str
    labels: list[str]
    train: Split
    val: Split


def train_trial(config: dict, *, ctx: TrialContext) -> None:
    """Ray Tune function trainable: fine-tune with ``config`` (validated as :class:`TrialParams`
    here, where the trial starts); resume from tune.get_checkpoint()."""
    from cluster.models.modality import save_checkpoint
    from cluster.train.loop import budget_epochs, fine_tune, prepared, steps_per_epoch
    from cluster.train.step import make_optimizer

    params = TrialParams.of(config)
    epochs = budget_epochs(params.epochs, len(ctx.train.y), params.batch_size, ctx.spec.min_steps)
    params = params.model_copy(update={"epochs": epochs})  # on small data: raised to min_steps
    run = TrialRun.start(ctx.spec.precision)
    clf = _start_model(run.ckpt_dir, ctx, params.seed, run.device)
    train, val = prepared(clf, ctx.train), prepared(clf, ctx.val)
    total = steps_per_epoch(len(train.inputs), params.batch_size) * params.epochs
    optimizer, scheduler = make_optimizer(clf.model, params, total)
    fine_tune(
        clf,
        optimizer,
        scheduler,
        train,
        val,
        params,
        precision=run.precision,
        evals_per_epoch=ctx.spec.evals_per_epoch,
        start_step=run.resume_step(optimizer, scheduler),
        report=run.reporter(lambda d: save_checkpoint(clf, d), optimizer, scheduler),
    )


@dataclass
class TrialRun:
    """What a trial of any task sets up alike around its training loop (the classification and
    segmentation trial here, the translation trial in cluster/tune/translation_trial.py): torch's
    threads, the device and precision, the checkpoint it resumes from, and the report that writes
    each validation's checkpoint (model, trainer state, manifest last) and hands it to Tune."""

    device: str
    precision: str  # resolved: fp32, bf16 or fp16
    ckpt_dir: Path | None  # the checkpoint resumed from; None: a fresh start
    node_id: str
    reports: Iterator[int]  # Tune's training_iteration of each report from here

    @classmethod
    def start(cls, precision: str) -> TrialRun:
        """Inside a Tune trial: ``precision`` is the spec's (auto, fp32, bf16, fp16)."""
        import ray
        import torch
        from ray import tune

        from cluster.models.device import pick_device, resolve_precision
        from cluster.ray.runtime import worker_threads

        torch.set_num_threads(worker_threads())
        device = pick_device()
        checkpoint = tune.get_checkpoint()
        ckpt_dir = Path(checkpoint.to_directory()) if checkpoint else None
        node_id = ray.get_runtime_context().get_node_id()
        iterations = itertools.count(_iteration_of(ckpt_dir) + 1)
        return cls(device, resolve_precision(precision, device), ckpt_dir, node_id, iterations)

    def resume_step(self, optimizer, scheduler) -> int:
        """The step to train from: the checkpoint's (its optimizer, scheduler and RNG states
        restored), 0 on a fresh start."""
        if self.ckpt_dir is None:
            return 0
        step = _restore(self.ckpt_dir, optimizer, scheduler)
        log.info("trial resumed from its checkpoint at step %d", step)
        return step

    def reporter(
        self, save_model: Callable[[Path], None], optimizer, scheduler
    ) -> Callable[[dict, int], None]:
        """``report(metrics, step)`` for a training loop; ``save_model(dir)`` writes the model part
        of a checkpoint (``dir/model``, safetensors). The rest, optimizer, scheduler, step and every
        RNG state, is safetensors + JSON (cluster/train/checkpoint.py): nothing in a checkpoint is
        ever unpickled."""
        from ray import tune

        from cluster.train.checkpoint import save_trainer_state, write_manifest

        def report(metrics: dict, step: int) -> None:
            metrics = {**metrics, "precision": self.precision, "node_id": self.node_id}
            with tempfile.TemporaryDirectory() as d:
                save_model(Path(d))
                save_trainer_state(d, optimizer, scheduler, step)
                write_manifest(d, step, next(self.reports), metrics)  # last: it lists every other file
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

        return report


def _start_model(ckpt_dir: Path | None, ctx: TrialContext, seed: int, device):
    """The checkpoint's model (its weights, whatever the init), else the sweep's model started as
    the spec's ``init`` says."""
    from cluster.models.modality import load_for_training

    start = dict(seed=seed, device=device, image_size=ctx.spec.image_size, task=ctx.spec.task)
    if ckpt_dir:
        return load_for_training(ckpt_dir / "model", ctx.labels, **start)
    return load_for_training(ctx.model_path, ctx.labels, init=ctx.spec.init, **start)


def _restore(d: Path, optimizer, scheduler) -> int:
    """Optimizer, scheduler and RNG states from checkpoint ``d``; the step to resume at."""
    from cluster.train.checkpoint import load_trainer_state

    return load_trainer_state(d, optimizer, scheduler)


def _iteration_of(ckpt_dir: Path | None) -> int:
    """Tune's training_iteration when checkpoint ``ckpt_dir`` was reported (0: a fresh start)."""
    from cluster.train.checkpoint import MANIFEST

    if ckpt_dir is None or not (ckpt_dir / MANIFEST).is_file():
        return 0
    return int(json.loads((ckpt_dir / MANIFEST).read_text()).get("iteration", 0))


# ------------------------------------------------------------------ resuming from storage


def sweep_trial_class(trainable):
    """Tune's class for the function ``trainable`` (with its parameters and resources attached),
    resuming from the trial's newest complete checkpoint on storage (see the module docstring)."""
    from ray import tune
    from ray.tune.trainable.function_trainable import wrap_function

    class SweepTrial(wrap_function(trainable)):
        def setup(self, config):
            self._unrecorded = None  # a report the driver never recorded, sent again first
            super().setup(config)
            # Also when the driver knows no checkpoint of this trial (it died before recording
            # the first one): storage may hold one.
            self._restore_newest(None)

        def restore(self, checkpoint_path):
            self._restore_newest(checkpoint_path)

        def _restore_newest(self, named) -> None:
            point, self._unrecorded = resume_point(self._storage, named)
            if point is not None:
                super().restore(point)
            elif named is not None:
                log.warning("no complete checkpoint of this trial on storage: it starts over")

        def _trainable_func(self, config):
            if self._unrecorded is not None:  # before any training: it is the resume point's report
                tune.report(self._unrecorded)
            return super()._trainable_func(config)

    SweepTrial.__qualname__ = "SweepTrial"  # the actor's class name in Ray's state API
    return SweepTrial


def resume_point(storage, named) -> tuple:
    """(the trial's newest complete checkpoint on ``storage`` as a training result for
    ``Trainable.restore``, or None when storage holds none; the metrics to report again first,
    or None). ``named``: the checkpoint result the driver asked for, if any.

    A checkpoint is on storage before the driver hears of its report (the trial writes it
    inside ``tune.report``). So when the newest complete checkpoint is not the one the driver
    named, its report may never have been recorded: unless the trial's result.json on storage
    holds its iteration, it is reported again, from the manifest, before training goes on (as
    Tune's iteration it had). Without that, a driver killed just
    after a trial's last checkpoint left a trial that resumes at its end, trains no step,
    reports nothing, and stays recorded one validation short of finished.

    Also moves the storage's checkpoint index past every directory present, so the resumed
    trial never writes into an existing one."""
    from ray.train import Checkpoint

    from cluster.ray.compat import training_result
    from cluster.train.checkpoint import checkpoint_states

    fs = storage.storage_filesystem
    states = checkpoint_states(fs, storage.trial_fs_path)
    highest = int(states[0][0].rsplit("_", 1)[-1]) if states else -1
    storage.current_checkpoint_index = max(storage.current_checkpoint_index, highest)
    complete = [(path, manifest) for path, manifest, _ in states if manifest is not None]
    skipped = list(itertools.takewhile(lambda state: state[1] is None, states))  # newer than the one used
    if skipped:
        note_skipped(fs, storage.trial_fs_path, skipped, complete[0][0] if complete else None)
    if not complete:
        return None, None
    path, manifest = complete[0]
    if named is not None and named.checkpoint.path.rstrip("/") == path.rstrip("/"):
        return named, None
    if named is not None:
        log.warning("resuming from %s (newest complete on storage), not %s", path, named.checkpoint.path)
    metrics = {**(named.metrics if named else {}), **manifest["metrics"]}
    recorded = manifest["iteration"] in _recorded_iterations(fs, storage.trial_fs_path)
    metrics["training_iteration"] = manifest["iteration"] - (
        not recorded
    )  # a report sent again takes its own
    point = training_result(Checkpoint(path, filesystem=fs), metrics)
    return point, None if recorded else dict(manifest["metrics"])


RESUMES = "evalcluster_resumes.json"  # in a trial's directory: checkpoints its restarts skipped


def note_skipped(fs, trial_fs_path: str, skipped: list, used: str | None) -> None:
    """A restart that skips damaged or incomplete checkpoints: warned, and recorded in the trial's
    directory (RESUMES) for the sweep's summary (cluster/tune/export.py), so a trial that lost
    work, or started over, never does so silently."""
    names = [{"checkpoint": Path(path).name, "why": why} for path, _, why in skipped]
    resumed = Path(used).name if used else None
    log.warning(
        "trial %s: %s; %s",
        Path(trial_fs_path).name,
        "; ".join(f"{n['checkpoint']} skipped ({n['why']})" for n in names),
        f"resuming from {resumed}" if resumed else "no usable checkpoint: it starts over",
    )
    events = resume_notes(fs, trial_fs_path)
    event = {"skipped": names, "resumed_from": resumed}
    if events and {k: events[-1][k] for k in event} == event:
        return  # the same restart (setup, then Tune's restore)
    events.append({**event, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with fs.open_output_stream(f"{trial_fs_path}/{RESUMES}") as f:
        f.write(json.dumps(events, indent=1).encode())


def resume_notes(fs, trial_fs_path: str) -> list[dict]:
    """The restarts of a trial that skipped checkpoints (RESUMES); [] when none did."""
    try:
        with fs.open_input_stream(f"{trial_fs_path}/{RESUMES}") as f:
            events = json.loads(f.readall())
    except (FileNotFoundError, ValueError):
        return []
    return events if isinstance(events, list) else []


def _recorded_iterations(fs, trial_fs_path: str) -> set[int]:
    """Tune iterations the trial's result.json on storage holds. It can be ahead of the snapshot:
    Tune's background copy to storage takes result.json as it is when copied, and the driver goes
    on writing it meanwhile; a driver killed then leaves a row its snapshot does not know (seen:
    a validation recorded twice). A row cut short by the kill is no record."""
    try:
        with fs.open_input_stream(f"{trial_fs_path}/result.json") as f:
            lines = f.readall().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return set()
    done = set()
    for line in lines:
        try:
            done.add(int(json.loads(line)["training_iteration"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done
