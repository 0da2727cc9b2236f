"""Issue 13 in the evaluation pipeline: threshold metrics, weak slices, mistakes, gates, in the browser.

Runs on the shared local Ray with tiny models: the random fixture BERT for plumbing, and a
hand-built "planted fault" BERT that is wrong exactly on texts containing a marker word.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, top_k_accuracy_score

from cluster.errors import UserError
from cluster.evaluation.run import run_evaluate
from cluster.registry.predictions import read_predictions
from cluster.registry.record import Registry
from cluster.specs.workloads import DataSpec, EvaluateSpec, GateSpec
from tests.browser import assert_renders

LABELS = ["negative", "neutral", "positive"]
MARKER = "zebra"


@pytest.fixture(scope="module")
def tweets(sample_dir, tmp_path_factory):
    """300 real tweets with a slice column, in row groups of 50."""
    df = pd.read_parquet(sample_dir / "test.parquet").head(300)
    df["source"] = np.where(np.arange(len(df)) % 3 == 0, "mobile", "web")
    path = tmp_path_factory.mktemp("tweets") / "tweets.parquet"
    df.to_parquet(path, row_group_size=50)
    return path, df


def planted_model(out):
    """A 1-layer BERT that predicts "positive" when the text holds the marker word, else "negative".

    Uniform attention (zero queries and keys) averages the tokens into [CLS]; only the marker's
    embedding is non-zero, so after the layer norms [CLS] carries +1.73 on dimension 3 exactly
    when the marker is present; the pooler reads that dimension and the classifier turns it into
    "positive" (logits [1, 0, 4.7]) against "negative" (logits [1, 0, 0]) without it.
    """
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import save_model_dir

    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=4,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config).eval()
    layer = model.bert.encoder.layer[0]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (
            model.bert.embeddings.LayerNorm,
            layer.attention.output.LayerNorm,
            layer.output.LayerNorm,
        ):
            norm.weight.fill_(1.0)
        model.bert.embeddings.word_embeddings.weight[tok.convert_tokens_to_ids(MARKER)] = torch.tensor(
            [0.0, 0.0, 0.0, 10.0]
        )
        layer.attention.self.value.weight.copy_(torch.eye(4))
        layer.attention.output.dense.weight.copy_(torch.eye(4))
        model.bert.pooler.dense.weight[0, 3] = 1.0
        model.classifier.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
        model.classifier.weight[2, 0] = 5.0
    return save_model_dir(model, tok, out, {"base_model": "planted-fault-bert"})


@pytest.fixture(scope="module")
def planted(sample_dir, tmp_path_factory):
    """(model dir, data): 600 negative tweets, the marker appended to every 10th (60 rows)."""
    root = tmp_path_factory.mktemp("planted")
    df = pd.read_parquet(sample_dir / "test.parquet")
    df = df[df["label"] == "negative"].head(600).reset_index(drop=True)
    assert not df["text"].str.lower().str.contains(MARKER).any()
    marked = np.arange(len(df)) % 10 == 3
    df.loc[marked, "text"] = df.loc[marked, "text"] + f" {MARKER}"
    df.to_parquet(root / "planted.parquet", row_group_size=100)
    return planted_model(root / "model"), root / "planted.parquet", marked


def spec_for(path, out=None, **kw):
    data = DataSpec(path=str(path), slice_column=kw.pop("slice_column", None))
    return EvaluateSpec(data=data, out=str(out) if out else None, precision="fp32", **kw)


def test_the_planted_model_is_wrong_exactly_on_the_marker(planted):
    from cluster.models.text import load_classifier, predict_proba

    model_dir, path, marked = planted
    model, tok, _ = load_classifier(model_dir)
    pred = predict_proba(model, tok, pd.read_parquet(path)["text"].tolist()).argmax(1)
    assert ((pred == 2) == marked).all() and ((pred == 0) == ~marked).all()


# ------------------------------------------------------------------ threshold metrics


@pytest.mark.ray
def test_threshold_metrics_equal_sklearn_and_ignore_sharding(ray_cluster, tweets, tiny_model_dir, tmp_path):
    path, df = tweets
    runs = [
        run_evaluate(
            spec_for(path, tmp_path / f"o{i}", model=str(tiny_model_dir), bootstrap=200, **kw)
        ).metrics
        # batch_size 1: no padding, so the model's probabilities are bitwise the same in both runs
        for i, kw in enumerate(
            [
                {"rows_per_shard": 1024, "sort_rows": 1024, "workers": 1, "batch_size": 1},
                {"rows_per_shard": 43, "sort_rows": 43, "workers": 2, "batch_size": 1},
            ]
        )
    ]
    preds = read_predictions(tmp_path / "o0" / "predictions")
    probs, y = np.stack(preds["probs"].to_numpy()), df["label"].map(LABELS.index).to_numpy()
    m = runs[0]
    onehot = np.eye(3)[y]
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"), abs=1e-9)
    assert m["average_precision_macro"] == pytest.approx(average_precision_score(onehot, probs), abs=1e-9)
    assert m["top_k_accuracy"] == pytest.approx(
        top_k_accuracy_score(y, probs, k=2, labels=[0, 1, 2]), abs=1e-9
    )
    brier = np.mean(((probs - onehot) ** 2).sum(1))
    assert m["brier_score"] == pytest.approx(brier, abs=1e-9)
    for c, lab in enumerate(LABELS):
        auc = roc_auc_score(y == c, probs[:, c])
        assert m["threshold"]["per_class"][lab]["roc_auc"] == pytest.approx(auc, abs=1e-9)
    # 1 shard on 1 actor vs 7 shards on 2 actors: bitwise the same values, intervals and curves.
    assert np.array_equal(np.stack(read_predictions(tmp_path / "o1" / "predictions")["probs"]), probs)
    keys = ("roc_auc_macro", "roc_auc_weighted", "average_precision_macro", "top_k_accuracy", "brier_score")
    assert [runs[1][k] for k in keys] == [m[k] for k in keys]
    assert {k: runs[1]["ci95"][k] for k in keys} == {k: m["ci95"][k] for k in keys}
    assert runs[1]["threshold"] == m["threshold"]
    for k in keys:
        assert m["ci95"][k][0] <= m[k] <= m["ci95"][k][1], k
    run = Registry().get_run(m["run_id"])
    assert run["metrics"]["roc_auc_macro"] == m["roc_auc_macro"] and "brier_score" in run["metrics"]["ci95"]


# ------------------------------------------------------------------ weak slices, mistakes, gates, report


@pytest.mark.ray
def test_auto_slices_find_the_planted_fault(ray_cluster, planted, tmp_path):
    model_dir, path, marked = planted
    m = run_evaluate(
        spec_for(
            path, tmp_path / "a", model=str(model_dir), bootstrap=200, auto_slices=True, min_slice_size=40
        )
    ).metrics
    auto = m["auto_slices"]
    assert m["accuracy"] == pytest.approx(1 - marked.mean())
    top = auto["weak"][0]
    assert top["slice"] == f"token={MARKER}" and top["n"] == marked.sum() and top["accuracy"] == 0.0
    assert top["ci_corrected"][1] < auto["overall"] and top["ci95"][1] < auto["overall"]
    assert "Bonferroni over" in auto["correction"] and auto["tested"] == len(auto["slices"])
    assert all(s["n"] >= 40 for s in auto["slices"].values())
    # Only the marker's slice is weak: every other slice mixes marked and unmarked rows.
    assert [w["slice"] for w in auto["weak"]] == [f"token={MARKER}"]
    # The most confident mistakes are the marked rows, with token attributions.
    (pair,) = m["mistakes"]
    assert (pair["label"], pair["pred"], pair["count"]) == ("negative", "positive", marked.sum())
    tokens = [t["token"] for t in pair["examples"][0]["tokens"]]
    assert MARKER in tokens and len(pair["examples"]) == 3
    # Slices below --min-slice-size are not reported.
    big = run_evaluate(
        spec_for(
            path, tmp_path / "b", model=str(model_dir), bootstrap=0, auto_slices=True, min_slice_size=100
        )
    ).metrics["auto_slices"]
    assert f"token={MARKER}" not in big["slices"] and all(s["n"] >= 100 for s in big["slices"].values())
    assert not any(w["n"] < 100 for w in big["weak"])
    assert Registry().get_run(m["run_id"])["metrics"]["weak_slices"] == [f"token={MARKER}"]


@pytest.mark.ray
def test_report_with_everything_renders_in_chromium(ray_cluster, tweets, tiny_model_dir, tmp_path):
    path, _ = tweets
    gate = GateSpec(min={"f1_macro": 0.01, "roc_auc_macro": 0.99}, max={"ece": 0.9})
    spec = spec_for(
        path, tmp_path / "r", model=str(tiny_model_dir), bootstrap=100, slice_column="source",
        auto_slices=True, min_slice_size=20, gate=gate,
    )  # fmt: skip
    m = run_evaluate(spec).metrics
    assert m["gate"]["passed"] is False and [c["passed"] for c in m["gate"]["conditions"]] == [
        True,
        False,
        True,
    ]
    # --slice-column slices keep their intervals; the best-worst gap gets one.
    for s in m["slices"]["slices"].values():
        assert s["ci95"]["accuracy"][0] <= s["accuracy"] <= s["ci95"]["accuracy"][1]
    assert len(m["slices"]["gap"]["accuracy"]["ci95"]) == 2
    assert m["lineage"] == {"base_model": "tiny-random-bert"}
    assert {"scan_s", "pipeline_s", "finalize_s", "total_s"} <= set(m["timings"])
    found = assert_renders(tmp_path / "r" / "report.html", min_figures=6)
    text = found["text"]
    for expected in (
        "Quality gate",
        "gate FAILED: 2/3 conditions hold",
        "ROC-AUC (macro, one-vs-rest)",
        "Most confident mistakes",
        "Weak slices",
        "Multiple-testing correction",
        "Model lineage",
        "tiny-random-bert",
        "inference pipeline (model loading included)",
        "Slices by source",
    ):
        assert expected in text, expected  # fmt: skip
    assert (tmp_path / "r" / "report.png").stat().st_size > 50_000


@pytest.mark.ray
def test_gate_inside_evaluate_compares_with_a_baseline_on_the_same_rows(
    ray_cluster, tweets, tiny_model_dir, evalctl, tmp_path, evalcluster_home
):
    path, _ = tweets
    first = run_evaluate(spec_for(path, tmp_path / "a", model=str(tiny_model_dir), bootstrap=100, mistakes=0))
    proc = evalctl(
        "evaluate", "--model", tiny_model_dir, "--data", path, "--precision", "fp32", "--bootstrap", "100",
        "--mistakes", "0", "--baseline", first.run_id, "--max-drop", "f1_macro=0", "--min", "accuracy=0.99",
        env={"EVALCLUSTER_HOME": str(evalcluster_home)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"PASS  f1_macro drop <= 0.00 points vs {first.run_id}: +0.00" in proc.stdout
    assert "FAIL  accuracy >= 0.9900" in proc.stdout and "gate FAILED: 1/2 conditions hold" in proc.stdout
    other = tmp_path / "other.parquet"
    pd.read_parquet(path).head(100).to_parquet(other)
    n_runs = len(Registry().list_runs())
    with pytest.raises(UserError, match="evaluated other data"):
        run_evaluate(
            spec_for(
                other,
                model=str(tiny_model_dir),
                gate=GateSpec(baseline=first.run_id, max_drop={"accuracy": 1}),
            )
        )
    assert len(Registry().list_runs()) == n_runs  # refused before anything was registered


@pytest.mark.ray
def test_metrics_json_stays_json(ray_cluster, tweets, tiny_model_dir, tmp_path):
    path, _ = tweets
    run_evaluate(spec_for(path, tmp_path / "j", model=str(tiny_model_dir), bootstrap=0, limit=40))
    text = (tmp_path / "j" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text)
    assert m["ci95"] == {} and "roc_auc_macro" in m and m["threshold"]["curves"].keys() == set(LABELS)


@pytest.mark.cli
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--auto-slices", "--min-slice-size", "0"], "--min-slice-size: must be >= 1, got 0"),
        (["--slice-metric", "f2"], "--slice-metric: must be one of accuracy, f1_macro"),
        (["--mistakes", "50"], "--mistakes: must be <= 20, got 50"),
        (["--min", "ece=0.1"], "--min: ece is lower-is-better; use --max ece=VALUE"),
        (["--max-drop", "f1_macro=1"], "max_drop needs a baseline"),
        (
            ["--baseline", "nosuch", "--max-drop", "f1_macro=1"],
            'baseline "nosuch" is neither an evaluation run',
        ),
        (["--slice-column", "nosuch", "--auto-slices"], 'column "nosuch" not found'),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(evalctl, tweets, tiny_model_dir, args, fragment):
    proc = evalctl("evaluate", "--model", tiny_model_dir, "--data", tweets[0], *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert Registry().list_runs() == []
