"""The translation fine-tuning loop: teacher-forced cross-entropy, validation by BLEU on generated text.

The translation counterpart of cluster/train/loop.py, with the same shape so a Ray Tune trial
(cluster/tune/translation_trial.py) drives both alike: the batches of epoch e are a function
of (seed, e) (``epoch_batches``: a resumed trial sees exactly the batches it would have seen),
every step goes through cluster/train/step.py's ``TrainStep`` (AdamW, warm-up/decay,
autocast, clipping), and ``report(metrics, step)`` is called ``evals_per_epoch`` times per
epoch. The loss is the mean token cross-entropy of the reference given its own previous
tokens (teacher forcing, ``Translator.loss``); validation generates greedily, at most
``max_new_tokens`` tokens per sentence, and scores the corpus with BLEU, chrF and TER
(cluster/stats/translation.py, sacrebleu's definitions).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cluster.train.loop import MEGABATCH, Window, epoch_batches, eval_steps, steps_per_epoch
from cluster.train.step import TrainStep


def fine_tune_translation(
    tr,
    optimizer,
    scheduler,
    train,
    val,
    hp,
    *,
    max_target_length: int,
    max_new_tokens: int,
    precision: str,
    evals_per_epoch: int,
    start_step: int,
    report: Callable[[dict, int], None],
) -> None:
    """Train ``tr`` (cluster.models.seq2seq.Translator) from ``start_step`` to the end.

    ``train``/``val``: cluster.data.parallel.Pairs. ``hp``: the trial's TrialParams (batch_size,
    epochs, max_length = source tokens, seed)."""
    bs, epochs, max_length = hp.batch_size, hp.epochs, hp.max_length
    per_epoch = steps_per_epoch(len(train), bs)
    eval_at = eval_steps(per_epoch, evals_per_epoch)
    lengths = np.array([len(s) for s in train.sources])  # characters: a cheap proxy for tokens
    step_fn = TrainStep(tr.model, optimizer, scheduler, precision)
    window = Window()  # since the last validation
    for step in range(start_step, per_epoch * epochs):
        epoch, i = divmod(step, per_epoch)
        if i == 0 or step == start_step:
            batches = epoch_batches(lengths, bs, hp.seed, epoch, MEGABATCH)
        idx = batches[i]
        t0 = time.perf_counter()
        batch = tr.encode(
            [train.sources[j] for j in idx],
            [train.targets[j] for j in idx],
            max_length=max_length,
            max_target_length=max_target_length,
        )
        loss = step_fn(lambda: tr.loss(batch))  # noqa: B023
        window.add(loss, len(idx), time.perf_counter() - t0)
        if i + 1 in eval_at:
            metrics = validate_translation(tr, val, max_length, max_new_tokens, precision)
            metrics.update(window.close(step, per_epoch, start_step))
            report(metrics, step + 1)


def validate_translation(tr, val, max_length: int, max_new_tokens: int, precision: str) -> dict:
    """Corpus BLEU, chrF, TER and the length ratio of greedy translations of ``val`` (Pairs),
    with the generation's speed (sentences/s)."""
    from cluster.stats.translation import batch_stats, finalize

    t0 = time.perf_counter()
    hyps = tr.translate(
        val.sources, num_beams=1, max_new_tokens=max_new_tokens, max_length=max_length, precision=precision
    )
    took = time.perf_counter() - t0
    scores = finalize(batch_stats(hyps, val.references))
    out = {k: float(scores[k]) for k in ("bleu", "chrf", "ter", "length_ratio")}
    out["validation_sentences_per_s"] = len(hyps) / max(took, 1e-9)
    return out
