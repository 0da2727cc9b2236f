"""The task seam's rules (cluster/evaluation/task.py), checked for each task without Ray: a task's
statistics merge exactly and in any order, travel through the part-file codec unchanged, and the
task object travels to workers without a loaded model. Tasks: classification (a tiny BERT on tweets),
segmentation (a 32 px EfficientNet-Lite0 segmenter on the synthetic scenes) and translation (a tiny
encoder-decoder on verse fragments)."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cluster.evaluation.stages import model_batches
from cluster.evaluation.task import ROW
from cluster.evaluation.tasks import classification as classification_task
from cluster.evaluation.tasks import task_for
from cluster.models.resolve import resolve_model
from cluster.specs.workloads import DataSpec, EvaluateSpec
from cluster.stats import codec
from cluster.stats.analyses import Analyses
from tests.translation_helpers import EN, FR

LABELS = ["negative", "neutral", "positive"]
ROWS, BLOCK = 240, 60


@pytest.fixture(scope="module", params=["classification", "segmentation", "translation"])
def scored(request):
    """(task, every row through preprocess + model, in blocks as the pipeline cuts them), per task."""
    task, data, block = request.getfixturevalue(request.param)
    loaded = task.load("cpu")
    out = []
    for start in range(0, data.num_rows, block):
        pre = task.preprocess(data.slice(start, block))
        out += [loaded.predict(pre.take(idx)) for idx in model_batches(pre)]
    return task, pa.concat_tables(out).sort_by(ROW)


def with_rows(data: pa.Table) -> pa.Table:
    return data.append_column(ROW, pa.array(np.arange(data.num_rows), pa.int64()))


@pytest.fixture(scope="module")
def classification(tiny_model_dir, sample_dir):
    spec = EvaluateSpec(
        model=str(tiny_model_dir), data=DataSpec(path=str(sample_dir / "test.parquet")),
        bootstrap=30, batch_size=16, sort_rows=BLOCK, rows_per_shard=BLOCK, max_length=32,
        mistakes=5, auto_slices=True, precision="fp32",
    )  # fmt: skip
    model = resolve_model(str(tiny_model_dir))
    task = classification_task(spec, model, LABELS, spec.data, Analyses.for_spec(spec, len(LABELS)))
    data = pq.read_table(sample_dir / "test.parquet").slice(0, ROWS)
    return task, with_rows(data), BLOCK


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    """The synthetic scenes (cluster/data/segmentation_sample.py) and a 32 px segmentation model,
    through task_for as an evaluation builds it; 24 images in blocks of 8, batches of 4."""
    from cluster.data.segmentation_sample import CLASSES, sample_segmentation_splits
    from cluster.models.segmentation import new_segmentation_model
    from cluster.models.segmenter import Segmenter

    root = tmp_path_factory.mktemp("contract-seg")
    sample_segmentation_splits(root, seed=0, sizes={"train": 1, "validation": 1, "test": 24})
    path = Segmenter(new_segmentation_model(CLASSES, image_size=32, seed=0), CLASSES).save(root / "m", {})
    data = DataSpec(path=str(root / "test.parquet"), id_column="id")
    spec = EvaluateSpec(model=str(path), data=data, bootstrap=30, batch_size=4, precision="fp32")
    task = task_for(spec, resolve_model(str(path)), CLASSES, data)
    assert task.name == "segmentation"
    return task, with_rows(pq.read_table(data.path).select(["image", "mask", "id"])), 8


@pytest.fixture(scope="module")
def translation(translator_dir):
    """One reference per sentence: every statistic is an integer count (TER's reference length is
    an average over references), so the merge is exact bit for bit; 30 sentences in blocks of 8."""
    words = " ".join(EN).split()
    n = 30
    data = pa.table({"source": [" ".join(words[i : i + 2 + i % 5]) for i in range(n)],
                     "target": [FR[i % 4][: 12 + i] for i in range(n)]})  # fmt: skip
    spec = EvaluateSpec(
        model=str(translator_dir), data=DataSpec(path="unused.parquet"), bootstrap=30, batch_size=4,
        sort_rows=8, max_new_tokens=5, precision="fp32",
    )  # fmt: skip
    task = task_for(spec, resolve_model(str(translator_dir)), [], spec.data)
    assert task.name == "translation"
    return task, with_rows(data), 8


def same(x, y) -> bool:
    """Equal in value, exactly: arrays element for element (exact sums are integers), dataclasses
    field by field, containers item by item."""
    if dataclasses.is_dataclass(x):
        return type(x) is type(y) and same(dataclasses.asdict(x), dataclasses.asdict(y))
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list | tuple):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y, strict=True))
    if isinstance(x, np.ndarray):
        return isinstance(y, np.ndarray) and x.shape == y.shape and bool(np.all(x == y))
    return x == y


def add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] if k in a and k in b else a.get(k, b.get(k)) for k in a.keys() | b.keys()}


def test_statistics_merge_exactly_in_any_order_and_any_split(scored):
    task, rows = scored
    whole = task.statistics(rows)
    odd = pc.equal(pc.bit_wise_and(rows[ROW], 1), 1)
    a, b = rows.filter(odd), rows.filter(pc.invert(odd))  # interleaved: no block boundary in common
    assert same(add(task.statistics(a), task.statistics(b)), whole)
    assert same(add(task.statistics(b), task.statistics(a)), whole)
    n = rows.num_rows  # three uneven parts (70, 100, 70 of 240 rows)
    cuts = (n * 7 // 24, n * 17 // 24)
    thirds = [rows.slice(0, cuts[0]), rows.slice(cuts[0], cuts[1] - cuts[0]), rows.slice(cuts[1])]
    parts = [task.statistics(t) for t in thirds]
    assert same(add(add(parts[2], parts[0]), parts[1]), whole)
    assert task.finalize(add(task.statistics(a), task.statistics(b))) == task.finalize(whole)


def test_statistics_survive_the_part_file_codec(scored):
    task, rows = scored
    stats = task.statistics(rows)
    back = codec.decode(codec.encode(stats))
    assert same(back, stats) and task.finalize(back) == task.finalize(stats)


def test_predictions_keep_each_row_once_with_row_first(scored):
    task, rows = scored
    preds = task.predictions(rows)
    assert preds.column_names[0] == ROW and preds[ROW].to_pylist() == list(range(rows.num_rows))
    assert not [c for c in preds.column_names if c.startswith("_")]  # intermediates never written


def test_the_task_travels_without_a_model(scored):
    task, _ = scored
    blob = pickle.dumps(task)
    assert b"torch" not in blob and len(blob) < 200_000
    assert pickle.loads(blob).finalize(task.statistics(scored[1])) == task.finalize(
        task.statistics(scored[1])
    )
