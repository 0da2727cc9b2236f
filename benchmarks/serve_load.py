"""Online serving load test: Serve with batching vs without vs a plain FastAPI app, plus offline.

    python benchmarks/serve_load.py [--model best] [--requests 2000] [--concurrency 1 8 32]

Closed-loop async HTTP clients (httpx) at concurrency 1, 8 and 32, one text per
request (tweets of the sample test split, in order), against:
  (a) the evalcluster Serve deployment with dynamic batching, as deployed by default
      (max_batch_size 32; a batch waits up to 50 ms to fill while the previous one
      held more than one text, and not at all after a lone request)
  (b) the same deployment with batching off (max_batch_size 1)
  (c) a plain FastAPI + uvicorn app calling the model once per request (what a user
      would write: a sync endpoint, so FastAPI runs requests in its thread pool)
and, in the same run, the offline throughput of the same model at the same precision:
  - predict_proba in this process, length-sorted batches of 64, torch on all cores
  - `evalctl evaluate` (jobs.evaluate.run_evaluate on Ray Data, bootstrap off) in a
    child process: steady-state rows/s (model loading and Ray start-up excluded)
and (d) Serve with a handler that runs no model: the ceiling of Serve's HTTP path
(client, proxy, replica, all on the same cores). Prints p50/p95/p99 latency,
requests/s and errors per run, then the ratios the issue targets at concurrency 32:
(a)/(b) >= 3, (a)/(c) >= 3, (a)/offline >= 50%, no errors.

The model should be fine-tuned-sized: `--model base` (the default when `best` does not
resolve) puts a fresh 3-class head on the real pretrained MiniLM; speed does not care
whether the head is trained.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

A, B, C = "(a) serve, batching", "(b) serve, no batching", "(c) plain FastAPI"
D = "(d) serve, no model"  # Serve's own ceiling here: the same HTTP path, a handler that does nothing

PLAIN_APP = """
import os, sys, torch
from fastapi import FastAPI
from pydantic import BaseModel
sys.path.insert(0, {root!r})
from cluster.models.text import load_classifier, predict_proba
torch.set_num_threads(os.cpu_count())
model, tok, labels = load_classifier({path!r})
app = FastAPI()
class Req(BaseModel):
    texts: list[str]
@app.post("/v1/predict")
def predict(req: Req):
    probs = predict_proba(model, tok, req.texts, precision={precision!r})
    return {{"predictions": [{{"label": labels[int(p.argmax())], "score": float(p.max()),
             "probs": dict(zip(labels, map(float, p)))}} for p in probs]}}
@app.get("/healthz")
def health():
    return {{"status": "ok"}}
