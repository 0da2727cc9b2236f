"""The dashboard on a big record: page latency with 100,000 runs in PostgreSQL (issue 27's target:
the runs page and the leaderboard within 300 ms at the median).

    python benchmarks/ui_load.py [--runs 100000] [--requests 50] [--backend postgresql|sqlite]
                                 [--out benchmarks/results/ui_load.json]

A throwaway PostgreSQL 15 (tests/pg.py, on 127.0.0.1, fsync off as in the tests) gets a
registry at the current schema revision, then ``--runs`` runs in bulk (executemany, 5,000 rows
per statement): the rows and score rows ``Registry.start_run``/``finish_run`` write, each
evaluation with the headline metrics of a real 600-row evaluation (about 2.5 KB of JSON:
scores, CIs, timings, slice scores), its score fields varied per run. The mix: 80% evaluations,
5% robustness, 8% sweeps, 3% drift, 2% pretraining, 2% gates; 90% finished, 8% failed, 2%
running; 40 owners, 500 models; 50 datasets of Zipf-like sizes (the largest holds about a fifth
of the runs); a year of start times. Then ANALYZE, `evalctl ui` in its own process, and an HTTP
client (httpx, one keep-alive connection) asks each page ``--requests`` times after 5 warm-up
requests, one request at a time; the median and 90th percentile of the wall time per request
are printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_MS = 300
KINDS = [("evaluate", 80), ("robustness", 5), ("sweep", 8), ("drift", 3), ("pretrain", 2), ("gate", 2)]
STATUSES = [("finished", 90), ("failed", 8), ("running", 2)]
BATCH = 5000


def headline() -> dict:
    """The registry's headline of a real 600-row evaluation with slices (cluster/evaluation)."""
    import numpy as np

    from cluster.evaluation.sections import headline_extras
    from cluster.stats.metrics import METRICS, batch_stats, finalize, slice_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    probs = rng.dirichlet(np.ones(3), 600)
    probs[np.arange(600), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    stats = batch_stats(y, probs, bootstrap=200, slices=np.array(["a", "b", "c"])[np.arange(600) % 3])
    m = finalize(stats, ["negative", "neutral", "positive"])
    m["slices"] = slice_metrics(stats, ["negative", "neutral", "positive"])
    keep = ("n", "labels", *METRICS, "ci95")
    timings = {"scan_s": 0.41, "ray_init_s": 2.3, "pipeline_s": 7.9, "finalize_s": 0.3, "total_s": 11.2}
    return {
        **{k: m[k] for k in keep if k in m},
        "precision_mode": "fp32",
        "timings": timings,
        **headline_extras(m),
    }


def rows(n: int, seed: int = 0):
    """(run row, score rows) batches as the registry writes them."""
    from cluster.registry.scores import SCORED_KINDS, score_rows

    rnd = random.Random(seed)
    base = headline()
    datasets = [f"{i:016x}" for i in range(50)]
    weights = [1 / (i + 1) for i in range(50)]
    kinds, kw = zip(*KINDS, strict=True)
    statuses, sw = zip(*STATUSES, strict=True)
    start = 1_735_689_600  # 2025-01-01
    runs, scores = [], []
    for i in range(n):
        kind = rnd.choices(kinds, kw)[0]
        status = rnd.choices(statuses, sw)[0]
        created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(start + i * 31_536_000 // n))
        fp = rnd.choices(datasets, weights)[0]
        run_id = f"{kind}-{created[:10].replace('-', '')}-{i:07d}"
        metrics = None
        if status == "finished":
            shift = rnd.uniform(-0.2, 0.2)
            metrics = {**base, **{k: v + shift for k, v in base.items() if isinstance(v, float)}}
            if kind == "robustness":
                per = {
                    "delta": {"f1_macro": -0.03},
                    "delta_ci95": {"f1_macro": [-0.05, -0.01]},
                    "flip_rate": 0.05,
                }
                metrics["robustness"] = {
                    "rate": 0.1,
                    "seed": 0,
                    "perturbations": {"typo": {**per, "f1_macro": 0.6}},
                }
        runs.append(
            {"id": run_id, "kind": kind, "name": None, "owner": f"owner{rnd.randrange(40)}",
             "created_at": created, "finished_at": None if status == "running" else created,
             "status": status, "spec": json.dumps({"model": "best", "data": {"path": f"data/{fp}.parquet"}}),
             "git_commit": "0" * 40, "git_dirty": 0, "versions": json.dumps({"ray": "2.60.0"}),
             "dataset_path": f"data/{fp}.parquet", "dataset_fingerprint": fp,
             "model_id": f"m-{rnd.randrange(500):05d}", "metrics": json.dumps(metrics) if metrics else None,
             "artifact_path": f"/artifacts/runs/{run_id}", "error": "killed" if status == "failed" else None,
             "host": "node-1", "pid": 1, "heartbeat_at": created}
        )  # fmt: skip
        if metrics and kind in SCORED_KINDS:
            fixed = {"run_id": run_id, "kind": kind, "dataset_fingerprint": fp, "created_at": created}
            scores += [{**fixed, **s} for s in score_rows(metrics)]
        if len(runs) == BATCH:
            yield runs, scores
            runs, scores = [], []
    if runs:
        yield runs, scores


def load(n: int) -> tuple[str, int]:
    """Fill the configured registry; returns the biggest dataset's fingerprint and its ranked runs."""
    import sqlalchemy as sa

    from cluster.registry.db.schema import runs, scores
    from cluster.registry.record import Registry

    reg = Registry()
    db = reg.database
    t0, done = time.perf_counter(), 0
    for run_rows, score_rows_ in rows(n):
        with db.write() as conn:
            conn.execute(sa.insert(runs), run_rows)
            if score_rows_:
                conn.execute(sa.insert(scores), score_rows_)
        done += len(run_rows)
        print(f"  {done:,} runs loaded ({time.perf_counter() - t0:.0f} s)", flush=True)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))
        biggest, ranked = conn.execute(
            sa.text(
                "SELECT dataset_fingerprint, count(*) FROM scores WHERE metric = 'f1_macro'"
                " AND subset = '' AND kind = 'evaluate' GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
            )
        ).one()
    reg.close()
    return biggest, ranked


