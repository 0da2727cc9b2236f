"""The model stage's model: a warm model actor serves later runs with their own settings (torch
threads), and the mistakes' token attributions computed in the model stage equal a fresh load's."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cluster.evaluation.classify_columns import TOKENS
from cluster.evaluation.tasks import classification
from cluster.evaluation.warm import WarmModel
from cluster.models.explain import token_attributions
from cluster.models.resolve import resolve_model
from cluster.models.text import load_classifier
from cluster.specs.workloads import DataSpec, EvaluateSpec
from cluster.stats.analyses import Analyses
from tests.conftest import LABELS


def task_for_rows(model_dir, threads=None, mistakes=0):
    spec = EvaluateSpec(
        model=str(model_dir), data=DataSpec(path="unused.parquet"), bootstrap=0, precision="fp32"
    )
    analyses = Analyses(num_classes=3, threshold=False, mistakes=mistakes)
    task = classification(spec, resolve_model(str(model_dir)), LABELS, spec.data, analyses)
    task.threads = threads
    return task


def block_of(sample_dir, n=40) -> pa.Table:
    df = pd.read_parquet(sample_dir / "test.parquet").head(n)
    return pa.table({"row": pa.array(range(n), pa.int64()), "text": df["text"], "label": df["label"]})


@pytest.mark.ray
def test_a_warm_actor_serves_each_run_with_that_runs_threads(ray_cluster, tiny_model_dir, sample_dir):
    """A warm actor reserves no CPU, so Ray's hint is not its own: each run says how many threads its
    layout gives an actor (2 actors x 1 thread or 1 x 2 on 2 CPUs), and the predictions stay the same."""
    made = task_for_rows(tiny_model_dir, threads=2)
    actor = ray_cluster.remote(WarmModel).options(num_cpus=0).remote(made, 0.0)
    try:
        assert ray_cluster.get(actor.ready.remote())["threads"] == 2  # the run that made it: 1 x 2
        block = made.preprocess(block_of(sample_dir))
        probs = {}
        for threads in (1, 2, 1):  # later runs with 2 actors x 1 thread, 1 x 2, 2 x 1
            run = task_for_rows(tiny_model_dir, threads=threads)
            out = ray_cluster.get(actor.predict.remote(block, run))
            assert ray_cluster.get(actor.ready.remote())["threads"] == threads
            probs[threads] = np.stack(out["probs"].to_numpy(zero_copy_only=False))
        assert out.num_rows == 40 and np.allclose(probs[1], probs[2], atol=1e-6)
    finally:
        ray_cluster.kill(actor)


def test_the_mistakes_attributions_equal_a_fresh_load(tiny_model_dir, sample_dir):
    """The model stage attributes each row entering its running top-k of a confused pair (the
    report's examples are among them), with the model it holds: the same numbers as a fresh load."""
    task = task_for_rows(tiny_model_dir, threads=1, mistakes=3)
    out = task.load("cpu").predict(task.preprocess(block_of(sample_dir)))
    tokens = out[TOKENS].to_pylist()
    texts = out["text"].to_pylist()
    chosen = [i for i, t in enumerate(tokens) if t is not None]
    assert chosen, "no mistake was attributed"
    model, tokenizer, _ = load_classifier(tiny_model_dir)
    for i in chosen[:4]:
        want = token_attributions(model, tokenizer, texts[i], max_length=task.spec.max_length)["tokens"]
        got = json.loads(tokens[i])
        assert [t["token"] for t in got] == [t["token"] for t in want]
        assert [t["attribution"] for t in got] == pytest.approx(
            [t["attribution"] for t in want], rel=1e-5, abs=1e-7
        )
    # Only mistakes are attributed, at most 3 per confused pair a batch entering the top 3.
    probs = np.stack(out["probs"].to_numpy(zero_copy_only=False))
    labels = [LABELS.index(lab) for lab in out["label"].to_pylist()]
    assert all(probs[i].argmax() != labels[i] for i in chosen)