"""

EVALUATE_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from cluster.specs.workloads import DataSpec, EvaluateSpec
from cluster.evaluation.run import run_evaluate
r = run_evaluate(EvaluateSpec(model={path!r}, data=DataSpec(path={data!r}), out={out!r},
                              precision={precision!r}, bootstrap=0, overwrite=True))
print("RESULT " + json.dumps(r.metrics["timings"]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the load generator


async def closed_loop(url: str, texts: list[str], concurrency: int, total: int) -> dict:
    """``concurrency`` clients, each sending its next request when its last one returns."""
    import httpx

    latencies, errors, sent = [], 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker():
            nonlocal errors, sent
            while sent < total:
                text = texts[sent % len(texts)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post(f"{url}/v1/predict", json={"texts": [text]})
                    ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000  # ms
    return {
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
    }


def measure(name: str, url: str, texts: list[str], opts, results: dict) -> None:
    """One warm-up then one measured closed loop per concurrency level."""
    for conc in opts.concurrency:
        asyncio.run(closed_loop(url, texts, conc, min(4 * conc + 32, opts.requests)))  # warm-up
        r = asyncio.run(closed_loop(url, texts, conc, opts.requests))
        results[(name, conc)] = r
        print(
            f"{name:<24} c={conc:<3} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f}  p95 {r['p95_ms']:7.1f}  "
            f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}/{r['requests']}",
            flush=True,
        )


# ------------------------------------------------------------------ the three servers


def serve_runs(path: Path, model_id: str, texts: list[str], opts, results: dict, precision: str) -> None:
    """(a) and (b): the evalcluster application on an embedded Ray, all cores to the replicas."""
    import ray
    from ray import serve

    from cluster.specs.serve import ServeSpec
    from serve.app import build_app

    port = free_port()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    cpus = os.cpu_count() / opts.replicas
    for name, batch in ((A, opts.max_batch_size), (B, 1)):
        spec = ServeSpec(
            model=str(path),
            replicas=opts.replicas,
            max_batch_size=batch,
            batch_wait_ms=opts.batch_wait_ms,
            max_length=128,
            precision=precision,
            cpus_per_replica=cpus,
        )
        serve.run(
            build_app({**spec.model_dump(mode="json"), "path": str(path), "model_id": model_id}),
            name="evalcluster",
            route_prefix="/",
        )
        measure(name, url, texts, opts, results)
    serve.run(noop_app(), name="evalcluster", route_prefix="/")
    measure(D, url, texts, opts, results)
    serve.shutdown()
    ray.shutdown()


def noop_app():
    """A FastAPI ingress deployment that answers /v1/predict without a model."""
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(max_ongoing_requests=64)
    @serve.ingress(api)
    class Noop:
        @api.post("/v1/predict")
        async def predict(self, body: dict) -> dict:
            return {"predictions": [{"label": "none", "score": 1.0, "probs": {}}]}

    return Noop.bind()


def plain_run(path: Path, texts: list[str], opts, results: dict, precision: str) -> None:
    """(c): uvicorn in a child process serving a FastAPI app that calls the model per request."""
    import httpx

    port = free_port()
    app_dir = Path(tempfile.mkdtemp(prefix="plainapp-"))
    (app_dir / "plain_app.py").write_text(
        PLAIN_APP.format(root=str(ROOT), path=str(path), precision=precision)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "plain_app:app", "--port", str(port), "--log-level", "warning"],
        cwd=app_dir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        measure(C, url, texts, opts, results)
    finally:
        proc.terminate()
        proc.wait()


# ------------------------------------------------------------------ offline


def offline_rate(path: Path, texts: list[str], precision: str) -> float:
    """Rows/s of predict_proba in this process (batches of 64, length-sorted), after a warm-up."""
    import torch

    from cluster.models.text import load_classifier, predict_proba

    torch.set_num_threads(os.cpu_count())
    model, tok, _ = load_classifier(path)
    predict_proba(model, tok, texts[:64], precision=precision)
    t0 = time.perf_counter()
    predict_proba(model, tok, texts, precision=precision, batch_size=64)
    return len(texts) / (time.perf_counter() - t0)


def evaluate_rate(path: Path, data: Path, tmp: Path, precision: str) -> dict | None:
    """`evalctl evaluate`'s timings on the same rows, in a child process with its own Ray and registry."""
    code = EVALUATE_CHILD.format(
        root=str(ROOT), path=str(path), data=str(data), out=str(tmp / "eval"), precision=precision
    )
    env = {**os.environ, "EVALCLUSTER_HOME": str(tmp / "home"), "RAY_ADDRESS": "local"}  # never a shared head
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(f"evaluate failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return None
    return json.loads(line[len("RESULT ") :])


# ------------------------------------------------------------------ main


def prepare_model(name: str, tmp: Path) -> tuple[Path, str]:
    """A classifier directory for ``name``; a bare encoder gets a fresh 3-class head."""
    from cluster.data.corpus import LABELS
    from cluster.errors import UserError
    from cluster.models.resolve import resolve_model
    from cluster.models.text import load_classifier, save_model_dir

    try:
        ref = resolve_model(name)
    except UserError as exc:
        print(f"{exc}\n-> using `base` with a fresh classification head instead")
        ref = resolve_model("base")
    if ref.labels is not None:
        return ref.path, ref.model_id
    model, tok, _ = load_classifier(ref.path, labels=LABELS)
    return save_model_dir(model, tok, tmp / "headed", {"base_model": ref.model_id}), f"{ref.model_id}+head"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="best", help="MODEL (default best, else base + a fresh head)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per run (>= 2000 for figures)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--replicas", type=int, default=1, help="replicas of (a) and (b); CPUs split evenly")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=50.0)
    parser.add_argument("--precision", default="auto", help="auto = bf16 where native, as in evaluation")
    parser.add_argument("--skip-evaluate", action="store_true", help="skip the Ray Data evaluation run")
    opts = parser.parse_args()

    from cluster.data.corpus import sample_splits
    from cluster.models.device import resolve_precision

    tmp = Path(tempfile.mkdtemp(prefix="servebench-"))
    sample_splits(tmp / "sample")
    data = tmp / "sample" / "test.parquet"
    texts = pd.read_parquet(data)["text"].tolist()
    path, model_id = prepare_model(opts.model, tmp)
    precision = resolve_precision(opts.precision, "cpu")
    print(
        f"model {model_id}; precision {precision}; {len(texts)} test texts; {opts.requests} requests "
        f"per run; concurrency {opts.concurrency}; {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    results: dict = {}
    offline = offline_rate(path, texts, precision)
    print(f"offline predict_proba, batches of 64 (in-process): {offline:7.1f} rows/s", flush=True)
    evaluation = None if opts.skip_evaluate else evaluate_rate(path, data, tmp, precision)
    if evaluation:
        print(
            f"offline `evalctl evaluate` (Ray Data): steady {evaluation.get('steady_rows_per_s', 0):7.1f} "
            f"rows/s, whole pipeline {evaluation['rows_per_s']:.1f} rows/s",
            flush=True,
        )
    serve_runs(path, model_id, texts, opts, results, precision)
    plain_run(path, texts, opts, results, precision)
    report(opts, results, offline, evaluation)


def report(opts, results: dict, offline: float, evaluation: dict | None) -> None:
    top = max(opts.concurrency)
    a, b, c = (results[(k, top)]["rps"] for k in (A, B, C))
    errors = sum(r["errors"] for r in results.values())
    line = (
        f"at concurrency {top}: (a)/(b) = {a / b:.2f}x, (a)/(c) = {a / c:.2f}x, "
        f"(a)/offline predict_proba = {a / offline:.0%}, "
        f"(d) no-model ceiling/offline = {results[(D, top)]['rps'] / offline:.0%}"
    )
    if evaluation and evaluation.get("steady_rows_per_s"):
        line += f", (a)/offline evaluate = {a / evaluation['steady_rows_per_s']:.0%}"
    print(f"{line}; errors in all runs: {errors}")
    print(
        json.dumps(
            {
                "offline_predict_proba_rows_per_s": offline,
                "offline_evaluate": evaluation,
                **{f"{k[0]} c={k[1]}": v for k, v in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
