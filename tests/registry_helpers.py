"""Helpers of the registry tests: main's registry.db, damaged registry files, writer processes,
finished evaluations with real artifacts."""

import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cluster.registry.record import Registry
from cluster.stats.metrics import compute_metrics

LABELS = ["negative", "neutral", "positive"]

MAIN_DB = Path(__file__).parent / "data" / "registry_main_32d0bcc.db"  # see data/make_registry_main.py


def _truncated(db: Path) -> None:
    reg = Registry(db.parent)
    for i in range(300):
        reg.start_run("evaluate", {"i": i, "pad": "x" * 500})
    reg.close()  # the last connection checkpoints the WAL into the file
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


DAMAGE = {
    "bad header": (
        lambda db: db.write_bytes(b"not a database at all " * 100),
        "is not an SQLite database (bad header)",
    ),
    "truncated": (_truncated, "is damaged (truncated: "),
    "a directory": (lambda db: db.mkdir(), "is a directory, not an SQLite file"),
    "0 bytes": (lambda db: db.write_bytes(b""), "is an empty file (0 bytes), not an evalcluster registry"),
}


def snapshot(path: Path):
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()


def writers_context():
    """Processes forked from a fresh single-threaded server that has imported the registry once:
    they start in milliseconds instead of re-importing everything as spawned ones do."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["cluster.registry.record"])
    return ctx


def start_writer(target, *args):
    """Start ``target(*args)`` in a writers_context process with this process's EVALCLUSTER_*
    settings (a forkserver's children get the environment the server started with)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("EVALCLUSTER_")}
    proc = writers_context().Process(target=_in_env, args=(env, target, *args))
    proc.start()
    return proc


def _in_env(env, target, *args):
    for key in [k for k in os.environ if k.startswith("EVALCLUSTER_")]:
        del os.environ[key]
    os.environ.update(env)
    target(*args)


def fake_eval(reg, tmp_path, name, fingerprint, y, pred, model="m-fake", data="d.parquet"):
    """A finished evaluation run whose metrics.json and predictions.parquet are real (no Ray)."""
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    metrics = compute_metrics(y, probs, LABELS, bootstrap=300, seed=0)
    metrics.update(seed=0, model={"id": model}, dataset={"fingerprint": fingerprint})
    out = tmp_path / name
    out.mkdir()
    pd.DataFrame(
        {
            "row": np.arange(len(y)),
            "label": [LABELS[i] for i in y],
            "pred": [LABELS[i] for i in pred],
            "score": probs.max(1),
            "probs": probs.tolist(),
        }
    ).to_parquet(out / "predictions.parquet")
    (out / "metrics.json").write_text(json.dumps(metrics))
    run = reg.start_run("evaluate", {}, dataset_fingerprint=fingerprint, model_id=model, dataset_path=data)
    from cluster.evaluation.outcome import (
        headline as _headline,  # here: the writer processes above import this module
    )

    reg.finish_run(run, metrics=_headline(metrics), artifact_path=str(out))
    return run, metrics
