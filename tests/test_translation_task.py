"""The translation evaluation task (cluster/evaluation/translate.py) through every stage the pipeline
runs, played here by hand: read blocks -> preprocess -> the model per ``_batch`` -> statistics of
arbitrary parts -> merge -> finalize. The merged scores must equal sacrebleu's corpus scores on the
same hypotheses, whatever the blocks and parts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sacrebleu

from cluster.data.parallel import read_pair_shard
from cluster.data.shards import plan_shards
from cluster.errors import UserError
from cluster.evaluation.task import BAD, BATCH
from cluster.evaluation.translate import IDS, TranslateTask
from cluster.models.cache import ModelSource
from cluster.specs.workloads import DataSpec, EvaluateSpec
from tests.translation_helpers import EN, FR

N = 26


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    words = " ".join(EN).split()
    rows = {
        "en": [" ".join(words[i : i + 3 + i % 7]) for i in range(N)],
        "fr": [FR[i % 4][: 20 + 3 * i] for i in range(N)],
        "fr2": [FR[(i + 1) % 4][:30] if i % 3 else None for i in range(N)],
        "ref_id": [f"s{i}" for i in range(N)],
    }
    path = tmp_path_factory.mktemp("corpus") / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(path, row_group_size=5)
    return path


def _task(translator_dir, corpus, **kw) -> TranslateTask:
    data = DataSpec(
        path=str(corpus), source_column="en", target_column="fr", reference_columns="fr2", id_column="ref_id"
    )
    spec = EvaluateSpec(
        model=str(translator_dir), data=data, batch_size=4, max_new_tokens=6, precision="fp32", **kw
    )
    return TranslateTask(ModelSource(str(translator_dir), "tiny"), data, spec)


def _run(task, rows_per_shard: int, parts: int):
    """The stages by hand; returns (merged statistics, every row after the model stage)."""
    fs, shards = plan_shards(task.data, None, rows_per_shard)
    model = task.load("cpu")
    done = []
    for shard in shards:
        block = read_pair_shard(shard, task.data, fs)
        block = task.preprocess(block)
        for b in sorted(set(block[BATCH].to_pylist())):
            batch = block.filter(pa.compute.equal(block[BATCH], b))
            done.append(model.predict(batch))
    rows = pa.concat_tables(done)
    rows = rows.filter(rows[BAD].is_null())  # the write stage leaves bad rows out
    merged = None
    for p in range(parts):  # parts: rows in any grouping, as Ray Data may bundle them
        part = rows.filter(pa.array(rows["row"].to_numpy() % parts == p))
        st = task.statistics(part)
        merged = st if merged is None else {k: merged[k] + st[k] for k in st}
    return merged, rows.sort_by("row")


def test_merged_statistics_equal_sacrebleu_whatever_the_blocks_and_parts(translator_dir, corpus):
    task = _task(translator_dir, corpus, bootstrap=100, seed=2)
    merged, rows = _run(task, rows_per_shard=5, parts=3)
    metrics = task.finalize(merged)
    hyps = rows["hypothesis"].to_pylist()
    refs = [rows["target"].to_pylist(), rows["ref_1"].to_pylist()]
    assert metrics["n"] == N and metrics["task"] == "translation"
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, refs).score, abs=1e-9)
    assert metrics["ter"] == pytest.approx(sacrebleu.corpus_ter(hyps, refs).score, abs=1e-9)
    assert set(metrics["ci95"]) >= {"bleu", "chrf", "ter", "length_ratio"}
    assert metrics["generation"] == {"num_beams": 1, "max_new_tokens": 6}

    # Other parts of the same rows: the very same statistics, CIs included.
    again = task.finalize(_regroup(task, rows, parts=5))
    assert again["ci95"] == metrics["ci95"] and again["bleu"] == metrics["bleu"]

    worst = metrics["worst"]
    assert len(worst) == 10 and [w["chrf"] for w in worst] == sorted(w["chrf"] for w in worst)
    preds = task.predictions(rows)
    assert preds.column_names == [
        "row", "source", "reference", "reference_2", "hypothesis", "bleu", "chrf", "ter", "ref_id",
    ]  # fmt: skip
    lowest = preds.sort_by([("chrf", "ascending"), ("row", "ascending")]).slice(0, 10)
    assert [w["row"] for w in worst] == lowest["row"].to_pylist()
    i = 3
    one = sacrebleu.sentence_bleu(hyps[i], [r[i] for r in refs if r[i] is not None]).score
    assert preds["bleu"][i].as_py() == pytest.approx(one, abs=1e-9)


def _regroup(task, rows, parts):
    merged = None
    for p in range(parts):
        st = task.statistics(rows.filter(pa.array(rows["row"].to_numpy() % parts == p)))
        merged = st if merged is None else {k: merged[k] + st[k] for k in st}
    return merged


def test_preprocess_orders_by_length_and_cuts_batches(translator_dir, corpus):
    task = _task(translator_dir, corpus)
    fs, shards = plan_shards(task.data, None, 13)
    block = task.preprocess(read_pair_shard(shards[1], task.data, fs))
    lengths = [len(x) for x in block[IDS].to_pylist()]
    assert lengths == sorted(lengths)  # one sort group (sort_rows 1024): the whole block by length
    batches, rows = block[BATCH].to_pylist(), block["row"].to_pylist()
    assert [batches[i] for i in range(0, 13, 4)] == [rows[i] for i in range(0, 13, 4)]  # a batch's first row
    assert all(batches[i] == batches[i - i % 4] for i in range(13))  # batches of 4


def test_translations_do_not_depend_on_the_blocks(translator_dir, corpus):
    """Sort groups of 4 rows: blocks of 8 or 12 rows cut the same batches, so the same translations."""
    task = _task(translator_dir, corpus, sort_rows=4, rows_per_shard=8)
    _, a = _run(task, rows_per_shard=8, parts=1)
    _, b = _run(task, rows_per_shard=12, parts=1)
    assert a["hypothesis"].to_pylist() == b["hypothesis"].to_pylist()


def test_bad_rows_stop_the_run_or_are_marked(translator_dir, tmp_path):
    df = pd.DataFrame(
        {"en": ["a b c", "", "d e f"], "fr": ["x y", "z", "w " * 50], "ref_id": ["a", "b", "c"]}
    )
    df.to_parquet(tmp_path / "bad.parquet")
    data = DataSpec(path=str(tmp_path / "bad.parquet"), source_column="en", target_column="fr", max_chars=40)
    spec = EvaluateSpec(model=str(translator_dir), data=data, max_new_tokens=4, precision="fp32")
    task = TranslateTask(ModelSource(str(translator_dir), "tiny"), data, spec)
    fs, shards = plan_shards(data, None, 10)
    block = read_pair_shard(shards[0], data, fs)
    with pytest.raises(UserError, match=r'^row 1 of .*: empty "en" \(1 more bad row\(s\) in rows 1, 2\)'):
        task.preprocess(block)
    spec = spec.model_copy(update={"skip_bad_rows": True})
    task = TranslateTask(ModelSource(str(translator_dir), "tiny"), data, spec)
    out = task.load("cpu").predict(task.preprocess(block))
    bad = dict(zip(out["row"].to_pylist(), out[BAD].to_pylist(), strict=True))
    assert bad[0] is None and bad[1] == 'empty "en"' and "limit 40" in bad[2]
    hyp = dict(zip(out["row"].to_pylist(), out["hypothesis"].to_pylist(), strict=True))
    assert hyp[1] is None and hyp[2] is None and isinstance(hyp[0], str)


def test_finalize_of_nothing_is_defined(translator_dir, corpus):
    metrics = _task(translator_dir, corpus).finalize({})
    assert metrics["n"] == 0 and metrics["worst"] == [] and np.isnan(metrics["length_ratio"])


def test_report_shows_scores_length_ratio_and_worst_sentences(translator_dir, corpus):
    from cluster.report.translation import render_translation

    task = _task(translator_dir, corpus, bootstrap=50)
    merged, rows = _run(task, rows_per_shard=13, parts=2)
    metrics = task.finalize(merged)
    metrics["worst"][0]["hypothesis"] = "<script>alert(1)</script>"  # data is escaped, never markup
    html = render_translation(metrics)
    assert "Translation evaluation" in html and "BLEU" in html and "chrF2" in html
    assert f"{metrics['bleu']:.2f}" in html and f"{metrics['length_ratio']:.3f}" in html
    assert "Worst sentences" in html and metrics["worst"][1]["source"] in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    # sacrebleu's signature: a third of the rows have no second reference
    assert "nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp" in html


def test_compare_two_systems_by_paired_bootstrap(translator_dir, corpus, tiny_model_dir, tmp_path):
    from cluster.report.translation import render_translation_comparison
    from cluster.stats.translation_compare import compare_translations

    task = _task(translator_dir, corpus)
    _, rows = _run(task, rows_per_shard=13, parts=1)
    a = task.predictions(rows)
    # B: the reference itself for two sentences in three, A's translation elsewhere.
    better = [
        r if i % 3 else h
        for i, (r, h) in enumerate(zip(a["reference"].to_pylist(), a["hypothesis"].to_pylist(), strict=True))
    ]
    b = a.set_column(a.schema.get_field_index("hypothesis"), "hypothesis", pa.array(better))
    got = compare_translations(a, b.take(pa.array(np.arange(N)[::-1])), "chrf", replicates=200)
    refs = [a["reference"].to_pylist(), a["reference_2"].to_pylist()]
    assert got["metrics"]["bleu"]["b"] == pytest.approx(sacrebleu.corpus_bleu(better, refs).score, abs=1e-9)
    assert got["metrics"]["chrf"]["diff"] > 0 and got["metrics"]["chrf"]["p_value"] < 0.05
    assert got["verdict"].startswith("B better on chrf")
    same = compare_translations(a, a, "bleu", replicates=50)
    assert same["metrics"]["bleu"]["p_value"] == 1.0 and same["verdict"].startswith("no significant")
    html = render_translation_comparison(
        {**got, "a": "r1", "b": "r2", "model_a": "m1", "model_b": "m2", "dataset": "fp"}
    )
    assert "B better on chrf" in html and "paired-bs" in html
    with pytest.raises(UserError, match="translated different rows"):
        compare_translations(a, a.slice(0, 5))
