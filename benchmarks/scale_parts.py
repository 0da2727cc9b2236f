"""The pieces of benchmarks/ray_data_scale.py: its data, its tiny model, the bare rate a model actor
reaches without the pipeline, the object store's spilling, a GPU's busy fraction, and whether two
engines' runs found the same scores."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

LABELS = ["negative", "neutral", "positive"]
WORDS = (
    "flight",
    "delayed",
    "again",
    "great",
    "crew",
    "lost",
    "bag",
    "thanks",
    "service",
    "terrible",
    "on",
    "time",
    "seat",
    "upgrade",
    "cancelled",
    "gate",
    "agent",
    "rude",
    "helpful",
    "fast",
    "slow",
    "late",
    "early",
    "refund",
    "customer",
    "support",
    "never",
    "always",
    "love",
    "hate",
)
BARE_BLOCKS = 8  # blocks of 1,024 rows each actor predicts for its bare rate


def tiny_model(tmp: Path) -> str:
    """A tiny random BERT classifier (the tests' size: hidden 32, 2 layers), saved as a model dir."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import save_model_dir

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3,
        id2label=dict(enumerate(LABELS)), label2id={lab: i for i, lab in enumerate(LABELS)},
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    out = save_model_dir(
        BertForSequenceClassification(config).eval(), tok, tmp / "tiny", {"base_model": "tiny"}
    )
    return str(out)


def synthetic_rows(n: int, seed: int) -> dict:
    """``n`` tweet-like texts of 5-30 words and their labels, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 31, n)
    words = np.array(WORDS, dtype=object)[rng.integers(0, len(WORDS), int(lengths.sum()))]
    cuts = np.cumsum(lengths)[:-1]
    texts = [" ".join(w) for w in np.split(words, cuts)]
    return {"text": texts, "label": [LABELS[i] for i in rng.integers(0, 3, n)]}


def synthetic_files(uri: str, rows: int, files: int) -> str:
    """``rows`` synthetic rows as ``files`` Parquet files under ``uri`` (row groups of 10,000)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.data.storage import resolve

    fs, root = resolve(uri)
    per = -(-rows // files)
    for i in range(files):
        n = min(per, rows - i * per)
        table = pa.table(synthetic_rows(n, seed=i))
        with fs.open_output_stream(f"{root}/part-{i:03d}.parquet") as f:
            pq.write_table(table, f, row_group_size=10_000)
    return uri


def bare_rate(model: str, opts, device: str = "cpu", data=None) -> dict:
    """Rows/s one model actor reaches predicting ready blocks (tokenised, ordered, batched as the
    pipeline's CPU stage leaves them) with nothing else to do: the mean over one actor per CPU of
    the cluster, all running at once (``device`` cuda: one, on the GPU)."""
    import ray

    from cluster.evaluation.tasks import classification
    from cluster.models.resolve import resolve_model
    from cluster.specs.workloads import DataSpec, EvaluateSpec

    spec = EvaluateSpec(model=model, data=DataSpec(path="-"), batch_size=opts.batch_size, bootstrap=0)
    task = classification(spec, resolve_model(model), LABELS, spec.data)
    task.threads = 1 if device == "cpu" else None
    import pyarrow as pa

    rows = synthetic_rows(1024, seed=99)
    block = task.preprocess(pa.table({"row": pa.array(range(1024), pa.int64()), **rows}))

    @ray.remote(num_cpus=1 if device == "cpu" else 1, num_gpus=0 if device == "cpu" else 1)
    def loop() -> float:
        m = task.load(device)
        m.predict(block)  # warm-up
        t0 = time.perf_counter()
        for _ in range(BARE_BLOCKS):
            _predict_block(m, block)
        return BARE_BLOCKS * block.num_rows / (time.perf_counter() - t0)

    actors = 1 if device != "cpu" else max(1, int(ray.cluster_resources().get("CPU", 1)))
    rates = ray.get([loop.remote() for _ in range(actors)])
    return {"per_actor": float(np.mean(rates)), "actors": actors}


def _predict_block(model, block) -> None:
    from cluster.evaluation.stages import model_batches

    for idx in model_batches(block):
        model.predict(block.take(idx))


def spilled_mib() -> int:
    """MiB spilled to disk by the connected cluster's object stores so far (Ray's memory summary;
    a private API, used here by a benchmark only)."""
    from ray._private.internal_api import memory_summary

    found = re.search(r"Spilled (\d+) MiB", memory_summary(stats_only=True))
    return int(found.group(1)) if found else 0


@contextlib.contextmanager
def gpu_busy(period_s: float = 0.1):
    """The fraction of ``nvidia-smi`` samples in the block with GPU utilisation above 0."""
    found, stop = {"fraction": None}, threading.Event()
    samples: list[int] = []

    def sample() -> None:
        while not stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True,
            )  # fmt: skip
            with contextlib.suppress(ValueError):
                samples.append(int(out.stdout.split()[0]))
            time.sleep(period_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()
        found["fraction"] = sum(s > 0 for s in samples) / len(samples) if samples else None


def same_scores(outs: list[Path]) -> bool:
    """Whether runs (of either engine) found the same confusion matrix, scores and probabilities."""
    from cluster.registry.predictions import read_predictions

    def scores(out: Path) -> dict:
        m = json.loads((out / "metrics.json").read_text())
        return {k: m[k] for k in ("n", "confusion_matrix", "accuracy", "f1_macro")}

    def probs(out: Path) -> np.ndarray:
        where = out / "predictions" if (out / "predictions").is_dir() else out / "predictions.parquet"
        return np.stack(read_predictions(where)["probs"].to_numpy())

    first = outs[0]
    loss = json.loads((first / "metrics.json").read_text())["log_loss"]
    return all(
        scores(o) == scores(first)
        and abs(json.loads((o / "metrics.json").read_text())["log_loss"] - loss) <= 1e-12 * abs(loss)
        and np.array_equal(probs(o), probs(first))
        for o in outs[1:]
    )
