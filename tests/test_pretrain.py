"""Masked-LM continued pretraining with a tiny random BERT."""

import pandas as pd
import pytest

from cluster.errors import UserError
from cluster.models.modeldir import classifier_labels, read_lineage
from cluster.models.text import load_classifier
from cluster.registry.record import Registry
from cluster.specs.parse import load_spec
from cluster.specs.pretrain import PretrainSpec
from cluster.specs.workloads import TextSpec
from jobs.pretrain import run_pretrain

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def texts(sample_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("mlm") / "texts.parquet"
    pd.read_parquet(sample_dir / "train.parquet").head(400)[["text"]].to_parquet(path)
    return path


def spec_for(texts, tiny_model_dir, **kw):
    base = {
        "epochs": 2,
        "learning_rate": 1e-3,
        "batch_size": 16,
        "max_length": 32,
        "heldout_fraction": 0.1,
        "precision": "fp32",
        "workers": 1,  # one process: never looks for (or joins) a Ray cluster
    }
    return PretrainSpec(data=TextSpec(path=str(texts)), model=str(tiny_model_dir), **{**base, **kw})


@pytest.mark.heavy
def test_perplexity_falls_and_output_is_a_sweepable_encoder(texts, tiny_model_dir):
    result = run_pretrain(spec_for(texts, tiny_model_dir))
    assert result["perplexity_after"] < result["perplexity_before"]
    assert result["train_texts"] == 360 and result["heldout_texts"] == 40
    assert classifier_labels(result["path"]) is None  # a bare encoder + MLM head
    model, _, labels = load_classifier(result["path"], labels=LABELS)  # what `sweep` does with it
    assert labels == LABELS and model.config.num_labels == 3
    lineage = read_lineage(result["path"])
    assert lineage["stage"] == "mlm" and lineage["base_model"] == str(tiny_model_dir)
    assert Registry().resolve_model(result["model_id"])["path"] == result["path"]


@pytest.mark.ray
def test_data_parallel_with_ray_train(ray_cluster, texts, tiny_model_dir):
    result = run_pretrain(spec_for(texts, tiny_model_dir, workers=2))
    assert result["perplexity_after"] < result["perplexity_before"]
    assert classifier_labels(result["path"]) is None


@pytest.mark.parametrize(
    "change, match",
    [
        ({"mlm_probability": 1.5}, "mlm_probability: must be < 1, got 1.5"),
        ({"epochs": 0}, "epochs: must be >= 1, got 0"),
        ({"heldout_fraction": 0}, "heldout_fraction: must be > 0, got 0"),
    ],
)
def test_bad_arguments(texts, tiny_model_dir, change, match):
    raw = spec_for(texts, tiny_model_dir).model_dump()
    with pytest.raises(UserError, match=match):
        load_spec(PretrainSpec, {**raw, **change})
