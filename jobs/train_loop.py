"""The fine-tuning loop: plain PyTorch over a Hugging Face classifier.

Used as is inside a Ray Tune trial (jobs/sweep.py) and bare (benchmarks), so the
two can be compared. Cross-entropy, AdamW, linear warm-up then decay, bf16
autocast where the hardware runs it natively, validation ``evals_per_epoch``
times per epoch with the evaluation's own metric code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """Texts and their class ids (in model label order)."""

    texts: list[str]
    y: np.ndarray  # (n,) int64


def make_optimizer(model, hp: dict, total_steps: int):
    """AdamW (no decay on biases and LayerNorm) + linear warm-up/decay schedule."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp["learning_rate"],
    )
    warmup = int(hp["warmup_ratio"] * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return math.ceil(n_rows / batch_size)


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


def fine_tune(
    model,
    tokenizer,
    optimizer,
    scheduler,
    train: Split,
    val: Split,
    hp: dict,
    *,
    labels: list[str],
    precision: str,
    evals_per_epoch: int,
    start_step: int,
    report: Callable[[dict, int], None],
) -> None:
    """Train from ``start_step`` to the end, calling ``report(metrics, step)`` at each validation.

    The batches of epoch e are seeded by (seed, e) (``epoch_batches``), so a resumed
    run sees exactly the batches it would have seen.
    """
    import torch

    from cluster.metrics import compute_metrics
    from cluster.modeling import autocast, predict_proba

    device = next(model.parameters()).device
    bs, epochs = int(hp["batch_size"]), int(hp["epochs"])
    per_epoch = steps_per_epoch(len(train.texts), bs)
    total = per_epoch * epochs
    # Validate after these steps of each epoch (1-based), the epoch's last step included.
    eval_at = {max(1, round(per_epoch * (j + 1) / evals_per_epoch)) for j in range(evals_per_epoch)}
    y_all = torch.tensor(train.y, dtype=torch.long)  # a copy: train.y may be read-only
    lengths = np.array([len(t) for t in train.texts])
    loss_sum, rows, train_s = 0.0, 0, 0.0
    for step in range(start_step, total):
        epoch, i = divmod(step, per_epoch)
        if i == 0 or step == start_step:  # a new epoch, or resuming mid-epoch
            batches = epoch_batches(lengths, bs, int(hp["seed"]), epoch, MEGABATCH)
        idx = batches[i]
        t0 = time.perf_counter()
        model.train()
        batch = tokenizer(
            [train.texts[j] for j in idx],
            truncation=True,
            max_length=int(hp["max_length"]),
            padding=True,
            return_tensors="pt",
        ).to(device)
        with autocast(precision, device.type):
            logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), y_all[idx].to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        loss_sum, rows = loss_sum + loss.item() * len(idx), rows + len(idx)
        done = step + 1
        if i + 1 in eval_at:
            model.eval()
            probs = predict_proba(
                model,
                tokenizer,
                val.texts,
                max_length=int(hp["max_length"]),
                precision=precision,
                batch_size=128,
            )
            scores = compute_metrics(val.y, probs, labels)
            metrics = {k: v for k, v in scores.items() if isinstance(v, float)}
            metrics.update(
                epoch=done / per_epoch,
                step=done,
                start_step=start_step,
                train_loss=loss_sum / max(rows, 1),
                train_rows_per_s=rows / max(train_s, 1e-9),
            )
            report(metrics, done)
            loss_sum, rows, train_s = 0.0, 0, 0.0
