"""Reading shards through Ray Data on the shared local cluster."""

import pandas as pd
import pytest

from cluster.data.shards import to_ray_dataset
from cluster.specs.workloads import DataSpec

pytestmark = pytest.mark.ray


def test_ray_dataset_keeps_rows_and_columns(ray_cluster, tmp_path):
    df = pd.DataFrame({"body": [f"t{i}" for i in range(50)], "gold": ["x", "y"] * 25, "key": range(100, 150)})
    df.to_parquet(tmp_path / "d.parquet", row_group_size=7)
    spec = DataSpec(
        path=str(tmp_path / "d.parquet"), text_column="body", label_column="gold", id_column="key"
    )
    ds = to_ray_dataset(spec, limit=40, rows_per_shard=7)
    got = ds.to_pandas().sort_values("row")
    assert got["row"].tolist() == list(range(40))
    assert got["text"].tolist() == df["body"][:40].tolist()
    assert got["id"].tolist() == list(range(100, 140))
    assert ds.materialize().num_blocks() >= 5  # one block per shard: work spreads across workers


def test_workers_get_explicit_torch_threads(ray_cluster):
    from cluster.ray.runtime import worker_threads

    @ray_cluster.remote(num_cpus=2)
    def threads():
        return worker_threads()

    assert ray_cluster.get(threads.remote()) == 2
