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
    config: dict, *, train, val, model_path: str, labels: list[str], precision: str, evals_per_epoch: int
) -> None:
    """Ray Tune function trainable: fine-tune with ``config``; resume from tune.get_checkpoint()."""
    import torch
    from ray import tune

    from cluster.modeling import load_classifier, pick_device, resolve_precision
    from cluster.runtime import worker_threads
    from jobs.train_loop import fine_tune, steps_per_epoch
    from jobs.train_step import make_optimizer

    torch.set_num_threads(worker_threads())
    device = pick_device()
    precision = resolve_precision(precision, device)
    checkpoint = tune.get_checkpoint()
    ckpt_dir = Path(checkpoint.to_directory()) if checkpoint else None
    model, tokenizer, _ = load_classifier(
        ckpt_dir / "model" if ckpt_dir else model_path, labels=labels, seed=int(config["seed"]), device=device
    )
    total = steps_per_epoch(len(train.texts), int(config["batch_size"])) * int(config["epochs"])
    optimizer, scheduler = make_optimizer(model, config, total)
    start_step = _restore(ckpt_dir, optimizer, scheduler) if ckpt_dir else 0
    if start_step:
        log.info("trial resumed from its checkpoint at step %d", start_step)

    def report(metrics: dict, step: int) -> None:
        with tempfile.TemporaryDirectory() as d:
            _save(Path(d), model, tokenizer, optimizer, scheduler, step)
            tune.report({**metrics, "precision": precision}, checkpoint=tune.Checkpoint.from_directory(d))

    fine_tune(
        model,
        tokenizer,
        optimizer,
        scheduler,
        train,
        val,
        config,
        labels=labels,
        precision=precision,
        evals_per_epoch=evals_per_epoch,
        start_step=start_step,
        report=report,
    )


def _save(d: Path, model, tokenizer, optimizer, scheduler, step: int) -> None:
    """Checkpoint = model (safetensors) + optimizer, scheduler, step and every RNG state
    (safetensors + JSON: cluster/checkpoint.py; nothing in a checkpoint is ever unpickled)."""
    from cluster.checkpoint import save_trainer_state

    model.save_pretrained(d / "model", safe_serialization=True)
    tokenizer.save_pretrained(d / "model")
    save_trainer_state(d, optimizer, scheduler, step)


def _restore(d: Path, optimizer, scheduler) -> int:
    """Optimizer, scheduler and RNG states from checkpoint ``d``; the step to resume at."""
    from cluster.checkpoint import load_trainer_state

    return load_trainer_state(d, optimizer, scheduler)
