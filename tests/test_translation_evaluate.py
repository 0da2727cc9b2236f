"""Translation evaluation end to end on Ray Data: `evalctl evaluate` and the Python API on a parallel
corpus with a tiny translator (conftest ``translator_dir``). The corpus scores in metrics.json must
equal sacrebleu's corpus_bleu/corpus_chrf/corpus_ter on the hypotheses the run wrote, whatever the
workers and blocks; bad rows are one clear line, or skipped and counted."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sacrebleu

from cluster.errors import UserError
from cluster.evaluation.api import evaluate
from cluster.registry.predictions import read_predictions
from cluster.registry.record import Registry
from tests.translation_helpers import EN, FR

N = 24
COLUMNS = dict(source_column="en", target_column="fr", reference_columns="fr2", id_column="vid")
GENERATION = dict(max_new_tokens=6, batch_size=4, precision="fp32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """N sentence pairs, a second reference on two rows in three, an id; row groups of 5."""
    words = " ".join(EN).split()
    df = pd.DataFrame(
        {
            "en": [" ".join(words[i : i + 3 + i % 6]) for i in range(N)],
            "fr": [FR[i % 4][: 18 + 2 * i] for i in range(N)],
            "fr2": [FR[(i + 1) % 4][:30] if i % 3 else None for i in range(N)],
            "vid": [f"v{i:03d}" for i in range(N)],
        }
    )
    path = tmp_path_factory.mktemp("parallel") / "pairs.parquet"
    df.to_parquet(path, row_group_size=5)
    return path, df


def sacrebleu_scores(preds: pd.DataFrame) -> dict[str, float]:
    """sacrebleu's corpus scores of the written hypotheses against the written references."""
    hyps = preds["hypothesis"].tolist()
    refs = [preds["reference"].tolist(), [r if isinstance(r, str) else None for r in preds["reference_2"]]]
    return {
        "bleu": sacrebleu.corpus_bleu(hyps, refs).score,
        "chrf": sacrebleu.corpus_chrf(hyps, refs).score,
        "ter": sacrebleu.corpus_ter(hyps, refs).score,
    }


