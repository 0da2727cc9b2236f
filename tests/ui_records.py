"""A team's record for the dashboard's tests and screenshots, built through the registry API.

Evaluations whose metrics.json, predictions.parquet and report.html are real (computed by the
project's own statistics from simulated predictions: no Ray), robustness runs with real paired
statistics, sweeps with learning curves (pretrained and random init), a drift and a gate run,
models with aliases moved by several people, a running and a stale run; and user strings
carrying markup, to check that every page shows them as text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from cluster.report.html import write_report
from cluster.stats.metrics import batch_stats, finalize, slice_metrics
from cluster.stats.robustness import robustness_stats, robustness_summary

LABELS = ["negative", "neutral", "positive"]
EVIL_OWNER = "<script>alert(1)</script>"
EVIL_NAME = '"><img src=x onerror=alert(2)>'
EVIL_NOTE = "<b>promoted</b><script>alert(3)</script>"
DOMAINS = np.array(["airline", "apple", "claritin"])


def simulated(n: int, skill: float, seed: int, y: np.ndarray) -> np.ndarray:
    """Probabilities of a model that is right with probability ``skill`` (n, 3)."""
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(n) < skill, y, rng.integers(0, 3, n))
    probs = rng.dirichlet(np.ones(3), n) * 0.35
    probs[np.arange(n), pred] += 0.65
    return probs / probs.sum(1, keepdims=True)


def evaluation(
    reg, root: Path, model_id: str, skill: float, seed: int, *, kind="evaluate", owner="ana", **kw
):
    """A finished evaluation (or robustness) run on the 'tweets test split' with real artifacts."""
    from jobs.evaluate import _headline

    n = kw.pop("rows", 600)
    y = np.random.default_rng(100).integers(0, 3, n)
    domain = DOMAINS[np.arange(n) % 3]
    probs = simulated(n, skill, seed, y)
    stats = batch_stats(y, probs, bootstrap=200, seed=0, slices=domain)
    metrics = finalize(stats, LABELS)
    metrics["slices"] = slice_metrics(stats, LABELS)
    if kind == "robustness":
        metrics["robustness"] = _robustness(y, probs, seed)
    fingerprint = kw.pop("fingerprint", "5e1a7c0ffee0b10c")
    run = reg.start_run(kind, {"model": model_id, "data": {"path": "data/sample/test.parquet"}}, owner=owner,
                        dataset_path="data/sample/test.parquet", dataset_fingerprint=fingerprint,
                        model_id=model_id, **kw)  # fmt: skip
    metrics.update(
        run_id=run, seed=0, bootstrap=200, precision_mode="fp32", device="cpu",
        model={"id": model_id, "path": f"/models/{model_id}"}, lineage={"base_model": "base"},
        dataset={"path": "data/sample/test.parquet", "fingerprint": fingerprint, "rows": n,
                 "text_column": "text", "label_column": "label", "slice_column": "domain"},
        timings={"scan_s": 0.4, "ray_init_s": 1.9, "pipeline_s": 6.2, "finalize_s": 0.3, "total_s": 9.1,
                 "rows_per_s": n / 6.2},
    )  # fmt: skip
    out = root / run
    out.mkdir(parents=True)
    pred = probs.argmax(1)
    pd.DataFrame(
        {"row": np.arange(n), "label": [LABELS[i] for i in y], "pred": [LABELS[i] for i in pred],
         "score": probs.max(1), "probs": probs.tolist()}
    ).to_parquet(out / "predictions.parquet")  # fmt: skip
    write_report(metrics, out / "report.html")
    (out / "metrics.json").write_text(json.dumps(metrics))
    reg.finish_run(run, metrics=_headline(metrics), artifact_path=str(out))
    return run


def _robustness(y, probs, seed: int) -> dict:
    per = {}
    for i, kind in enumerate(("typo", "case", "homoglyph")):
        rng = np.random.default_rng(seed + 10 * i)
        noisy = probs * (1 + rng.random(probs.shape) * (0.4 + 0.4 * i))
        noisy /= noisy.sum(1, keepdims=True)
        stats = robustness_stats(
            y_true=y, probs_clean=probs, probs_perturbed=noisy, rows=np.arange(len(y)), replicates=200
        )
        per[kind] = robustness_summary(stats, labels=LABELS)
    return {"rate": 0.1, "seed": 0, "perturbations": per}


def sweep(reg, init: str, best: float, owner="bo", fingerprint="7ra1n0000000f00d", model_id=None) -> str:
    """A finished sweep whose summary has trials and learning curves."""
    rng = np.random.default_rng(1 if init == "pretrained" else 2)
    curves, details = [], []
    for t in range(4):
        top = best - 0.04 * t
        epochs = [0.5 * (e + 1) for e in range(4 - (t // 2))]
        start = 0.35 if init == "pretrained" else 0.2
        values = [start + (top - start) * (1 - np.exp(-1.5 * e)) + rng.normal(0, 0.01) for e in epochs]
        curves.append({"trial_id": f"t{t}", "epoch": epochs, "f1_macro": values})
        details.append({"trial_id": f"t{t}", "config": {"learning_rate": 3e-5 * (t + 1), "batch_size": 16},
                        "epochs": epochs[-1], "resumed_from_steps": [], "nodes": ["n1"]})  # fmt: skip
    run = reg.start_run("sweep", {"init": init}, owner=owner, name=f"sweep-{init}", dataset_fingerprint=fingerprint,
                        dataset_path="data/sample/train.parquet", model_id="base")  # fmt: skip
    summary = {
        "model_id": model_id, "best_trial": "t0", "best_config": details[0]["config"], "f1_macro": best,
        "validation": {"f1_macro": best}, "trials": 4, "errored_trials": 0, "trial_epochs": 7.0,
        "trial_details": details, "init": init, "metric": "f1_macro", "curves": curves, "wall_s": 312.0,
        "best_alias": f"best -> {model_id}",
    }  # fmt: skip
    reg.finish_run(run, metrics=summary, model_id=model_id, artifact_path=None)
    return run


def build_record(reg, root: Path, more: int = 0) -> dict:
    """The whole record, plus ``more`` evaluations of further models on the same data (screenshots);
    returns the ids the tests look for."""
    ids = {}
    models = {name: reg.register_model(f"{root}/models/{name}", base_model="base", model_id=f"m-{name}",
                                       lineage={"base_model": "base", "sweep": "sweep-pretrained"})
              for name in ("weak", "mid", "strong")}  # fmt: skip
    ids["sweep_random"] = sweep(reg, "random", 0.41, model_id=models["weak"])
    ids["sweep_pretrained"] = sweep(reg, "pretrained", 0.78, model_id=models["strong"])
    ids["weak"] = evaluation(reg, root, models["weak"], 0.45, 1)
    ids["mid"] = evaluation(reg, root, models["mid"], 0.62, 2, owner=EVIL_OWNER, name=EVIL_NAME)
    ids["strong"] = evaluation(reg, root, models["strong"], 0.80, 3, owner="bo")
    ids["robust"] = evaluation(reg, root, models["strong"], 0.80, 3, kind="robustness")
    ids["other_data"] = evaluation(reg, root, models["mid"], 0.7, 4, fingerprint="d0a1n5h1f7000000", rows=300)
    reg.set_alias("best", models["weak"], by="ana", note="first sweep")
    reg.set_alias("best", models["strong"], by="bo", via="sweep", note="sweep sweep-pretrained")
    reg.set_alias("serving", models["mid"], by=EVIL_OWNER, note=EVIL_NOTE)
    ids["drift"] = _finished(reg, "drift", models["strong"], {
        "verdict": "drift",
        "checks": {"text_length": {"statistic": 0.21, "p_value": 1e-9, "verdict": "drift"},
                   "unknown_token_rate": {"statistic": 0.01, "p_value": 0.4, "verdict": "same"}},
        "metric_gap": {"f1_macro": {"gap": -0.08, "ci95": [-0.12, -0.04]}},
    })  # fmt: skip
    ids["gate"] = _finished(reg, "gate", models["strong"], {
        "run": ids["strong"], "model": models["strong"], "passed": True, "use_ci_lower": False, "baseline": None,
        "conditions": [{"kind": "min", "metric": "f1_macro", "limit": 0.7, "value": 0.79, "ci95": [0.75, 0.82],
                        "judged": 0.79, "passed": True, "line": "PASS  f1_macro >= 0.7000"}],
    })  # fmt: skip
    ids["running"] = reg.start_run("evaluate", {}, owner="cy", model_id=models["mid"])
    ids["stale"] = reg.start_run("evaluate", {}, owner="cy", model_id=models["mid"])
    with reg.database.write() as conn:  # a run whose node went away an hour ago
        conn.execute(
            sa.text("UPDATE runs SET host = 'lost-node', heartbeat_at = :t WHERE id = :id"),
            {"t": "2026-01-01T00:00:00+00:00", "id": ids["stale"]},
        )
    ids["failed"] = reg.start_run("pretrain", {}, owner="ana")
    reg.fail_run(ids["failed"], "CUDA out of memory <i>markup in an error</i>")
    for i in range(more):
        model = reg.register_model(f"{root}/models/v{i}", base_model="base", model_id=f"m-v{i + 1}")
        evaluation(reg, root, model, 0.55 + 0.04 * i, 10 + i, owner=("ana", "bo", "cy")[i % 3])
    ids.update(models=models)
    return ids


def _finished(reg, kind: str, model_id: str, metrics: dict) -> str:
    run = reg.start_run(kind, {}, owner="ana", model_id=model_id, dataset_fingerprint="5e1a7c0ffee0b10c",
                        dataset_path="data/sample/test.parquet")  # fmt: skip
    reg.finish_run(run, metrics=metrics)
    return run
