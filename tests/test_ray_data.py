"""What Ray Data does for the evaluation: the planned blocks read as a Datasource, the stages it
plans (the CPU stage fused with the read, the model stage an autoscaled actor pool of its own),
and the Python API on a ray.data.Dataset."""

import json

import numpy as np
import pandas as pd
import pytest

from cluster.data.blocks import BlocksDatasource, plan_blocks
from cluster.evaluation.api import evaluate
from cluster.evaluation.pipeline import Layout, build, read_blocks
from cluster.evaluation.tasks import classification
from cluster.models.resolve import resolve_model
from cluster.registry.predictions import read_predictions
from cluster.specs.workloads import DataSpec, EvaluateSpec
from tests.conftest import LABELS

pytestmark = pytest.mark.ray


def test_blocks_datasource_keeps_rows_columns_and_the_planned_layout(ray_cluster, tmp_path):
    df = pd.DataFrame({"body": [f"t{i}" for i in range(50)], "gold": ["x", "y"] * 25, "key": range(100, 150)})
    df.to_parquet(tmp_path / "d.parquet", row_group_size=7)
    spec = DataSpec(
        path=str(tmp_path / "d.parquet"), text_column="body", label_column="gold", id_column="key"
    )
    _, blocks = plan_blocks(spec, limit=40, rows_per_block=8)
    source = BlocksDatasource(blocks, {"text": "body", "label": "gold", "id": "key"})
    ds = ray_cluster.data.read_datasource(source, override_num_blocks=len(blocks))
    got = ds.to_pandas().sort_values("row")
    assert got["row"].tolist() == list(range(40))
    assert got["text"].tolist() == df["body"][:40].tolist() and got["id"].tolist() == list(range(100, 140))
    assert [b.offset for b in blocks] == list(range(0, 40, 8))
    assert ds.materialize().num_blocks() == len(blocks) == 5  # one block per planned block, never split


def test_the_cpu_stage_runs_with_the_read_and_the_model_stage_in_its_own_actor_pool(
    ray_cluster, tiny_model_dir, sample_dir
):
    spec = EvaluateSpec(model=str(tiny_model_dir), data=DataSpec(path=str(sample_dir / "test.parquet")))
    task = classification(spec, resolve_model(str(tiny_model_dir)), LABELS, spec.data)
    _, blocks = plan_blocks(spec.data, 100, 1024)
    layout = Layout(min_actors=1, max_actors=1, cpus_per_actor=1, gpus_per_actor=0, cpu_tasks=1, task_cpus=0)
    # read_blocks asks for one read task per block: Ray Data would otherwise split the block (and
    # then neither fuse the CPU stage with the read nor keep the layout).
    ds = build(read_blocks(blocks, task, layout), task, spec, layout)
    out = ds.materialize()
    stats = out.stats()
    assert "ReadBlocks->MapBatches(preprocess)" in stats, stats  # fused: no block between them
    assert "MapBatches(ModelStage)" in stats and "ReadBlocks->MapBatches(preprocess)->" not in stats, stats
    table = out.to_pandas()
    assert sorted(table["row"]) == list(range(100)) and table["probs"].map(len).eq(3).all()


@pytest.fixture(scope="module")
def rows(sample_dir, tmp_path_factory):
    df = pd.read_parquet(sample_dir / "test.parquet").head(120).rename(columns={"text": "tweet"})
    path = tmp_path_factory.mktemp("api") / "rows.parquet"
    df.to_parquet(path)
    return path, df


def test_the_python_api_on_a_path_and_on_a_ray_dataset_gives_the_same_result(
    ray_cluster, tiny_model_dir, rows, tmp_path
):
    path, df = rows
    options = {"text_column": "tweet", "bootstrap": 50, "precision": "fp32", "batch_size": 16}
    on_path = evaluate(path, str(tiny_model_dir), out=str(tmp_path / "path"), **options)
    ds = ray_cluster.data.read_parquet(str(path))  # no row column: numbered in the dataset's order
    on_ds = evaluate(ds, str(tiny_model_dir), out=str(tmp_path / "ds"), **options)
    for result in (on_path, on_ds):
        assert result.metrics["n"] == 120 and result.run_id and result.out
        assert json.loads((tmp_path / ("path" if result is on_path else "ds") / "metrics.json").read_text())
    for key in ("confusion_matrix", "f1_macro", "accuracy", "ci95", "roc_auc_macro"):
        assert on_ds.metrics[key] == on_path.metrics[key], key
    a, b = read_predictions(on_path.predictions), read_predictions(on_ds.predictions)
    assert a["row"].tolist() == b["row"].tolist() == list(range(120))
    assert np.array_equal(np.stack(a["probs"]), np.stack(b["probs"]))
    assert on_ds.metrics["dataset"]["path"] == "ray.data.Dataset"
    # A dataset that carries its own row ids keeps them.
    df.assign(row=range(1000, 1120)).to_parquet(tmp_path / "ids.parquet")
    own = evaluate(ray_cluster.data.read_parquet(str(tmp_path / "ids.parquet")), str(tiny_model_dir),
                   out=str(tmp_path / "own"), **options)  # fmt: skip
    assert read_predictions(own.predictions)["row"].tolist() == list(range(1000, 1120))
