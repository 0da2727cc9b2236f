"""The same sweep for images: a new head on EfficientNet-Lite0, pretrained or random init, then evaluate."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.evaluation.run import run_evaluate
from cluster.models.modality import load_for_training, load_trained
from cluster.models.modeldir import read_lineage
from cluster.registry.record import Registry
from cluster.specs.search_space import SearchSpace
from cluster.specs.workloads import DataSpec, EvaluateSpec, ResourcesSpec, SchedulerSpec, SweepSpec
from jobs.sweep import run_sweep

LABELS = ["one", "two", "zero"]  # the sweep sorts the training labels


@pytest.fixture(scope="module")
def digit_splits(digits_images, tmp_path_factory):
    """The 150 digits as train (first 100) and validation (last 50), columns image and label."""
    table = pq.read_table(digits_images).rename_columns(["image", "label", "pid"])
    out = tmp_path_factory.mktemp("digit-splits")
    pq.write_table(table.slice(0, 100), out / "train.parquet")
    pq.write_table(table.slice(100), out / "validation.parquet")
    return out


def image_sweep(splits, **kw) -> SweepSpec:
    spec = dict(
        model="efficientnet-lite0",
        image_size=32,
        train=DataSpec(path=str(splits / "train.parquet")),
        validation=DataSpec(path=str(splits / "validation.parquet")),
        search=SearchSpace(learning_rate=1e-3, batch_size=25, epochs=2),
        scheduler=SchedulerSpec(kind="none"),
        num_samples=1,
        resources=ResourcesSpec(cpus=1),
        metric="accuracy",
        precision="fp32",
    )
    return SweepSpec(**{**spec, **kw})


@pytest.mark.ray
def test_image_sweep_registers_an_image_model_with_learning_curves(ray_cluster, digit_splits, tmp_path):
    summary = run_sweep(image_sweep(digit_splits, name="img", init="random"))
    best = Registry().resolve_model("best")
    assert best["id"] == summary["model_id"]
    clf = load_trained(best["path"])
    assert clf.modality == "image" and clf.labels == LABELS
    assert clf.model.config.preprocessing.image_size == 32
    lineage = read_lineage(best["path"])
    assert lineage["init"] == "random" and lineage["base_model"] == "efficientnet-lite0"
    (curve,) = summary["curves"]
    assert curve["epoch"] == [0.5, 1.0, 1.5, 2.0] and len(curve["accuracy"]) == 4
    report = Path(summary["report"]).read_text()
    assert "<svg" in report and "init: random" in report
    # The registered model evaluates through the same pipeline.
    result = run_evaluate(
        EvaluateSpec(
            model="best",
            data=DataSpec(path=str(digit_splits / "validation.parquet")),
            out=str(tmp_path / "ev"),
        )
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 50 and result.metrics["accuracy"] == pytest.approx(metrics["accuracy"])


def test_random_init_differs_from_pretrained_and_keeps_the_head_seed():
    from cluster.models.resolve import resolve_model

    ref = resolve_model("efficientnet-lite0")
    assert ref.modality == "image" and ref.labels is None
    pre = load_for_training(ref.path, LABELS, init="pretrained", image_size=32)
    rnd = load_for_training(ref.path, LABELS, init="random", image_size=32)
    p, r = pre.model.state_dict(), rnd.model.state_dict()
    stem = "net._conv_stem.weight"
    assert not p[stem].equal(r[stem])
    assert p["net._fc.weight"].equal(r["net._fc.weight"])  # same seed, same new head


def test_text_random_init_is_the_same_architecture_with_fresh_weights():
    from cluster.models.modeldir import base_model_dir

    pre = load_for_training(base_model_dir(), ["negative", "neutral", "positive"])
    rnd = load_for_training(base_model_dir(), ["negative", "neutral", "positive"], init="random")
    assert type(pre.model) is type(rnd.model) and pre.model.config.to_dict() == rnd.model.config.to_dict()
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not pre.model.state_dict()[name].equal(rnd.model.state_dict()[name])


def test_sweep_report_draws_pretrained_and_random_curves_in_one_figure(tmp_path):
    """The learning-curve figure is a cluster/report/figures.py SVG in a Jinja2 page: one line per trial,
    coloured by init, and it renders in a browser with something drawn."""
    from cluster.report.figures import INIT_COLORS
    from cluster.report.sweep import write_sweep_report
    from tests.browser import assert_renders

    def summary(run_id, init, curves):
        return {"run_id": run_id, "init": init, "metric": "accuracy", "accuracy": 0.9, "curves": curves}

    curve = {"trial_id": "t<1>", "epoch": [0.5, 1.0], "accuracy": [0.4, 0.8]}
    path = write_sweep_report(
        [
            summary("pre", "pretrained", [curve, {**curve, "trial_id": "t2"}]),
            summary("rnd", "random", [curve]),
        ],
        tmp_path / "report.html",
    )
    html = path.read_text()
    assert html.count("<polyline") == 3 and "t&lt;1&gt;" not in html  # trials are not in the legend
    assert html.count(f'stroke="{INIT_COLORS["pretrained"]}"') == 2
    assert html.count(f'stroke="{INIT_COLORS["random"]}"') == 1
    found = assert_renders(path, min_figures=1)
    assert found["figures"][0]["drawn"] > 0 and "init: pretrained" in html and "init: random" in html


def test_a_learning_curve_has_one_point_per_validation_a_resumed_trial_included():
    """A trial resumed from a checkpoint the driver never recorded reports that validation again
    (cluster/tune/trial.py): the curve keeps one point for it, and a trial with no table has no points."""
    from types import SimpleNamespace

    import pandas as pd

    from cluster.tune.export import _curve

    df = pd.DataFrame({"epoch": [0.5, 1.0, 1.0, 1.5], "accuracy": [0.4, 0.6, 0.6, 0.7]})
    curve = _curve(SimpleNamespace(metrics={"trial_id": "t1"}, metrics_dataframe=df), "accuracy")
    assert curve == {"trial_id": "t1", "epoch": [0.5, 1.0, 1.5], "accuracy": [0.4, 0.6, 0.7]}
    empty = _curve(SimpleNamespace(metrics={"trial_id": "t2"}, metrics_dataframe=None), "accuracy")
    assert empty == {"trial_id": "t2", "epoch": [], "accuracy": []}
