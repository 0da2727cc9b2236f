"""What a trial receives from Ray Tune is validated where it starts, against the spec's ranges."""

import numpy as np
import pytest
from pydantic import ValidationError

from cluster.specs.search_space import SearchSpace, TrialParams

POINT = {
    "learning_rate": 5e-5,
    "batch_size": 32,
    "epochs": 2,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "max_length": 64,
    "seed": 0,
}


def test_a_point_arrives_typed_numpy_scalars_included():
    params = TrialParams.of({**POINT, "batch_size": np.int64(16), "learning_rate": np.float64(1e-4)})
    assert params.batch_size == 16 and type(params.batch_size) is int
    assert params.learning_rate == 1e-4 and type(params.learning_rate) is float


@pytest.mark.parametrize(
    "bad",
    [{"batch_size": 0}, {"learning_rate": -1.0}, {"warmup_ratio": 1.5}, {"epochs": "2"}, {"batch_size": 2.5}],
)
def test_a_value_outside_the_spec_range_is_refused(bad):
    with pytest.raises(ValidationError):
        TrialParams.of({**POINT, **bad})


def test_a_distribution_is_not_a_point():
    with pytest.raises(ValidationError, match="one value per parameter; learning_rate"):
        TrialParams.of({**POINT, "learning_rate": {"loguniform": [1e-5, 1e-4]}})


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError):
        TrialParams.of({**POINT, "learnign_rate": 1e-4})


def test_the_params_are_the_search_space_fields():
    assert set(TrialParams.model_fields) == set(SearchSpace.model_fields)
