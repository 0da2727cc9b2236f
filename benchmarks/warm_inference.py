"""Why a warm evaluation's inference ran slower than a fresh actor's: a controlled experiment.

    python benchmarks/warm_inference.py --model DIR --data ROWS.parquet [--repeats 3]

One embedded Ray (2 CPUs). Warm-style model actors (no CPU reserved, the plan's torch
threads, as cluster/evaluation/pipeline.py makes them on a head) score the same shard under these
conditions, run alternately in each repeat:

  - reused: an actor that has scored the shard before scores it again (what `warm` is)
  - fresh: a new actor, loaded (waited for), scores it for the first time (what `head` is)
  - explainer: the reused actor scores it while a second model loads beside it (a new 0-CPU
    worker importing torch + transformers and loading the model: what the Explainer actor,
    the old way of computing the report's token attributions, did at the start of every
    run). A warm run's actors are ready at once, so that load ran during its inference; a
    cold or head run's actors load for ~7 s first, and the explainer's load ran beside theirs.
  - threads1: the reused actor with 1 torch thread (what Ray's OMP_NUM_THREADS=1 for a
    0-CPU actor would give it)

Printed per condition: wall seconds of the score call, the actor process's CPU seconds
during it, its torch threads; then medians and ratios to ``reused``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class ProbedActor:
    """cluster.evaluation.predictor.ModelActor plus a probe: this process's CPU seconds and torch threads."""

    def __init__(self, *args):
        from cluster.evaluation.predictor import ModelActor

        self.inner = ModelActor(*args)

    def ready(self) -> bool:
        return True

    def probe(self, threads: int | None = None) -> dict:
        import torch

        if threads:
            torch.set_num_threads(threads)
        return {"cpu_s": time.process_time(), "threads": torch.get_num_threads()}

    def score(self, *args):
        self.inner.score(*args)  # the table stays here: only the time matters
        return True


class SecondLoad:
    """What the old Explainer actor did when it started: torch's threads as Ray gives a 0-CPU
    actor, then the model loaded (a copy of its own)."""

    def __init__(self, model_path: str):
        import torch

        from cluster.models.text import load_classifier
        from cluster.ray.runtime import worker_threads

        torch.set_num_threads(worker_threads())
        self.model = load_classifier(model_path)[0]

    def ready(self) -> bool:
        return True


def timed_score(actor, call: tuple) -> dict:
    """Wall and the actor's CPU seconds of one score call."""
    import ray

    before = ray.get(actor.probe.remote())
    t0 = time.perf_counter()
    ray.get(actor.score.remote(*call))
    wall = time.perf_counter() - t0
    after = ray.get(actor.probe.remote())
    return {"wall_s": wall, "cpu_s": after["cpu_s"] - before["cpu_s"], "threads": after["threads"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a fine-tuned text classifier directory")
    parser.add_argument("--data", required=True, help="a Parquet file of one shard (text, label)")
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()

    import ray

    from cluster.data.shards import plan_shards
    from cluster.models.resolve import resolve_model
    from cluster.specs.workloads import DataSpec, EvaluateSpec
    from cluster.stats.analyses import Analyses

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    model = resolve_model(opts.model)
    spec = EvaluateSpec(model=opts.model, data=DataSpec(path=opts.data))
    _, shards = plan_shards(spec.data)
    call = (asdict(shards[0]), spec, spec.data, Analyses.for_spec(spec, len(model.labels)))
    new = ray.remote(ProbedActor).options(num_cpus=0)

    def fresh_actor():
        actor = new.remote(model.source, model.labels, spec, 0.0, 2)
        ray.get(actor.ready.remote())
        return actor

    warm = fresh_actor()
    ray.get(warm.score.remote(*call))  # it has scored the shard once: from now on it is "reused"
    runs = {c: [] for c in ("reused", "fresh", "explainer", "threads1")}
    for r in range(opts.repeats):
        runs["reused"].append(timed_score(warm, call))
        actor = fresh_actor()
        runs["fresh"].append(timed_score(actor, call))
        ray.kill(actor)
        explainer = ray.remote(SecondLoad).options(num_cpus=0).remote(str(model.path))
        runs["explainer"].append(timed_score(warm, call))
        ray.kill(explainer)
        ray.get(warm.probe.remote(1))
        runs["threads1"].append(timed_score(warm, call))
        ray.get(warm.probe.remote(2))
        print(f"repeat {r + 1}: " + json.dumps({c: v[-1] for c, v in runs.items()}), flush=True)
    base = statistics.median(x["wall_s"] for x in runs["reused"])
    print(f"\n{'condition':>10}  wall_s  cpu_s  threads  vs reused (median of {opts.repeats})")
    for c, v in runs.items():
        wall = statistics.median(x["wall_s"] for x in v)
        cpu = statistics.median(x["cpu_s"] for x in v)
        print(f"{c:>10}  {wall:6.2f}  {cpu:5.2f}  {v[-1]['threads']:>7}  {wall / base:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    ray.shutdown()


if __name__ == "__main__":
    main()
