"""The fine-tuning loop: plain PyTorch over a classifier of either modality (cluster/models/modality.py).

Used as is inside a Ray Tune trial (cluster/tune/trial.py) and bare (benchmarks), so the
two can be compared. Cross-entropy; the optimizer, schedule, precision (autocast,
fp16 loss scaling) and clipping are cluster/train/step.py's, shared with MLM
pretraining; validation ``evals_per_epoch`` times per epoch with the evaluation's
own metric code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cluster.train.step import TrainStep


@dataclass
class Split:
    """Inputs and their class ids (in model label order).

    ``inputs``: texts; or images, encoded (bytes/paths, as read) or decoded
    (uint8 (n, 3, S, S), after ``Classifier.prepare``).
    """

    inputs: list | np.ndarray
    y: np.ndarray  # (n,) int64


def prepared(clf, split: Split) -> Split:
    """``split`` with its inputs ready for ``clf`` (images decoded once, at the model's size;
    a bad image fails the trial naming its row)."""
    return Split(clf.prepare(split.inputs).inputs, split.y)


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return math.ceil(n_rows / batch_size)


def budget_epochs(epochs: int, n_rows: int, batch_size: int, min_steps: int) -> int:
    """The epochs a trial trains: ``epochs``, raised on small data until the trial takes at least
    ``min_steps`` optimizer steps (SweepSpec.min_steps; 0 keeps ``epochs``). Measured: the default
    image recipe's 3 epochs on 1,100 images are 54 steps and reach 0.46 validation accuracy, 10
    epochs (180 steps) 0.997 (issue 28): a budget counted in epochs means nothing on small data."""
    return max(epochs, math.ceil(min_steps / steps_per_epoch(n_rows, batch_size)))


# Batches can be drawn from length-sorted "mega-batches" of MEGABATCH batches, as
# Hugging Face's group_by_length: fewer padded tokens per step. Measured here
# (benchmarks/length_grouping.py, MiniLM): 1.14x training rows/s with 50, but lower
# macro-F1 on short runs (2,000 rows, 1 epoch: 0.567 vs 0.582; the demo sweep's
# best model on the test split: 0.619 vs 0.663), plausibly because same-length
# batches bias the few steps there are. So it is off (1 = plain shuffled batches).
MEGABATCH = 1


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, megabatch: int = MEGABATCH
) -> list[np.ndarray]:
    """The row indices of each batch of ``epoch``, a function of (seed, epoch) only.

    ``lengths``: (n,) text lengths in characters, a cheap proxy for tokens. A
    resumed run recomputes the same list, so it sees exactly the batches it
    would have seen.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * megabatch):
        mega = order[start : start + batch_size * megabatch]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches += [mega[i : i + batch_size] for i in range(0, len(mega), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_steps(per_epoch: int, evals_per_epoch: int) -> set[int]:
    """The steps of each epoch (1-based) after which a trial validates, the epoch's last included."""
    return {max(1, round(per_epoch * (j + 1) / evals_per_epoch)) for j in range(evals_per_epoch)}


class Window:
    """Training loss and speed since the last validation (what a report says beside its scores)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss, self.rows, self.train_s = 0.0, 0, 0.0  # loss summed over rows; seconds of steps

    def add(self, loss: float, rows: int, seconds: float) -> None:
        self.loss += loss * rows
        self.rows += rows
        self.train_s += seconds

    def close(self, step: int, per_epoch: int, start_step: int) -> dict:
        """The report's training fields after 0-based ``step``; the window starts again."""
        rows = max(self.rows, 1)
        fields = {
            "epoch": (step + 1) / per_epoch,
            "step": step + 1,
            "start_step": start_step,
            "train_loss": self.loss / rows,
            "train_rows_per_s": self.rows / max(self.train_s, 1e-9),
        }
        self.reset()
        return fields


def fine_tune(
    clf,
    optimizer,
    scheduler,
    train: Split,
    val: Split,
    hp,
    *,
    precision: str,
    evals_per_epoch: int,
    start_step: int,
    report: Callable[[dict, int], None],
) -> None:
    """Train from ``start_step`` to the end, calling ``report(metrics, step)`` at each validation.

    ``clf``: a ``cluster.models.modality.Classifier``; ``train``/``val`` prepared for it; ``hp``: the
    trial's ``TrialParams`` (batch_size, epochs, max_length, seed).
    The batches of epoch e are seeded by (seed, e) (``epoch_batches``), so a resumed
    run sees exactly the batches it would have seen.
    """
    import torch

    device = next(clf.model.parameters()).device
    bs, epochs, max_length = hp.batch_size, hp.epochs, hp.max_length
    per_epoch = steps_per_epoch(len(train.inputs), bs)
    eval_at = eval_steps(per_epoch, evals_per_epoch)
    y_all = torch.tensor(train.y)  # a copy (train.y may be read-only); uint8 masks stay uint8 until used
    # A model may bring its own loss and validation (a Segmenter: cluster/models/segmenter.py).
    loss_of = getattr(clf, "loss", None) or (
        lambda b, y, hp: torch.nn.functional.cross_entropy(clf.logits(b).float(), y)
    )
    validate_with = getattr(clf, "validate", None) or (lambda v, *a: validate(clf, v, *a))
    lengths = clf.lengths(train.inputs)
    step_fn = TrainStep(clf.model, optimizer, scheduler, precision)
    window = Window()
    for step in range(start_step, per_epoch * epochs):
        epoch, i = divmod(step, per_epoch)
        if i == 0 or step == start_step:  # a new epoch, or resuming mid-epoch
            batches = epoch_batches(lengths, bs, hp.seed, epoch, MEGABATCH)
        idx = batches[i]
        t0 = time.perf_counter()
        batch = clf.encode(train.inputs, idx, max_length=max_length)
        y = y_all[idx].to(device).long()
        loss = step_fn(lambda: loss_of(batch, y, hp))  # noqa: B023
        window.add(loss, len(idx), time.perf_counter() - t0)
        if i + 1 in eval_at:
            metrics = validate_with(val, max_length, precision)
            metrics.update(window.close(step, per_epoch, start_step))
            report(metrics, step + 1)


def validate(clf, val: Split, max_length: int, precision: str) -> dict:
    """The evaluation's own scalar metrics of ``clf`` on the (prepared) validation split."""
    from cluster.stats.metrics import compute_metrics
    from cluster.stats.threshold import compute_threshold_metrics

    clf.model.eval()
    probs = clf.predict_proba(val.inputs, max_length=max_length, precision=precision, batch_size=128)
    scores = compute_metrics(val.y, probs, clf.labels)
    # ROC-AUC, AP, top-2 accuracy, Brier (point values): so a sweep can rank by any metric of the table
    scores.update(compute_threshold_metrics(y_true=val.y, probs=probs, labels=clf.labels, bootstrap=0))
    return {k: v for k, v in scores.items() if isinstance(v, float)}
