"""Online serving load test: Serve with batching vs without vs a plain FastAPI app, plus offline.

    python benchmarks/serve_load.py [--model best] [--requests 2000]

Closed-loop async HTTP clients (httpx) at concurrency 1, 8 and 32, one text per
request (tweets of the sample test split), against:
  (a) the evalcluster Serve deployment with dynamic batching (max_batch_size 32)
  (b) the same deployment with batching off (max_batch_size 1)
  (c) a plain FastAPI + uvicorn app calling the model once per request
and the offline throughput of the same model in the same run (predict_proba,
length-sorted batches of 64, in this process). Prints p50/p95/p99 latency,
requests/s and errors, and the ratios the issue targets.
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

PLAIN_APP = """
import os, sys, torch
from fastapi import FastAPI
from pydantic import BaseModel
sys.path.insert(0, {root!r})
from cluster.modeling import load_classifier, predict_proba
torch.set_num_threads(os.cpu_count())
model, tok, labels = load_classifier({path!r})
app = FastAPI()
class Req(BaseModel):
    texts: list[str]
@app.post("/v1/predict")
def predict(req: Req):
    probs = predict_proba(model, tok, req.texts, precision={precision!r})
    return {{"predictions": [{{"label": labels[int(p.argmax())], "score": float(p.max())}} for p in probs]}}
@app.get("/healthz")
def health():
    return {{"status": "ok"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def closed_loop(url: str, texts: list[str], concurrency: int, total: int) -> dict:
    """``concurrency`` clients, each sending its next request when the last one returns."""
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
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": errors,
    }


def measure(name: str, url: str, texts: list[str], total: int, results: dict) -> None:
    for conc in (1, 8, 32):
        asyncio.run(closed_loop(url, texts, conc, min(64, total)))  # warm-up
        r = asyncio.run(closed_loop(url, texts, conc, total))
        results[(name, conc)] = r
        print(
            f"{name:<22} c={conc:<3} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f}  p95 {r['p95_ms']:7.1f}  "
            f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}",
            flush=True,
        )


def serve_runs(
    path: Path, model_id: str, texts: list[str], total: int, results: dict, precision: str
) -> None:
    import ray
    from ray import serve

    from cluster.config import ServeSpec, to_dict
    from serve.app import build_app

    port = free_port()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    for name, batch in (("(a) serve, batching", 32), ("(b) serve, no batching", 1)):
        spec = ServeSpec(
            model=str(path),
            max_batch_size=batch,
            batch_wait_ms=5,
            precision=precision,
            cpus_per_replica=float(os.cpu_count()),
        )
        serve.run(
            build_app({**to_dict(spec), "path": str(path), "model_id": model_id}),
            name="evalcluster",
            route_prefix="/",
        )
        measure(name, url, texts, total, results)
    serve.shutdown()
    ray.shutdown()


def plain_run(path: Path, texts: list[str], total: int, results: dict, precision: str) -> None:
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
        for _ in range(120):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        measure("(c) plain FastAPI", url, texts, total, results)
    finally:
        proc.terminate()
        proc.wait()


def offline_rate(path: Path, texts: list[str], precision: str) -> float:
    import torch

    from cluster.modeling import load_classifier, predict_proba

    torch.set_num_threads(os.cpu_count())
    model, tok, _ = load_classifier(path)
    predict_proba(model, tok, texts[:64], precision=precision)
    t0 = time.perf_counter()
    predict_proba(model, tok, texts, precision=precision, batch_size=64)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="best")
    parser.add_argument("--requests", type=int, default=2000)
    opts = parser.parse_args()

    from cluster.data import LABELS, sample_splits
    from cluster.modeling import cpu_has_native_bf16, load_classifier, resolve_model, save_model_dir

    tmp = Path(tempfile.mkdtemp(prefix="servebench-"))
    sample_splits(tmp / "sample")
    texts = pd.read_parquet(tmp / "sample" / "test.parquet")["text"].tolist()
    ref = resolve_model(opts.model)
    path = ref.path
    if ref.labels is None:
        model, tok, _ = load_classifier(ref.path, labels=LABELS)
        path = save_model_dir(model, tok, tmp / "headed", {"base_model": ref.model_id})
    precision = "bf16" if cpu_has_native_bf16() else "fp32"  # what `auto` picks on this machine
    print(
        f"model {ref.model_id}; precision {precision}; {opts.requests} requests per run; "
        f"{os.cpu_count()} CPUs"
    )
    results: dict = {}
    offline = offline_rate(path, texts, precision)
    print(f"offline predict_proba (batches of 64): {offline:.1f} rows/s", flush=True)
    serve_runs(path, ref.model_id, texts, opts.requests, results, precision)
    plain_run(path, texts, opts.requests, results, precision)
    a, b, c = (
        results[(k, 32)]["rps"]
        for k in ("(a) serve, batching", "(b) serve, no batching", "(c) plain FastAPI")
    )
    errors = sum(r["errors"] for r in results.values())
    print(
        f"at concurrency 32: (a)/(b) = {a / b:.2f}x, (a)/(c) = {a / c:.2f}x, "
        f"(a)/offline = {a / offline:.0%}; "
        f"errors in all runs: {errors}"
    )
    print(json.dumps({"offline_rows_per_s": offline, **{f"{k[0]} c={k[1]}": v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
