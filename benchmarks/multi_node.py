"""Evaluation across nodes: the cost of spreading over raylets, and of losing a node halfway.

    python benchmarks/multi_node.py [--model best] [--rounds 2] [--rows-per-shard 256] [--rows N]

On the 3,725 rows of the sample test split (``--rows``: its first N, for a quick check), with
the same model and the same shards, each configuration is a fresh multi-node cluster on this
machine (tests/mn_cluster.py: token auth, 127.0.0.1), joined by this process, which runs
`run_evaluate` (the driver of `evalctl evaluate`):

  A  1 node with 2 CPUs                    (2 actors of 1 CPU, one raylet)
  B  2 nodes with 1 CPU each                (2 actors of 1 CPU, one per raylet)
  C  as B, the worker node SIGKILLed once half the rows are written (part files' footers), and a
     replacement 1-CPU node added at once (what an autoscaler does): Ray restarts the lost model
     actor there and Ray Data retries its blocks

Printed: rows/s of A and B (whole pipeline: actors' start-up and model loading included;
and steady, from the first model loaded), B/A (target >= 0.9), and the wall time of C
against B (target <= 1.6), each round side by side, with the machine's load average.
Without --model, MiniLM-L6 (`base`) gets a random 3-class head: throughput does not
depend on the head's weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def classifier(model: str | None, tmp: Path) -> str:
    """The model to evaluate: ``model`` as given, else base MiniLM with a random 3-class head."""
    if model:
        return model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cluster.data.corpus import LABELS
    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import save_model_dir

    base = base_model_dir()
    m = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)}
    )
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    return str(save_model_dir(m, tok, tmp / "minilm-3class", {"base_model": "base"}))


class KillHalfway(threading.Thread):
    """Kills ``node`` once ``half`` rows are written under ``out/predictions`` (counted from the part
    files' footers), then adds a replacement node; the driver keeps going meanwhile."""

    def __init__(self, cluster, node, half: int, out: Path):
        super().__init__(daemon=True)
        self.cluster, self.node, self.half, self.out = cluster, node, half, out
        self.fired, self.stop = None, threading.Event()

    def written(self) -> int:
        import pyarrow.parquet as pq

        rows = 0
        for f in (self.out / "predictions").glob("*.parquet"):
            try:
                rows += pq.ParquetFile(f).metadata.num_rows
            except Exception:  # noqa: BLE001 - a file still being written
                continue
        return rows

    def run(self) -> None:
        while not self.stop.wait(0.2):
            if self.written() >= self.half:
                self.fired = time.perf_counter()
                self.cluster.kill(self.node)
                self.cluster.add_worker(cpus=1)
                return


def run_config(name: str, model: str, data: Path, rows_per_shard: int, rows: int) -> dict:
    import ray

    from cluster.evaluation.run import run_evaluate
    from cluster.specs.workloads import DataSpec, EvaluateSpec
    from tests.mn_cluster import LocalCluster

    cluster = LocalCluster(head_cpus=2 if name == "A" else 1, dashboard=False)
    try:
        worker = cluster.add_worker(cpus=1) if name in ("B", "C") else None
        ray.init(address=cluster.address, log_to_driver=False)
        out = Path(tempfile.mkdtemp(prefix=f"mn-{name}-"))
        killer = KillHalfway(cluster, worker, rows // 2, out) if name == "C" else None
        spec = EvaluateSpec(
            model=model,
            data=DataSpec(path=str(data)),
            rows_per_shard=rows_per_shard,
            sort_rows=rows_per_shard,
            bootstrap=200,
            limit=rows,
            out=str(out),
        )
        t0 = time.perf_counter()
        if killer:
            killer.start()
        metrics = run_evaluate(spec).metrics
        wall = time.perf_counter() - t0
        if killer:
            killer.stop.set()
        nodes = len({w["node"] for w in metrics["workers"]})
        return {
            "config": name,
            "wall_s": wall,
            "rows_per_s": metrics["timings"]["rows_per_s"],
            "steady_rows_per_s": metrics["timings"].get("steady_rows_per_s", float("nan")),
            "nodes": nodes,
            "lost_actors": len(metrics["recovery"]["restarted_actors"]),
            "killed_at_s": (killer.fired - t0) if killer and killer.fired else None,
            "f1_macro": metrics["f1_macro"],
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows-per-shard", type=int, default=256)
    ap.add_argument("--rows", type=int, default=3725, help="the test split's first N rows (all: 3,725)")
    args = ap.parse_args()
    os.environ["EVALCLUSTER_HOME"] = tempfile.mkdtemp(prefix="evalcluster-mn-bench-")
    from cluster.data.corpus import sample_splits

    tmp = Path(tempfile.mkdtemp(prefix="mn-bench-"))
    sample_splits(tmp / "sample", seed=0)
    data, model = tmp / "sample" / "test.parquet", classifier(args.model, tmp)
    results = []
    for r in range(args.rounds):
        for name in ("A", "B", "C"):
            res = run_config(name, model, data, args.rows_per_shard, args.rows)
            res.update(round=r + 1, load=os.getloadavg()[0])
            results.append(res)
            print(_line(res), flush=True)
    _summary(results)


def _line(r: dict) -> str:
    killed = f", killed at {r['killed_at_s']:.1f} s" if r["killed_at_s"] is not None else ""
    return (
        f"round {r['round']} {r['config']}: wall {r['wall_s']:.1f} s, {r['rows_per_s']:.0f} rows/s "
        f"(steady {r['steady_rows_per_s']:.0f}), {r['nodes']} node(s), {r['lost_actors']} actor(s) restarted"
        f"{killed}; f1 {r['f1_macro']:.4f}; load {r['load']:.1f}"
    )


def _summary(results: list[dict]) -> None:
    by = {(r["round"], r["config"]): r for r in results}
    for rnd in sorted({r["round"] for r in results}):
        a, b, c = (by[(rnd, k)] for k in "ABC")
        print(
            f"round {rnd}: B/A rows/s {b['rows_per_s'] / a['rows_per_s']:.2f} "
            f"(steady {b['steady_rows_per_s'] / a['steady_rows_per_s']:.2f}); "
            f"C/B wall {c['wall_s'] / b['wall_s']:.2f}; same f1 in C as B: {c['f1_macro'] == b['f1_macro']}"
        )


if __name__ == "__main__":
    main()
