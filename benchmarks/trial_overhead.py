"""Training throughput inside a Ray Tune trial vs the same loop run bare, in one script.

    python benchmarks/trial_overhead.py [--rows 1500] [--repeats 2]

Both run jobs/train_loop.fine_tune on the same rows with the same hyperparameters
and precision; rows/s counts training steps only (validation excluded), as each
run reports it. Bare and trial runs alternate to spread machine noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
HP = {
    "learning_rate": 5e-5,
    "batch_size": 32,
    "epochs": 1,
    "warmup_ratio": 0.06,
    "weight_decay": 0.01,
    "max_length": 64,
    "seed": 0,
}


def sample_train_val(tmp: Path, rows: int, val_rows: int):
    """(train, validation, labels): subsamples of the sample corpus's splits, loaded as a sweep does."""
    from cluster.data.corpus import sample_splits
    from cluster.specs.workloads import DataSpec, SweepSpec
    from jobs.sweep import load_splits

    sample_splits(tmp / "sample")
    spec = SweepSpec(
        train=DataSpec(path=str(tmp / "sample" / "train.parquet")),
        validation=DataSpec(path=str(tmp / "sample" / "validation.parquet")),
        max_train_rows=rows,
        max_validation_rows=val_rows,
    )
    train, val, labels, _ = load_splits(spec)
    return train, val, labels


def fine_tune_bare(train, val, labels, model_path, evals_per_epoch: int) -> list[dict]:
    """Run jobs/train_loop.fine_tune outside Ray on all cores; returns each validation's report."""
    import torch

    from cluster.models.device import resolve_precision
    from cluster.models.modality import load_for_training
    from cluster.train.loop import fine_tune, steps_per_epoch
    from cluster.train.step import make_optimizer

    torch.set_num_threads(os.cpu_count())
    clf = load_for_training(model_path, labels, seed=0)
    from cluster.specs.search_space import TrialParams

    hp = TrialParams.of(HP)
    opt, sched = make_optimizer(clf.model, hp, steps_per_epoch(len(train.inputs), hp.batch_size))
    reports: list[dict] = []
    fine_tune(
        clf,
        opt,
        sched,
        train,
        val,
        hp,
        precision=resolve_precision("auto", "cpu"),
        evals_per_epoch=evals_per_epoch,
        start_step=0,
        report=lambda m, step: reports.append(m),
    )
    return reports


def bare(train, val, labels, model_path) -> float:
    reports = fine_tune_bare(train, val, labels, model_path, evals_per_epoch=2)
    return float(np.mean([m["train_rows_per_s"] for m in reports]))


def in_trial(train, val, labels, model_path, storage) -> float:
    from ray import tune

    from cluster.specs.workloads import SweepSpec
    from cluster.tune.setup import make_trainable
    from cluster.tune.trial import TrialContext

    # The trial settings the sweep would pass (a pretrained text model: image_size is unused).
    ctx = TrialContext(SweepSpec(evals_per_epoch=2), str(model_path), labels, train, val)
    trainable = make_trainable(ctx, float(os.cpu_count()), 0.0)
    results = tune.Tuner(trainable, param_space=HP, run_config=tune.RunConfig(storage_path=storage)).fit()
    return float(results[0].metrics_dataframe["train_rows_per_s"].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()

    import ray

    from cluster.models.modeldir import base_model_dir

    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    train, val, labels = sample_train_val(tmp, opts.rows, 300)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    bare_rates, trial_rates = [], []
    for _ in range(opts.repeats):
        bare_rates.append(bare(train, val, labels, base_model_dir()))
        trial_rates.append(in_trial(train, val, labels, base_model_dir(), str(tmp / "tune")))
        print(f"bare {bare_rates[-1]:.1f} rows/s, in a Tune trial {trial_rates[-1]:.1f} rows/s", flush=True)
    ratio = np.mean(trial_rates) / np.mean(bare_rates)
    print(f"trial / bare training rows/s: {ratio:.3f} (target >= 0.9)")
    print(json.dumps({"bare": bare_rates, "trial": trial_rates, "ratio": ratio}))


if __name__ == "__main__":
    main()
