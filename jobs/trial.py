"""One sweep trial: a fine-tuning run of jobs/train_loop.py inside Ray Tune, with checkpoints.

A trial reports validation metrics with ``tune.report(metrics, checkpoint=...)`` at
each validation; a trial restarted after a failure resumes from
``tune.get_checkpoint()`` (model, optimizer, scheduler, step and RNG states).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def train_trial(
    config: dict,
    *,
    train,
    val,
    model_path: str,
    labels: list[str],
    precision: str,
    evals_per_epoch: int,
    init: str = "pretrained",
    image_size: int = 224,
) -> None:
    """Ray Tune function trainable: fine-tune with ``config``; resume from tune.get_checkpoint().

    ``init``/``image_size``: how a new model starts (cluster/modality.py ``load_for_training``)."""
    import torch
    from ray import tune

    from cluster.modality import load_for_training
    from cluster.modeling import pick_device, resolve_precision
    from cluster.runtime import worker_threads
    from jobs.train_loop import fine_tune, prepared, steps_per_epoch
    from jobs.train_step import make_optimizer

    torch.set_num_threads(worker_threads())
    device = pick_device()
    precision = resolve_precision(precision, device)
    checkpoint = tune.get_checkpoint()
    ckpt_dir = Path(checkpoint.to_directory()) if checkpoint else None
    start = dict(seed=int(config["seed"]), device=device, image_size=image_size)
    clf = (
        load_for_training(ckpt_dir / "model", labels, **start)  # its weights, whatever the init
        if ckpt_dir
        else load_for_training(model_path, labels, init=init, **start)
    )
    train, val = prepared(clf, train), prepared(clf, val)
    total = steps_per_epoch(len(train.inputs), int(config["batch_size"])) * int(config["epochs"])
    optimizer, scheduler = make_optimizer(clf.model, config, total)
    start_step = _restore(ckpt_dir, optimizer, scheduler) if ckpt_dir else 0
    if start_step:
        log.info("trial resumed from its checkpoint at step %d", start_step)

    def report(metrics: dict, step: int) -> None:
        with tempfile.TemporaryDirectory() as d:
            _save(Path(d), clf, optimizer, scheduler, step)
            tune.report({**metrics, "precision": precision}, checkpoint=tune.Checkpoint.from_directory(d))

    fine_tune(
        clf,
        optimizer,
        scheduler,
        train,
        val,
        config,
        precision=precision,
        evals_per_epoch=evals_per_epoch,
        start_step=start_step,
        report=report,
    )


def _save(d: Path, clf, optimizer, scheduler, step: int) -> None:
    """Checkpoint = model (safetensors) + optimizer, scheduler, step and every RNG state
    (safetensors + JSON: cluster/checkpoint.py; nothing in a checkpoint is ever unpickled)."""
    from cluster.checkpoint import save_trainer_state
    from cluster.modality import save_checkpoint

    save_checkpoint(clf, d)
    save_trainer_state(d, optimizer, scheduler, step)


def _restore(d: Path, optimizer, scheduler) -> int:
    """Optimizer, scheduler and RNG states from checkpoint ``d``; the step to resume at."""
    from cluster.checkpoint import load_trainer_state

    return load_trainer_state(d, optimizer, scheduler)
