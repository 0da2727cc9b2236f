"""The default image recipe on a small set: 3 epochs vs a budget of min_steps optimizer steps.

    python benchmarks/small_data_budget.py [--train 1100] [--validation 972] [--image-size 64]
        [--min-steps 300] [--learning-rate 1e-3]

Issue 28, point 13: the default image sweep recipe (EfficientNet-Lite0 pretrained, batch 64,
3 epochs, linear warm-up and decay) on 1,100 images reached 0.46 validation accuracy. This runs
the recipe's training loop (cluster/train/loop.py, bare: no Ray, all cores) on a stratified
subset of the animal-mnist training split, once with the recipe's 3 epochs and once with the
epochs cluster/train/loop.py budget_epochs gives for --min-steps, and prints each run's
validation accuracy (the last validation) and wall time, and the time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def splits(tmp: Path, train_rows: int, val_rows: int):
    """(train, validation, labels) as a sweep loads them, from animal-mnist's sample splits."""
    from cluster.data.image_data import sample_image_splits
    from cluster.specs.workloads import DataSpec, SweepSpec
    from jobs.sweep import load_splits

    sample_image_splits(tmp / "images")
    spec = SweepSpec(
        model="efficientnet-lite0",
        train=DataSpec(path=str(tmp / "images" / "train.parquet")),
        validation=DataSpec(path=str(tmp / "images" / "validation.parquet")),
        max_train_rows=train_rows,
        max_validation_rows=val_rows,
    )
    return load_splits(spec, "image")[:3]


def run(train, val, labels, image_size: int, lr: float, epochs: int) -> dict:
    """The recipe's loop for ``epochs``: its last validation's accuracy, steps and seconds."""
    import torch

    from cluster.models.device import resolve_precision
    from cluster.models.modality import load_for_training
    from cluster.models.resolve import resolve_model
    from cluster.specs.search_space import TrialParams
    from cluster.train.loop import fine_tune, prepared, steps_per_epoch
    from cluster.train.step import make_optimizer

    torch.set_num_threads(os.cpu_count() or 1)
    hp = TrialParams.of({"learning_rate": lr, "batch_size": 64, "epochs": epochs, "warmup_ratio": 0.06,
                         "weight_decay": 0.01, "max_length": 64, "seed": 0})  # fmt: skip
    t0 = time.perf_counter()
    clf = load_for_training(resolve_model("efficientnet-lite0").path, labels, seed=0, image_size=image_size)
    tr, va = prepared(clf, train), prepared(clf, val)
    steps = steps_per_epoch(len(tr.inputs), hp.batch_size) * epochs
    opt, sched = make_optimizer(clf.model, hp, steps)
    reports: list[dict] = []
    fine_tune(clf, opt, sched, tr, va, hp, precision=resolve_precision("auto", "cpu"), evals_per_epoch=1,
              start_step=0, report=lambda m, step: reports.append(m))  # fmt: skip
    curve = [round(r["accuracy"], 4) for r in reports]  # by epoch
    return {"epochs": epochs, "steps": steps, "accuracy": reports[-1]["accuracy"], "curve": curve,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def main() -> None:
    from cluster.train.loop import budget_epochs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1100)
    p.add_argument("--validation", type=int, default=972)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--min-steps", type=int, default=300)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    opts = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train, val, labels = splits(Path(tmp), opts.train, opts.validation)
    raised = budget_epochs(3, len(train.y), 64, opts.min_steps)
    out = {"train": len(train.y), "validation": len(val.y), "image_size": opts.image_size}
    for name, epochs in (("recipe_3_epochs", 3), (f"min_steps_{opts.min_steps}", raised)):
        out[name] = run(train, val, labels, opts.image_size, opts.learning_rate, epochs)
        r = out[name]
        took = f"accuracy {r['accuracy']:.4f}, {r['seconds']:.0f} s"
        print(f"{name}: {r['epochs']} epochs, {r['steps']} steps, {took}")
    names = list(out)[-2:]
    print(f"time ratio {out[names[1]]['seconds'] / out[names[0]]['seconds']:.2f}x")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