@pytest.mark.ray
@pytest.mark.cli
def test_cli_evaluate_a_translation_model(evalctl, corpus, translator_dir, tmp_path):
    path, df = corpus
    out = tmp_path / "out"
    proc = evalctl(
        "evaluate", "--model", translator_dir, "--data", path, "--source-column", "en",
        "--target-column", "fr", "--reference-columns", "fr2", "--id-column", "vid", "--out", out,
        "--bootstrap", "50", "--batch-size", "4", "--max-new-tokens", "6", "--rows-per-shard", "10", "--sort-rows", "5",
        "--precision", "fp32",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bleu" in proc.stdout and "chrf" in proc.stdout and "Traceback" not in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    preds = read_predictions(out / "predictions")
    assert list(preds.columns) == [
        "row", "source", "reference", "reference_2", "hypothesis", "bleu", "chrf", "ter", "vid",
    ]  # fmt: skip
    assert preds["row"].tolist() == list(range(N)) and preds["vid"].tolist() == df["vid"].tolist()
    assert preds["source"].tolist() == df["en"].tolist()
    expected = sacrebleu_scores(preds)
    assert metrics["task"] == "translation" and metrics["n"] == N
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
        lo, hi = metrics["ci95"][name]
        assert lo <= hi
    assert metrics["bleu_details"]["signature"].startswith("nrefs:var|case:mixed|eff:no|tok:13a")
    assert metrics["chrf_signature"].startswith("nrefs:var") and metrics["ter_signature"].startswith(
        "nrefs:var"
    )
    assert metrics["dataset"]["source_column"] == "en" and metrics["dataset"]["reference_columns"] == ["fr2"]
    assert metrics["generation"] == {"num_beams": 1, "max_new_tokens": 6}
    assert len(metrics["worst"]) == 10 and metrics["bad_rows"]["count"] == 0
    html = (out / "report.html").read_text()
    assert "Translation evaluation" in html and f"{metrics['bleu']:.2f}" in html and "Worst sentences" in html
    run = Registry().get_run(metrics["run_id"])
    assert run["status"] == "finished" and run["dataset_fingerprint"] == metrics["dataset"]["fingerprint"]
    assert run["metrics"]["bleu"] == metrics["bleu"]


@pytest.mark.ray
def test_api_scores_equal_sacrebleu_whatever_the_workers_and_blocks(
    ray_cluster, corpus, translator_dir, tmp_path
):
    path, df = corpus
    runs = []
    for i, (workers, rows_per_shard) in enumerate([(1, 24), (2, 8)]):
        result = evaluate(
            str(path), str(translator_dir), out=str(tmp_path / f"o{i}"), workers=workers,
            rows_per_shard=rows_per_shard, sort_rows=4, bootstrap=40, **GENERATION, **COLUMNS,
        )  # fmt: skip
        runs.append((result.metrics, read_predictions(result.predictions)))
    (a, pa_), (b, pb) = runs
    # Batches are cut within sort groups of 4 rows: the same translations however the rows were split.
    assert pa_["hypothesis"].tolist() == pb["hypothesis"].tolist()
    for name, value in sacrebleu_scores(pb).items():
        assert b[name] == pytest.approx(value, abs=1e-9)
        assert b[name] == pytest.approx(a[name], abs=1e-9)
        assert b["ci95"][name] == pytest.approx(a["ci95"][name], abs=1e-9)
    assert [r["worker_plan"]["actors"] for r, _ in runs] == [1, 2]
    check_compare_and_gate(a, b)

    # A ray.data.Dataset of the same rows: the same scores.
    import ray.data

    ds = ray.data.from_pandas(df)
    c = evaluate(ds, str(translator_dir), out=str(tmp_path / "ds"), sort_rows=4, bootstrap=40, **GENERATION,
                 **COLUMNS).metrics  # fmt: skip
    for name in ("bleu", "chrf", "ter"):
        assert c[name] == pytest.approx(a[name], abs=1e-9)


def check_compare_and_gate(a: dict, b: dict) -> None:
    """`evalctl compare` and `evalctl gate` on two translation runs of the same sentences."""
    from cluster.specs.workloads import GateSpec
    from jobs.gate import gate_run
    from jobs.team import compare_runs

    reg = Registry()
    got = compare_runs(reg, a["run_id"], b["run_id"], "chrf", replicates=100)
    assert got["n"] == N and got["metrics"]["chrf"]["a"] == pytest.approx(a["chrf"], abs=1e-9)
    assert got["metrics"]["bleu"]["p_value"] == 1.0  # the same translations: no difference at all
    assert got["verdict"].startswith("no significant difference on chrf")
    with open(got["report"]) as f:
        assert "Translation comparison" in f.read()
    with pytest.raises(UserError, match='cannot compare translations on "f1_macro"'):
        compare_runs(reg, a["run_id"], b["run_id"], "f1_macro")
    verdict = gate_run(reg, b["run_id"], GateSpec(min={"bleu": 0.0, "chrf": 99.0}, max={"ter": 1000.0}))
    assert not verdict["passed"] and [c["passed"] for c in verdict["conditions"]] == [True, False, True]
    with pytest.raises(UserError, match="translation run: --max-drop"):
        gate_run(reg, b["run_id"], GateSpec(baseline=a["run_id"], max_drop={"f1_macro": 1.0}))


@pytest.mark.ray
def test_bad_pairs_are_one_line_or_skipped_and_counted(ray_cluster, translator_dir, tmp_path):
    df = pd.DataFrame({"en": ["a b c", "", "d e f", "g h"], "fr": ["x y", "z", "w " * 50, "u v"]})
    df.to_parquet(tmp_path / "bad.parquet")
    opts = dict(source_column="en", target_column="fr", max_chars=40, **GENERATION)
    with pytest.raises(UserError, match=r'row 1 of .*: empty "en"'):
        evaluate(str(tmp_path / "bad.parquet"), str(translator_dir), out=str(tmp_path / "o1"), **opts)
    assert not (tmp_path / "o1" / "metrics.json").exists()
    m = evaluate(
        str(tmp_path / "bad.parquet"),
        str(translator_dir),
        out=str(tmp_path / "o2"),
        skip_bad_rows=True,
        **opts,
    ).metrics
    assert m["n"] == 2 and m["bad_rows"]["count"] == 2
    assert [b["row"] for b in m["bad_rows"]["first_rows"]] == [1, 2]
    preds = read_predictions(tmp_path / "o2" / "predictions")
    assert preds["row"].tolist() == [0, 3]
    hyps, refs = preds["hypothesis"].tolist(), [preds["reference"].tolist()]
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)


def test_classifier_options_are_refused_for_a_translation_model(corpus, translator_dir, tmp_path):
    path, _ = corpus
    with pytest.raises(UserError, match=r"translation model: --auto-slices apply to classifiers only"):
        evaluate(str(path), str(translator_dir), out=str(tmp_path / "o"), auto_slices=True, **COLUMNS)
