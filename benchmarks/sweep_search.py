"""TPE (Optuna) + ASHA vs random search + ASHA on the same budget, in one script.

    python benchmarks/sweep_search.py [--trials 8] [--rows 1200] [--epochs 4] [--seeds 0 1 2]

Both searches fine-tune MiniLM (`base`) on the same stratified subsample of the
sample corpus, over the same search space (learning rate log-uniform, warm-up and
weight decay uniform), with the same number of trials, the same ASHA scheduler and
trials run one at a time on all CPUs (so TPE sees every finished trial before it
proposes the next). For each search seed, prints the best validation macro-F1 each
search found, its compute (trial-epochs) and wall time, then the mean difference
TPE - random over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def one_search(tmp: Path, registry, alg: str, seed: int, opts) -> dict:
    from sweep_asha import bench_spec

    from cluster.specs.search_space import LogUniform, SearchSpace, Uniform
    from jobs.sweep import run_sweep

    search = SearchSpace(
        learning_rate=LogUniform(loguniform=[1e-5, 3e-4]),
        warmup_ratio=Uniform(uniform=[0.0, 0.2]),
        weight_decay=Uniform(uniform=[0.0, 0.1]),
        epochs=opts.epochs,
        max_length=64,
    )
    spec = bench_spec(
        tmp,
        f"{alg}-{seed}",
        opts.trials,
        opts.rows,
        opts.validation_rows,
        opts.epochs,
        search=search,
        search_alg=alg,
        seed=seed,
    )
    t0 = time.perf_counter()
    summary = run_sweep(spec, registry)
    return {
        "best_f1_macro": summary["validation"]["f1_macro"],
        "trial_epochs": summary["trial_epochs"],
        "wall_s": time.perf_counter() - t0,
        "best_config": summary["best_config"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1200)
    parser.add_argument("--validation-rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    opts = parser.parse_args()

    from sweep_asha import start

    tmp = Path(tempfile.mkdtemp(prefix="searchbench-"))
    registry = start(tmp)
    out: dict[str, list[dict]] = {"random": [], "optuna": []}
    for seed in opts.seeds:
        for alg in ("random", "optuna"):  # alternate, to spread machine noise over both
            r = one_search(tmp, registry, alg, seed, opts)
            out[alg].append(r)
            print(
                f"seed {seed} {alg:>6}: best validation macro-F1 {r['best_f1_macro']:.4f}, "
                f"{r['trial_epochs']:.1f} trial-epochs, {r['wall_s']:.0f}s",
                flush=True,
            )
    diffs = [
        (t["best_f1_macro"] - r["best_f1_macro"]) * 100
        for t, r in zip(out["optuna"], out["random"], strict=True)
    ]
    print(
        f"TPE - random, best validation macro-F1: mean {sum(diffs) / len(diffs):+.2f} points over "
        f"{len(diffs)} seeds ({', '.join(f'{d:+.2f}' for d in diffs)}); {opts.trials} trials each, ASHA"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
