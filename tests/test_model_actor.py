"""The model actor (cluster/evaluation/predictor.py: ModelActor) as a warm evaluation reuses it: each run sets
its torch threads, and the report's token attributions come from it, not a second model copy."""

from dataclasses import asdict

import pandas as pd
import pytest

from cluster.data.shards import plan_shards
from cluster.models.cache import ModelSource
from cluster.models.explain import token_attributions
from cluster.models.text import load_classifier
from cluster.specs.workloads import DataSpec, EvaluateSpec
from tests.conftest import LABELS

pytestmark = pytest.mark.ray


@pytest.fixture
def warm_actor(ray_cluster, tiny_model_dir):
    """A model actor made as the warm pool makes them: no CPU reserved, 2 torch threads."""
    from cluster.evaluation.predictor import ModelActor

    spec = EvaluateSpec(model=str(tiny_model_dir), data=DataSpec(path="unused.parquet"))
    source = ModelSource(str(tiny_model_dir), "tiny")
    actor = ray_cluster.remote(ModelActor).options(num_cpus=0).remote(source, LABELS, spec, 0.0, 2)
    yield actor
    ray_cluster.kill(actor)


def test_each_run_sets_the_warm_actors_threads(ray_cluster, warm_actor, sample_dir, tmp_path):
    data = DataSpec(path=str(tmp_path / "rows.parquet"))
    pd.read_parquet(sample_dir / "test.parquet").head(40).to_parquet(data.path)
    spec = EvaluateSpec(model="unused", data=data, bootstrap=0)
    shard = asdict(plan_shards(data)[1][0])
    assert ray_cluster.get(warm_actor.ready.remote())["threads"] == 2  # the run that made it: 1 x 2
    tables = {}
    for threads in (1, 2, 1):  # later runs with 2 actors x 1 thread, 1 x 2, 2 x 1
        tables[threads] = ray_cluster.get(warm_actor.score.remote(shard, spec, data, None, threads))
        assert ray_cluster.get(warm_actor.ready.remote())["threads"] == threads
    assert tables[1].num_rows == 40 and tables[1]["pred"].equals(tables[2]["pred"])
    ray_cluster.get(warm_actor.score.remote(shard, spec, data))  # no threads given: left as they are
    assert ray_cluster.get(warm_actor.ready.remote())["threads"] == 1


def test_attributions_by_the_model_actor_equal_a_fresh_load(ray_cluster, warm_actor, tiny_model_dir):
    texts = ["my bag was lost again", "great crew, on time"]
    got = ray_cluster.get(warm_actor.explain.remote(texts, 64, 1))
    model, tokenizer, _ = load_classifier(tiny_model_dir)
    want = [token_attributions(model, tokenizer, t, max_length=64) for t in texts]
    assert [a["tokens"][1]["token"] for a in got] == ["my", "great"]
    for a, b in zip(got, want, strict=True):
        assert [t["token"] for t in a["tokens"]] == [t["token"] for t in b["tokens"]]
        assert [t["attribution"] for t in a["tokens"]] == pytest.approx(
            [t["attribution"] for t in b["tokens"]], rel=1e-5, abs=1e-7
        )
    assert ray_cluster.get(warm_actor.ready.remote())["threads"] == 1
