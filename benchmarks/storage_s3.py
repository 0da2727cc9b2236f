"""`evalctl evaluate` with data and artifacts on a local S3 endpoint vs on local disk, alternating.

    python benchmarks/storage_s3.py [--repeats 3] [--model DIR]

The 3,725-row test split of the sample corpus, the same model (by default the bundled
MiniLM with a seeded 3-class head: real-sized compute; its scores mean nothing), the
same command, run as a subprocess each time (the whole command is timed: start-up, Ray,
scan, inference, artifacts, registry):

- local: ``--data DIR/test.parquet``, artifacts under EVALCLUSTER_HOME (the default);
- S3:    ``--data s3://evalcluster/bench/test.parquet`` and
         ``EVALCLUSTER_ARTIFACTS=s3://evalcluster/bench/team`` on moto's S3 server on
         127.0.0.1 (tests/s3.py: the test suite's endpoint, authentication on), started by
         this script in its own process.

Runs alternate (local, S3, local, S3, ...) so both see the same machine load; the ratio
is median S3 / median local (target: within 1.2x). The model stays a local directory in
both: loading it is the same work either way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 1.2
LABELS = ["negative", "neutral", "positive"]


def prepare(tmp: Path, model: str | None) -> tuple[Path, Path]:
    """(test split, model directory) on local disk."""
    from cluster.data.corpus import sample_splits
    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import load_classifier, save_model_dir

    sample_splits(tmp / "data", seed=0)
    if model:
        return tmp / "data" / "test.parquet", Path(model)
    m, tok, _ = load_classifier(base_model_dir(), labels=LABELS, seed=0)
    return tmp / "data" / "test.parquet", save_model_dir(m, tok, tmp / "model", {"base_model": "base"})


def evaluate(model: Path, data: str, env: dict) -> float:
    """Seconds for one `evalctl evaluate` (fails loudly if the command fails)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "evaluate", "--model", str(model), "--data", data],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed ({data}):\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (local, S3)")
    parser.add_argument("--model", help="a model directory (default: base + a seeded head)")
    args = parser.parse_args()

    from tests.s3 import S3Server

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp, S3Server() as s3:
        tmp = Path(tmp)
        data, model = prepare(tmp, args.model)
        uri = s3.upload(data, "bench/test.parquet")
        base = {"HF_HUB_OFFLINE": "1", "EVALCLUSTER_DB": "", "EVALCLUSTER_DB_FILE": ""}
        local_env = {**base, "EVALCLUSTER_HOME": str(tmp / "home-local"), "EVALCLUSTER_ARTIFACTS": ""}
        s3_env = {
            **base,
            **s3.env,
            "EVALCLUSTER_HOME": str(tmp / "home-s3"),
            "EVALCLUSTER_ARTIFACTS": f"s3://{s3.bucket}/bench/team",
        }
        local, remote = [], []
        for i in range(args.repeats):
            local.append(evaluate(model, str(data), local_env))
            remote.append(evaluate(model, uri, s3_env))
            print(f"pair {i + 1}: local {local[-1]:.1f} s, S3 {remote[-1]:.1f} s", flush=True)
        times = {"local disk": local, "S3 (moto on 127.0.0.1)": remote}
        runs = len(s3.keys("bench/team/runs/"))
    report(times, args.repeats, runs)


def report(times: dict[str, list[float]], repeats: int, s3_objects: int) -> None:
    print(f"\n{os.cpu_count()} CPUs, {repeats} alternating pairs, whole `evalctl evaluate` on 3,725 rows\n")
    print("| data + artifacts | runs (s) | median (s) |")
    print("|---|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in values)} | {statistics.median(values):.1f} |")
    local, s3 = (statistics.median(v) for v in times.values())
    ratio = s3 / local
    print(
        f"\nS3 / local = {ratio:.2f}x (target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'});"
        f" {s3_objects} objects written under the S3 runs/ prefix"
    )


if __name__ == "__main__":
    main()
