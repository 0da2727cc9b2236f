"""A sweep spec's search as Ray Tune objects: the search space, the search algorithm, the scheduler.

search_alg:
  random  BasicVariantGenerator: ``num_samples`` independent draws of the distributions
  grid    BasicVariantGenerator: every combination of the grid entries, ``num_samples`` times
  optuna  OptunaSearch (TPE, seeded) wrapped in a ConcurrencyLimiter: each trial's
          configuration is chosen from the results of the trials before it, so it
          must not run ahead of them
"""

from __future__ import annotations

import logging

from cluster.specs.search_space import kind_of, values_of
from cluster.specs.workloads import SweepSpec

FEW_STEPS = 150  # optimizer steps per trial below which a sweep without min_steps is warned


def param_space(spec: SweepSpec) -> dict:
    """The search space as Ray Tune's sample/grid objects (fixed values stay as they are)."""
    from ray import tune

    makers = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    space = {}
    for name in type(spec.search).model_fields:
        value = getattr(spec.search, name)
        kind = kind_of(value)
        space[name] = value if kind == "fixed" else makers[kind](list(getattr(value, kind)))
    return space


def tune_config(spec: SweepSpec, max_concurrent: int, train_rows: int):
    """Metric and mode (from the metric table), the search algorithm and the scheduler."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    scheduler = FIFOScheduler()
    if spec.scheduler.kind == "asha":
        max_t = most_epochs(spec, train_rows) * spec.evals_per_epoch  # validations of the longest trial
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=int(max_t),
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return tune.TuneConfig(
        metric=spec.metric,
        mode=spec.metric_mode,
        num_samples=spec.num_samples,
        scheduler=scheduler,  # concurrency is the search algorithm's (Tune ignores it for a generator)
        search_alg=search_alg(spec, max_concurrent),
    )


def most_epochs(spec: SweepSpec, train_rows: int) -> int:
    """The most epochs a trial of the sweep trains (its epochs raised to min_steps on small data)."""
    from cluster.train.loop import budget_epochs

    pairs = [(e, b) for e in values_of(spec.search.epochs) for b in values_of(spec.search.batch_size)]
    return max(budget_epochs(e, train_rows, b, spec.min_steps) for e, b in pairs)


def budget_note(spec: SweepSpec, train_rows: int) -> str | None:
    """One line before a sweep starts when its trials take few optimizer steps: raised to
    ``min_steps`` (said), or, without it, far below what fine-tuning needs (warned); else None."""
    from cluster.train.loop import budget_epochs, steps_per_epoch

    epochs, batch = min(values_of(spec.search.epochs)), max(values_of(spec.search.batch_size))
    steps = steps_per_epoch(train_rows, batch) * epochs  # the smallest budget a trial can draw
    raised = budget_epochs(epochs, train_rows, batch, spec.min_steps)
    what = f"{train_rows:,} training rows / batch_size {batch} x {epochs} epochs = {steps} optimizer steps"
    if raised > epochs:
        return f"note: {what}, below min_steps {spec.min_steps}: such a trial trains {raised} epochs"
    if steps < FEW_STEPS and not spec.min_steps:
        return (
            f"warning: {what} per trial, far below the few hundred fine-tuning needs (e.g. the image "
            "recipe on 1,100 images: 54 steps 0.46 accuracy, 180 steps 0.997); set min_steps: 300 "
            "(epochs raised to reach it) or more epochs"
        )
    return None


def search_alg(spec: SweepSpec, max_concurrent: int):
    """The search algorithm named by ``spec.search_alg`` (its grid/sampled rules:
    cluster/specs/search_space.py)."""
    if spec.search_alg in ("random", "grid"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials or 0)
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "trial finished" line per trial
    # Optuna's TPE samples its first n_startup_trials at random (default 10): with the 4-12 trials
    # of a typical sweep it would never model anything, so a third of the budget (2-10) explores.
    startup = max(2, min(10, spec.num_samples // 3))
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup)
    searcher = OptunaSearch(metric=spec.metric, mode=spec.metric_mode, sampler=sampler)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
