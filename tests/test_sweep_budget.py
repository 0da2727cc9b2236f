"""A sweep's budget in optimizer steps (issue 28, point 13).

The default image recipe (3 epochs, linear decay) on a 1,100-image set reached 0.46 validation
accuracy: 3 epochs there are 54 optimizer steps (10 epochs reached 0.997). A sweep's trials now
take at least ``min_steps`` steps (the image recipe sets 300: their epochs are raised on small
data), and a sweep without it whose trials take far too few steps is warned before it starts.
"""

from pathlib import Path

import pytest

from cluster.specs.parse import load_spec_file
from cluster.specs.search_space import Grid, SearchSpace
from cluster.specs.workloads import SweepSpec
from cluster.train.loop import budget_epochs
from cluster.tune.search import budget_note, most_epochs
from jobs.sweep import say_budget
from tests.mn_helpers import tiny_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"


def image_recipe(**kw) -> SweepSpec:
    spec = load_spec_file(SweepSpec, CONFIGS / "sweep_images.yaml")
    return spec.model_copy(update=kw)


def test_the_epochs_a_trial_trains_reach_min_steps_on_small_data():
    assert budget_epochs(3, 1100, 64, 300) == 17  # 18 steps per epoch: 306 steps
    assert budget_epochs(3, 7772, 64, 300) == 3  # the sample set: 366 steps already
    assert budget_epochs(3, 1100, 64, 0) == 3 and budget_epochs(3, 10, 64, 5) == 5  # 1 step/epoch
    recipe = image_recipe()
    assert recipe.min_steps == 300  # the default image recipe is sized in steps
    assert most_epochs(recipe, 1100) == 17 and most_epochs(recipe, 7772) == 3
    grid = recipe.model_copy(
        update={"search": SearchSpace(epochs=Grid(grid=[2, 3]), batch_size=Grid(grid=[32, 64]))}
    )
    assert most_epochs(grid, 1100) == 17  # the longest trial: ASHA's max_t counts its validations


def test_a_small_budget_is_said_before_the_sweep_starts(capsys):
    recipe = image_recipe()
    assert budget_note(recipe, 7772) is None
    note = budget_note(recipe, 1100)
    assert note == (
        "note: 1,100 training rows / batch_size 64 x 3 epochs = 54 optimizer steps, below min_steps "
        "300: such a trial trains 17 epochs"
    )
    warning = budget_note(recipe.model_copy(update={"min_steps": 0}), 1100)
    assert warning.startswith("warning: 1,100 training rows / batch_size 64 x 3 epochs = 54 optimizer steps")
    assert "set min_steps: 300" in warning
    say_budget(recipe, 1100)
    assert capsys.readouterr().err.strip() == note


@pytest.mark.ray
def test_a_trial_trains_the_raised_epochs(ray_cluster, tiny_model_dir, sample_dir, tmp_path):
    """40 training rows, batch 16: 3 steps an epoch; min_steps 7 raises 1 epoch to 3 (9 steps)."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.result import RESULT_DUPLICATE

    from cluster.tune.search import param_space
    from cluster.tune.setup import make_trainable
    from cluster.tune.trial import TrialContext
    from jobs.sweep import load_splits

    spec = tiny_sweep(
        tiny_model_dir, sample_dir, tmp_path, max_train_rows=40, max_validation_rows=24, evals_per_epoch=1,
        min_steps=7, search=SearchSpace(learning_rate=1e-4, batch_size=16, epochs=1, max_length=32),
    )  # fmt: skip
    spec = spec.model_copy(update={"precision": "fp32"})
    train, val, labels, _ = load_splits(spec)
    cls = make_trainable(TrialContext(spec, spec.model, labels, train, val), cpus=1, gpus=0)
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="t")
    trial = cls(config={**param_space(spec), "seed": 0}, storage=storage)
    results = []
    for _ in range(10):
        result = trial.train()
        if RESULT_DUPLICATE in result:
            break
        results.append(result)
    trial.stop()
    assert [(r["epoch"], r["step"]) for r in results] == [(1.0, 3), (2.0, 6), (3.0, 9)]