def serve(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ui", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    import httpx

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the dashboard did not start: {proc.stdout.read()}")
        time.sleep(0.2)


def measure(base: str, pages: dict[str, str], requests: int) -> dict:
    import httpx

    out = {}
    with httpx.Client(base_url=base, timeout=120) as http:
        for name, path in pages.items():
            for _ in range(5):
                assert http.get(path).status_code == 200, path
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                r = http.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (path, r.status_code)
            times.sort()
            out[name] = {"path": path, "median_ms": statistics.median(times),
                         "p90_ms": times[int(0.9 * (len(times) - 1))], "bytes": len(r.content)}  # fmt: skip
            print(
                f"  {name:<34} median {out[name]['median_ms']:7.1f} ms  p90 {out[name]['p90_ms']:7.1f} ms",
                flush=True,
            )
    return out


def pages(base: str, biggest: str, ranked: int) -> dict[str, str]:
    """The pages measured; deep pages are reached the way a user reaches them (cursors, offsets)."""
    import re

    import httpx

    deep = "/runs"
    for _ in range(20):  # 20 pages down the listing, following "older"
        found = re.search(r'href="(/runs\?before=[^"]+)"', httpx.get(base + deep, timeout=60).text)
        deep = found.group(1).replace("&amp;", "&")
    run = re.search(
        r'href="/runs/(evaluate-[^"]+)"', httpx.get(f"{base}/runs?kind=evaluate", timeout=60).text
    ).group(1)
    return {
        "runs (first page)": "/runs",
        "runs, 21st page (keyset)": deep,
        "runs kind+owner+status filter": "/runs?kind=evaluate&owner=owner7&status=finished",
        "runs date range": "/runs?since=2025-06-01&until=2025-06-30",
        "leaderboard: datasets": "/leaderboard",
        "leaderboard: biggest dataset": f"/leaderboard/{biggest}",
        "leaderboard: biggest, middle page": f"/leaderboard/{biggest}?offset={ranked // 100 * 50}",
        "leaderboard: biggest, a slice": f"/leaderboard/{biggest}?subset=slice:a",
        "a run": f"/runs/{run}",
        "models": "/models",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page")
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ui_load.json")
    args = parser.parse_args()
    from tests.pg import PostgresServer, free_port

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        os.environ["EVALCLUSTER_HOME"] = tmp
        for var in (
            "EVALCLUSTER_DB",
            "EVALCLUSTER_DB_FILE",
            "EVALCLUSTER_UI_TOKEN",
            "EVALCLUSTER_UI_WRITE_TOKEN",
        ):
            os.environ.pop(var, None)
        pg = PostgresServer().start() if args.backend == "postgresql" else None
        try:
            if pg:
                os.environ["EVALCLUSTER_DB"] = pg.url(pg.create_database())
            print(f"loading {args.runs:,} runs into {args.backend}:", flush=True)
            biggest, ranked = load(args.runs)
            print(f"  the biggest dataset has {ranked:,} ranked evaluations", flush=True)
            port = free_port()
            proc = serve(port)
            try:
                base = f"http://127.0.0.1:{port}"
                results = measure(base, pages(base, biggest, ranked), args.requests)
            finally:
                proc.terminate()
                proc.wait(30)
        finally:
            if pg:
                pg.stop()
    met = {
        k: v["median_ms"] <= TARGET_MS for k, v in results.items() if k.startswith(("runs", "leaderboard"))
    }
    summary = {"runs": args.runs, "backend": args.backend, "requests": args.requests, "pages": results,
               "target_ms": TARGET_MS, "met": all(met.values()), "load_average": os.getloadavg()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(
        f"runs and leaderboard pages within {TARGET_MS} ms at the median: {'yes' if summary['met'] else 'NO'}"
    )


if __name__ == "__main__":
    main()
