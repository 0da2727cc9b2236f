"""Sharded evaluation end to end on the shared local Ray, with a tiny random BERT."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, log_loss

from cluster.errors import UserError
from cluster.evaluation.run import run_evaluate
from cluster.models.text import load_classifier, predict_proba
from cluster.registry.predictions import read_predictions
from cluster.registry.record import Registry
from cluster.specs.parse import load_spec
from cluster.specs.workloads import DataSpec, EvaluateSpec
from cluster.stats.metrics import metric_names

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def tweets(sample_dir, tmp_path_factory):
    """300 real tweets with non-default column names, an id and a slice column."""
    df = pd.read_parquet(sample_dir / "test.parquet").head(300)
    df = df.rename(columns={"text": "tweet", "label": "gold"})
    df["tweet_id"] = [f"t{i:04d}" for i in range(len(df))]
    df["source"] = np.where(np.arange(len(df)) % 3 == 0, "mobile", "web")
    path = tmp_path_factory.mktemp("tweets") / "tweets.parquet"
    df.to_parquet(path, row_group_size=50)
    return path, df


def spec_for(path, out=None, **kw):
    data = DataSpec(
        path=str(path),
        text_column="tweet",
        label_column="gold",
        id_column="tweet_id",
        slice_column=kw.pop("slice_column", None),
    )
    return EvaluateSpec(data=data, out=str(out) if out else None, bootstrap=kw.pop("bootstrap", 200), **kw)


@pytest.mark.ray
def test_cli_evaluate_matches_single_process_forward(
    evalctl, tweets, tiny_model_dir, tmp_path, evalcluster_home
):
    path, df = tweets
    proc = evalctl(
        "evaluate",
        "--model",
        tiny_model_dir,
        "--data",
        path,
        "--text-column",
        "tweet",
        "--label-column",
        "gold",
        "--id-column",
        "tweet_id",
        "--out",
        tmp_path / "out",
        "--bootstrap",
        "100",
        "--batch-size",
        "16",
        "--max-length",
        "64",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "f1_macro" in proc.stdout
    # Quiet by default: no Ray Data progress lines, no core_worker actor-argument line.
    for noise in ("logging_progress", "streaming_executor", "core_worker.cc", "Traceback"):
        assert noise not in proc.stderr, proc.stderr
    preds = pd.read_parquet(tmp_path / "out" / "predictions").sort_values("row", ignore_index=True)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(preds.columns) == ["row", "label", "pred", "score", "probs", "tweet_id"]
    assert preds["row"].tolist() == list(range(300))
    assert preds["tweet_id"].tolist() == df["tweet_id"].tolist()
    assert preds["label"].tolist() == df["gold"].tolist()
    # A plain single-process forward pass at the same precision gives the same answers.
    model, tok, labels = load_classifier(tiny_model_dir)
    ref = predict_proba(
        model, tok, df["tweet"].tolist(), max_length=64, precision=metrics["precision_mode"], batch_size=16
    )
    got = np.stack(preds["probs"].to_numpy())
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert preds["pred"].tolist() == [labels[i] for i in ref.argmax(1)]
    np.testing.assert_allclose(preds["score"], ref.max(1), atol=1e-6)
    check_metrics_contract(metrics, df, ref, got, tmp_path / "out")


def check_metrics_contract(metrics, df, ref, got, out):
    """metrics.json follows the contract and equals scikit-learn on the written predictions."""
    y = df["gold"].map(LABELS.index).to_numpy()
    assert metrics["n"] == 300 and metrics["labels"] == LABELS
    assert metrics["f1_macro"] == pytest.approx(
        f1_score(y, ref.argmax(1), average="macro", labels=[0, 1, 2], zero_division=0), abs=1e-9
    )
    assert metrics["log_loss"] == pytest.approx(log_loss(y, got, labels=[0, 1, 2]), abs=1e-9)
    for key in (
        "precision_micro",
        "recall_weighted",
        "per_class",
        "confusion_matrix",
        "ece",
        "ci95",
        "model",
        "dataset",
        "precision_mode",
        "timings",
    ):
        assert key in metrics, key
    assert (out / "report.html").read_text().count("<svg") >= 3  # confusion, reliability, per class
    run = Registry().get_run(metrics["run_id"])
    assert run["status"] == "finished" and run["artifact_path"] == str(out)
    assert run["dataset_fingerprint"] == metrics["dataset"]["fingerprint"]


@pytest.mark.ray
def test_same_metrics_with_one_or_two_workers_and_any_block_size(
    ray_cluster, tweets, tiny_model_dir, tmp_path
):
    path, _ = tweets
    runs = []
    for i, (workers, rows_per_shard) in enumerate([(1, 300), (2, 50), (2, 100)]):
        spec = spec_for(
            path,
            tmp_path / f"o{i}",
            model=str(tiny_model_dir),
            workers=workers,
            precision="fp32",
            slice_column="source",
            rows_per_shard=rows_per_shard,
            sort_rows=50,
        )
        runs.append(run_evaluate(spec).metrics)
    preds = [read_predictions(tmp_path / f"o{i}" / "predictions") for i in range(3)]
    base = runs[0]
    assert [r["worker_plan"]["actors"] for r in runs] == [1, 2, 2]
    for r in runs:  # every row computed once, by an actor that says where it ran
        assert sum(w["rows"] for w in r["workers"]) == 300 and all(w["node"] for w in r["workers"])
        assert r["recovery"]["rows"] == 300 and not r["recovery"]["restarted_actors"]
    for other, pred in zip(runs[1:], preds[1:], strict=True):
        # Each row is batched with the same rows whatever the sharding (sort groups of 50 input
        # rows), so its probabilities are the same to the last bit...
        assert np.array_equal(np.stack(pred["probs"]), np.stack(preds[0]["probs"]))
        assert other["confusion_matrix"] == base["confusion_matrix"]
        assert other["f1_macro"] == base["f1_macro"]  # from integer counts: exactly equal
        assert other["log_loss"] == pytest.approx(base["log_loss"], rel=1e-9)
        for key, ci in base["ci95"].items():
            # ...so the threshold metrics, which rank the scores, and their CIs are equal too
            # (sums of floats merged in another order: to 1e-9).
            assert other["ci95"][key] == pytest.approx(ci, rel=1e-9, abs=1e-12), key
        for key in metric_names(family="threshold"):
            assert other[key] == pytest.approx(base[key], rel=1e-9, abs=1e-12), key
        assert other["slices"]["slices"].keys() == {"mobile", "web"}
        assert other["slices"]["gap"]["accuracy"]["gap"] == pytest.approx(
            base["slices"]["gap"]["accuracy"]["gap"], abs=1e-12
        )


@pytest.mark.ray
def test_failure_midway_marks_run_failed_and_leaves_no_metrics(
    ray_cluster, tweets, tiny_model_dir, tmp_path, monkeypatch
):
    import cluster.evaluation.run as ev

    def broken_report(metrics, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr("cluster.report.html.write_report", broken_report)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        ev.run_evaluate(spec_for(tweets[0], out, model=str(tiny_model_dir), bootstrap=0))
    assert not (out / "metrics.json").exists() and not (out / "predictions").exists()
    assert not (out / "_checkpoint").exists() and not list(out.glob(".*tmp"))
    (run,) = Registry().list_runs()
    assert run["status"] == "failed" and "disk full" in run["error"]


# ------------------------------------------------------------------ bad input (no Ray needed)


@pytest.mark.ray  # the labels are checked by the scan that runs while Ray starts (cluster/evaluation/run.py)
def test_unknown_labels_are_listed_with_counts(tweets, tiny_model_dir, tmp_path):
    _, df = tweets
    bad = df.copy()
    bad.loc[:4, "gold"] = "angry"
    bad.loc[5, "gold"] = "Positive"
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(UserError, match=r"unknown to the model: 'Positive' \(1 rows\), 'angry' \(5 rows\)"):
        run_evaluate(spec_for(tmp_path / "bad.parquet", model=str(tiny_model_dir)))
    assert Registry().list_runs() == []  # nothing registered on a user error


def test_model_without_id2label(tweets):
    with pytest.raises(UserError, match="has no id2label"):
        run_evaluate(spec_for(tweets[0], model="base"))


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("batch_size", 0, "batch_size: must be >= 1, got 0"),
        ("workers", 0, "workers: must be >= 1, got 0"),
        ("bootstrap", -1, "bootstrap: must be >= 0, got -1"),
        ("rows_per_shard", 0, "rows_per_shard: must be >= 1, got 0"),
    ],
)
def test_bad_numbers(tweets, tiny_model_dir, field, value, match):
    raw = spec_for(tweets[0], model=str(tiny_model_dir)).model_dump()
    with pytest.raises(UserError, match=match):
        load_spec(EvaluateSpec, {**raw, field: value})


def test_out_dir_holding_another_run_is_refused(tweets, tiny_model_dir, tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="already holds another run .*--overwrite"):
        run_evaluate(spec_for(tweets[0], tmp_path, model=str(tiny_model_dir)))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
        (["--data", "/nope/x.parquet"], "data path not found"),
        (["--model", "nosuchmodel"], 'MODEL "nosuchmodel" resolves to nothing'),
        (["--text-column", "body"], 'text column "body" not found'),
        (["--precision", "fp8"], "--precision: must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    ],
)
@pytest.mark.cli
def test_cli_user_errors(evalctl, tweets, tiny_model_dir, args, fragment):
    base = {
        "--model": str(tiny_model_dir),
        "--data": str(tweets[0]),
        "--text-column": "tweet",
        "--label-column": "gold",
    }
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    proc = evalctl("evaluate", *[x for kv in base.items() for x in kv])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error: ") and fragment in proc.stderr
    assert "Traceback" not in proc.stderr
