"""ASHA vs no early stopping on the same search space and seed.

    python benchmarks/sweep_asha.py [--trials 8] [--rows 1200] [--epochs 4]

Both sweeps fine-tune MiniLM (`base`) on the same stratified subsample of the
sample corpus with the same random learning rates (seeded search), one trial at
a time with both CPUs. Prints each sweep's compute (total trial-epochs), wall
time and best validation macro-F1, and the ratios the issue targets
(ASHA compute <= 50%, best within 1.0 point).
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


def bench_spec(tmp: Path, name: str, trials: int, rows: int, validation_rows: int, epochs: int, **kw):
    """The benchmarks' sweep: MiniLM, a seeded log-uniform learning-rate search, trials one at a time."""
    from cluster.specs.search_space import LogUniform, SearchSpace
    from cluster.specs.workloads import DataSpec, ResourcesSpec, SchedulerSpec, SweepSpec

    search = kw.pop("search", None) or SearchSpace(
        learning_rate=LogUniform(loguniform=[1e-5, 3e-4]), epochs=epochs, max_length=64
    )
    return SweepSpec(
        name=name,
        model="base",
        train=DataSpec(path=str(tmp / "sample" / "train.parquet")),
        validation=DataSpec(path=str(tmp / "sample" / "validation.parquet")),
        search=search,
        scheduler=kw.pop("scheduler", SchedulerSpec(kind="asha", grace_period=1, reduction_factor=3)),
        num_samples=trials,
        max_concurrent_trials=1,
        resources=ResourcesSpec(cpus=float(os.cpu_count())),
        evals_per_epoch=2,
        max_train_rows=rows,
        max_validation_rows=validation_rows,
        seed=kw.pop("seed", 0),
        **kw,
    )


def start(tmp: Path):
    """Sample splits, a registry and an embedded Ray with every CPU, under ``tmp``."""
    import ray

    from cluster.data.corpus import sample_splits
    from cluster.registry.record import Registry

    sample_splits(tmp / "sample")
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    return Registry(tmp / "home")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--validation-rows", type=int, default=600)
    parser.add_argument(
        "--epochs", type=int, default=4, help="per trial; ASHA can only save what comes after its rungs"
    )
    opts = parser.parse_args()

    from cluster.specs.workloads import SchedulerSpec
    from jobs.sweep import run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="ashabench-"))
    registry = start(tmp)
    out = {}
    for kind in ("none", "asha"):
        spec = bench_spec(
            tmp,
            f"bench-{kind}",
            opts.trials,
            opts.rows,
            opts.validation_rows,
            opts.epochs,
            scheduler=SchedulerSpec(kind=kind, grace_period=1, reduction_factor=3),
        )
        t0 = time.perf_counter()
        summary = run_sweep(spec, registry)
        out[kind] = {
            "trial_epochs": summary["trial_epochs"],
            "wall_s": time.perf_counter() - t0,
            "best_f1_macro": summary["validation"]["f1_macro"],
            "learning_rates": sorted(d["config"]["learning_rate"] for d in summary["trial_details"]),
        }
        print(
            f"{kind:>5}: {out[kind]['trial_epochs']:.1f} trial-epochs, {out[kind]['wall_s']:.0f}s, "
            f"best validation macro-F1 {out[kind]['best_f1_macro']:.4f}",
            flush=True,
        )
    assert out["none"]["learning_rates"] == out["asha"]["learning_rates"], "search not seeded alike"
    compute = out["asha"]["trial_epochs"] / out["none"]["trial_epochs"]
    gap = (out["none"]["best_f1_macro"] - out["asha"]["best_f1_macro"]) * 100
    wall = out["asha"]["wall_s"] / out["none"]["wall_s"]
    print(
        f"ASHA compute {compute:.0%} of no early stopping (target <= 50%); wall {wall:.0%}; "
        f"best macro-F1 {gap:+.2f} points behind (target <= 1.0)"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
