"""One translation sweep trial: cluster/train/seq2seq_loop.py inside Ray Tune, with checkpoints.

The same contract as a classification trial (cluster/tune/trial.py, whose resume machinery
wraps this one too: :func:`cluster.tune.trial.sweep_trial_class`): it reports validation
metrics (BLEU, chrF, TER on greedy translations) with a checkpoint at each validation, each
checkpoint a model directory (safetensors, both tokenizers) plus the trainer state and a
manifest; a restarted trial resumes from its newest complete checkpoint, exactly.

What a trial receives besides its hyperparameters (Tune's config, validated as
:class:`~cluster.specs.search_space.TrialParams` where the trial starts) is a
:class:`TranslationContext`: the sweep's spec, the model it starts from and a
:class:`TranslationData`, the training and validation pairs and the target tokenizer, trained
once by the driver on the training targets, so every trial (and every restart of one) starts
from the same vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TranslationData:
    """What the driver hands every trial (through Ray's object store)."""

    train: object  # cluster.data.parallel.Pairs
    val: object  # cluster.data.parallel.Pairs
    target_tokenizer: str  # cluster.models.seq2seq_build.target_tokenizer_json
    fingerprint: str  # of the training data, recorded with the sweep


@dataclass(frozen=True)
class TranslationContext:
    """What every trial of a translation sweep shares (put once in Ray's object store)."""

    spec: object  # cluster.specs.workloads.SweepSpec (task: translation)
    model_path: str
    data: TranslationData


def train_translation_trial(config: dict, *, ctx: TranslationContext) -> None:
    """Ray Tune function trainable: fine-tune a translator with ``config`` (validated as
    TrialParams here); resume from tune.get_checkpoint()."""
    from cluster.specs.search_space import TrialParams
    from cluster.train.loop import steps_per_epoch
    from cluster.train.seq2seq_loop import fine_tune_translation
    from cluster.train.step import make_optimizer
    from cluster.tune.trial import TrialRun

    params, spec, data = TrialParams.of(config), ctx.spec.translation, ctx.data
    run = TrialRun.start(ctx.spec.precision)
    tr = _translator(ctx, run.ckpt_dir, params.seed, run.device)
    total = steps_per_epoch(len(data.train), params.batch_size) * params.epochs
    optimizer, scheduler = make_optimizer(tr.model, params, total)
    fine_tune_translation(
        tr,
        optimizer,
        scheduler,
        data.train,
        data.val,
        params,
        max_target_length=spec.max_target_length,
        max_new_tokens=spec.max_new_tokens,
        precision=run.precision,
        evals_per_epoch=ctx.spec.evals_per_epoch,
        start_step=run.resume_step(optimizer, scheduler),
        report=run.reporter(tr.save_checkpoint, optimizer, scheduler),
    )


def _translator(ctx: TranslationContext, ckpt_dir: Path | None, seed: int, device: str):
    """The trial's translator: its checkpoint's weights when resuming (whatever the init), else new."""
    from cluster.models.seq2seq import load_translator, start_translator
    from cluster.models.seq2seq_build import target_tokenizer_from_json

    if ckpt_dir:
        return load_translator(ckpt_dir / "model", device=device)
    tok = target_tokenizer_from_json(ctx.data.target_tokenizer)
    return start_translator(
        ctx.model_path,
        ctx.spec.translation,
        target_tokenizer=tok,
        init=ctx.spec.init,
        seed=seed,
        device=device,
    )


def translation_trainable(spec, model_path: str, data: TranslationData, cpus: float, gpus: float):
    """The trial function with its context in the object store and its resources, as Tune's class
    that resumes from the newest complete checkpoint on storage (cluster/tune/trial.py)."""
    from ray import tune

    from cluster.tune.trial import sweep_trial_class

    ctx = TranslationContext(spec, str(model_path), data)
    fn = tune.with_resources(
        tune.with_parameters(train_translation_trial, ctx=ctx), {"cpu": cpus, "gpu": gpus}
    )
    return sweep_trial_class(fn)


# ------------------------------------------------------------------ the driver's side


def prepare_translation(spec, model) -> TranslationData:
    """The sweep's data, checked before anything starts: the metric is a translation metric, the
    model can start a translator, the splits read (bad rows are errors naming the row), capped
    (a seeded choice of ``max_train_rows``/``max_validation_rows``), and the target tokenizer
    trained on the training targets when the model needs a new decoder."""
    from cluster.data.parallel import read_pairs, subsample
    from cluster.errors import UserError
    from cluster.models.seq2seq import is_seq2seq_dir
    from cluster.models.seq2seq_build import target_tokenizer_json, train_target_tokenizer
    from cluster.stats.translation import METRICS

    if spec.metric not in METRICS:
        raise UserError(
            f"a translation sweep ranks trials by {', '.join(METRICS)}, not {spec.metric}; set metric: bleu"
        )
    if model.modality != "text":
        raise UserError(f"model {model.model_id} is an image model; translation starts from a text encoder")
    train = subsample(read_pairs(spec.train), spec.max_train_rows, spec.seed)
    val = subsample(read_pairs(spec.validation), spec.max_validation_rows, spec.seed)
    tokenizer = ""
    if not is_seq2seq_dir(model.path):
        tokenizer = target_tokenizer_json(train_target_tokenizer(train.targets, spec.translation.vocab_size))
    return TranslationData(train, val, tokenizer, train.fingerprint)
