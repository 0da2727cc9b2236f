"""A segmentation sweep: the same SweepSpec, Tune, ASHA, checkpoints and export as classification."""

import json
from pathlib import Path

import pytest

from cluster.data.segmentation_sample import CLASSES, sample_segmentation_splits
from cluster.errors import UserError
from cluster.models.modality import load_trained
from cluster.models.modeldir import read_lineage
from cluster.models.segmenter import Segmenter
from cluster.registry.record import Registry
from cluster.specs.parse import load_spec_file
from cluster.specs.search_space import SearchSpace
from cluster.specs.workloads import DataSpec, ResourcesSpec, SchedulerSpec, SweepSpec
from jobs.sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    sample_segmentation_splits(out, seed=0, sizes={"train": 24, "validation": 8, "test": 8})
    return out


def seg_sweep(scenes, **kw) -> SweepSpec:
    spec = dict(
        task="segmentation",
        classes=CLASSES,
        model="efficientnet-lite0",
        image_size=64,
        train=DataSpec(path=str(scenes / "train.parquet")),
        validation=DataSpec(path=str(scenes / "validation.parquet")),
        search=SearchSpace(learning_rate=3e-3, batch_size=12, epochs=1, dice_weight=0.5),
        scheduler=SchedulerSpec(kind="none"),
        num_samples=1,
        resources=ResourcesSpec(cpus=1),
        precision="fp32",
    )
    return SweepSpec(**{**spec, **kw})


def test_default_config_is_a_valid_segmentation_sweep():
    spec = load_spec_file(SweepSpec, ROOT / "jobs" / "configs" / "sweep_segmentation.yaml")
    assert spec.task == "segmentation" and spec.metric == "miou" and spec.classes == CLASSES
    assert spec.metric_mode == "max"


def test_bad_pairs_and_wrong_models_stop_before_any_trial(scenes, tmp_path, tiny_image_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.sweep import load_splits

    t = pq.read_table(scenes / "validation.parquet")
    masks = t["mask"].to_pylist()
    masks[3] = t["image"][3].as_py()  # an RGB image where a mask belongs
    pq.write_table(t.set_column(1, "mask", pa.array(masks, pa.binary())), tmp_path / "bad.parquet")
    spec = seg_sweep(scenes, validation=DataSpec(path=str(tmp_path / "bad.parquet")))
    from cluster.models.resolve import resolve_model

    base = resolve_model("efficientnet-lite0")
    with pytest.raises(UserError, match="^row 3: mask has mode RGB, not a label map"):
        load_splits(spec, base.modality, base.path)
    with pytest.raises(UserError, match="is a classification model"):
        load_splits(seg_sweep(scenes, model=str(tiny_image_model_dir)), "image", tiny_image_model_dir)


@pytest.mark.ray
def test_segmentation_sweep_registers_a_segmentation_model(ray_cluster, scenes):
    summary = run_sweep(seg_sweep(scenes, name="seg", init="random"))
    assert summary["metric"] == "miou" and 0 <= summary["miou"] <= 1
    best = Registry().resolve_model("best")
    assert best["id"] == summary["model_id"]
    seg = load_trained(best["path"])
    assert isinstance(seg, Segmenter) and seg.labels == CLASSES
    assert json.loads((Path(best["path"]) / "config.json").read_text())["task"] == "segmentation"
    lineage = read_lineage(best["path"])
    assert lineage["init"] == "random" and lineage["trial_config"]["dice_weight"] == 0.5
    (curve,) = summary["curves"]
    assert curve["epoch"] == [0.5, 1.0] and len(curve["miou"]) == 2
    assert set(summary["validation"]) >= {"miou", "epoch"}


def test_a_trial_checkpoint_resumes_the_segmenter_and_its_optimizer(tmp_path):
    """What a resumed trial loads (cluster/tune/trial.py): the checkpoint's model, whatever the init,
    and the optimizer and schedule states at the checkpoint's step."""
    import numpy as np
    import torch

    from cluster.models.modality import load_for_training, save_checkpoint
    from cluster.specs.search_space import TrialParams
    from cluster.train.checkpoint import save_trainer_state
    from cluster.train.step import make_optimizer
    from cluster.tune.trial import TrialContext, _restore, _start_model

    hp = TrialParams(learning_rate=1e-3, weight_decay=0.01, warmup_ratio=0.1)
    seg = load_for_training("unused", CLASSES, init="random", image_size=32, task="segmentation")
    opt, sched = make_optimizer(seg.model, hp, 10)
    batch = seg.encode(np.zeros((2, 3, 32, 32), np.uint8), np.arange(2))
    seg.model.train()
    seg.loss(batch, torch.zeros(2, 32, 32, dtype=torch.long), hp).backward()
    opt.step()
    sched.step()
    save_checkpoint(seg, tmp_path)  # what a trial's report writes (TrialRun.reporter)
    save_trainer_state(tmp_path, opt, sched, step=1)
    spec = seg_sweep(Path("unused"), image_size=32, init="random")
    ctx = TrialContext(spec, "efficientnet-lite0", CLASSES, None, None)
    again = _start_model(tmp_path, ctx, 0, "cpu")
    assert isinstance(again, Segmenter)
    for (name, a), b in zip(seg.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    opt2, sched2 = make_optimizer(again.model, hp, 10)
    assert _restore(tmp_path, opt2, sched2) == 1
    assert sched2.get_last_lr() == sched.get_last_lr()
