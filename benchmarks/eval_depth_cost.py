"""The extra cost of threshold metrics and --auto-slices over a plain `evalctl evaluate`.

    python benchmarks/eval_depth_cost.py [--model base] [--rows 37243] [--rounds 1]

The input is the sample test split concatenated 10 times, cut to ``--rows`` rows
(37,243 by default, the size of the whole corpus). Three variants of the same
evaluation, each as its own driver process with its own embedded Ray (2 CPUs), run
in the order plain, threshold, threshold + auto-slices (and reversed in a second
round, so a change in the machine's load hits every variant alike):
  - plain: ``threshold=False`` (the metrics before issue 13)
  - threshold: the default, ROC-AUC / AP / top-2 / Brier + curves and their CIs
  - threshold + auto-slices: also ``auto_slices=True`` (min slice size 50)
All with ``mistakes=0`` (the attributions of the most confident mistakes are timed
separately, as ``attributions_s`` in metrics.json) and 1,000 bootstrap replicates.
Printed per variant: the run's wall time from spec to metrics.json minus Ray start-up
(``total_s - ray_init_s``), steady rows/s, the driver's finalize time, and the
driver process's peak RSS; then each variant's ratio to plain. The default model is
the base MiniLM encoder with a random 3-class head: the compute of a real evaluation
(the scores are meaningless, which does not matter for cost); ``--model tiny`` is the
tests' tiny random BERT, where inference costs almost nothing, so the analyses' extra
work is the largest share of the wall time it can be (an upper bound on the ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "plain": {"threshold": False},
    "threshold": {"threshold": True},
    "threshold+slices": {"threshold": True, "auto_slices": True},
}


def driver(variant: str, model: str, path: str, out: str) -> None:
    """Child mode: one evaluation in this process (embedded Ray); prints one JSON line."""
    import ray

    from cluster.evaluation.run import run_evaluate
    from cluster.specs.workloads import DataSpec, EvaluateSpec

    # An embedded Ray of our own: never join another engineer's head on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    result = run_evaluate(
        EvaluateSpec(
            model=model,
            data=DataSpec(path=path),
            out=out,
            precision="fp32",
            bootstrap=1000,
            mistakes=0,
            overwrite=True,
            **VARIANTS[variant],
        )
    )
    m = result.metrics
    print(
        json.dumps(
            {
                "variant": variant,
                "wall_s": time.perf_counter() - t0,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "n": m["n"],
                "weak_slices": len((m.get("auto_slices") or {}).get("weak", [])),
                **m["timings"],
            }
        )
    )


def run_variant(variant: str, model: str, path: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--driver", variant, model, str(path), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))
    r["pipeline_s"] = r["total_s"] - r["ray_init_s"]
    print(
        f"{variant:17s} pipeline {r['pipeline_s']:7.1f} s  steady {r['steady_rows_per_s']:6.1f} rows/s  "
        f"finalize {r['finalize_s']:5.2f} s  driver peak RSS {r['peak_rss_mib']:6.0f} MiB  "
        f"(n {r['n']}, weak slices {r['weak_slices']})",
        flush=True,
    )
    return r


def tiny_model(tmp: Path) -> str:
    """The tests' tiny random BERT (2 layers, hidden 32, MiniLM's tokenizer): inference is nearly
    free, so the extra work of the analyses is the largest possible share of the wall time."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from cluster.data.corpus import LABELS
    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import save_model_dir

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3,
        id2label=dict(enumerate(LABELS)), label2id={lab: i for i, lab in enumerate(LABELS)},
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    model = BertForSequenceClassification(config).eval()
    return str(save_model_dir(model, tok, tmp / "tiny", {"base_model": "tiny-random-bert"}))


def headed_model(ref: str, tmp: Path) -> str:
    """A classifier to evaluate: ``ref`` itself, or a bare encoder with a random 3-class head."""
    from cluster.models.resolve import resolve_model

    if ref == "tiny":
        return tiny_model(tmp)

    model = resolve_model(ref)
    if model.labels is not None:
        return str(model.path)
    from cluster.data.corpus import LABELS
    from cluster.models.text import load_classifier, save_model_dir

    clf, tok, _ = load_classifier(model.path, labels=LABELS)
    return str(save_model_dir(clf, tok, tmp / "headed", {"base_model": model.model_id}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="base", help="MODEL, or tiny (a tiny random BERT)")
    parser.add_argument("--rows", type=int, default=37243)
    parser.add_argument("--rounds", type=int, default=1, choices=[1, 2])
    opts = parser.parse_args()

    from cluster.data.corpus import sample_splits

    tmp = Path(tempfile.mkdtemp(prefix="evaldepth-"))
    sample_splits(tmp / "sample")
    test = pd.read_parquet(tmp / "sample" / "test.parquet")
    df = pd.concat([test] * 10, ignore_index=True).head(opts.rows)
    df.to_parquet(tmp / "x10.parquet", row_group_size=1024)
    model = headed_model(opts.model, tmp)
    print(f"{len(df)} rows (test split x10, first {opts.rows}); model {opts.model} ({model})")
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()}")
    order = list(VARIANTS) + (list(reversed(VARIANTS)) if opts.rounds == 2 else [])
    results: dict[str, list[dict]] = {}
    for i, variant in enumerate(order):
        r = run_variant(variant, model, tmp / "x10.parquet", tmp / f"o{i}")
        results.setdefault(variant, []).append(r)
    mean = {v: sum(r["pipeline_s"] for r in rs) / len(rs) for v, rs in results.items()}
    rss = {v: max(r["peak_rss_mib"] for r in rs) for v, rs in results.items()}
    for v in VARIANTS:
        print(
            f"{v:17s} wall {mean[v] / mean['plain']:.3f}x plain ({(mean[v] / mean['plain'] - 1):+.1%}); "
            f"driver peak RSS {rss[v]:.0f} MiB ({rss[v] - rss['plain']:+.0f} MiB)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--driver":
        driver(*sys.argv[2:6])
    else:
        main()
