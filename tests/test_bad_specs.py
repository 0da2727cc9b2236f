"""Bad values fail before Ray starts: one line, exit 2, nothing recorded (issue 16, point 7).

Each YAML below was accepted by the earlier dataclass specs: the sweep started Ray
and ended in a traceback (exit 1) with a failed run in the registry, or (epochs
drawn from a uniform distribution, an empty file) ran something the user did not ask for.
"""

import pytest

from cluster.errors import UserError
from cluster.registry.record import Registry
from cluster.specs.parse import load_spec_file
from cluster.specs.workloads import SweepSpec

BAD_SWEEPS = [
    ("search: {batch_size: -8}", "search.batch_size: must be >= 1, got -8"),
    ("search: {epochs: 0}", "search.epochs: must be >= 1, got 0"),
    ("search: {learning_rate: -1.0e-5}", "search.learning_rate: must be > 0, got -1e-05"),
    ("search: {learning_rate: {uniform: [1.0e-4, 1.0e-5]}}", "uniform needs [low, high] with low < high"),
    ("search: {seed: {randint: [10, 1]}}", "randint needs [low, high] with low < high"),
    ("search: {learning_rate: {loguniform: [0, 1.0e-4]}}", "loguniform needs low > 0"),
    ("scheduler: {grace_period: 0}", "scheduler.grace_period: must be >= 1, got 0"),
    ("resources: {cpus: -1}", "resources.cpus: must be > 0, got -1"),
    ("resources: {gpus: -1}", "resources.gpus: must be >= 0, got -1"),
    ("max_concurrent_trials: -2", "max_concurrent_trials: must be >= 1, got -2"),
    ("metric: f1_macr", 'unknown metric "f1_macr" (did you mean "f1_macro"?)'),
    ("search: {weight_decay: -0.1}", "search.weight_decay: must be >= 0, got -0.1"),
    (
        "search: {epochs: {uniform: [1, 2]}}",
        "search.epochs: takes integers, but uniform draws fractional values",
    ),
    ("search: {batch_size: {choice: [16, 0]}}", "search.batch_size: must be >= 1, got 0 (in choice)"),
    ("search_alg: optuna\nsearch: {learning_rate: {grid: [1.0e-4, 2.0e-4]}}", "search_alg optuna"),
    ("", "the file is empty"),
    # issue 28, point 1: non-finite and absurd values, a key written twice
    ("search: {learning_rate: .inf}", "search.learning_rate: must be a finite number, got inf"),
    ("search: {weight_decay: .inf}", "search.weight_decay: must be a finite number, got inf"),
    ("search: {warmup_ratio: .nan}", "search.warmup_ratio: must be a finite number, got nan"),
    (
        "search: {learning_rate: {loguniform: [1.0e-5, .inf]}}",
        "search.learning_rate.loguniform.1: must be a finite number, got inf",
    ),
    ("search: {learning_rate: {choice: [1.0e-5, .inf]}}", "must be a finite number, got inf (in choice)"),
    ("search: {epochs: 1000000000000}", "search.epochs: must be <= 1000, got 1000000000000"),
    ("search: {learning_rate: 5.0}", "search.learning_rate: must be <= 1, got 5.0"),
    (
        "search: {seed: {randint: [0, 100000000000]}}",
        "search.seed: must be <= 4294967295, got 99999999999 (in randint)",
    ),
    ("resources: {cpus: .inf}", "resources.cpus: must be a finite number, got inf"),
    ("num_samples: 100000000", "num_samples: must be <= 10000, got 100000000"),
    ("search: {epochs: 1}\nnum_samples: 2\nsearch: {epochs: 3}", "line 3: duplicate key 'search'"),
    ("search:\n  epochs: 1\n  epochs: 3", "line 3: duplicate key 'epochs'"),
]


@pytest.mark.parametrize("text, message", BAD_SWEEPS, ids=[m[:40] for _, m in BAD_SWEEPS])
def test_bad_sweep_spec_is_one_line(tmp_path, text, message):
    f = tmp_path / "sweep.yaml"
    f.write_text(text + "\n")
    with pytest.raises(UserError) as err:
        load_spec_file(SweepSpec, f)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("sweep.yaml")


@pytest.mark.cli
@pytest.mark.parametrize("text, message", BAD_SWEEPS, ids=[m[:40] for _, m in BAD_SWEEPS])
def test_bad_sweep_yaml_exits_2_before_ray_with_nothing_recorded(
    evalctl, tmp_path, evalcluster_home, text, message
):
    f = tmp_path / "sweep.yaml"
    f.write_text(text + "\n")
    proc = evalctl("sweep", "--config", f)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()  # one line: no Ray start-up logs, no traceback
    assert line.startswith("error: sweep.yaml") and message in line, line
    assert not (evalcluster_home / "registry.db").exists() or Registry().list_runs() == []


@pytest.mark.cli
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_option_is_refused(evalctl, value, evalcluster_home):
    proc = evalctl("evaluate", "--data", "x.csv", "--keep-warm-s", value)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: --keep-warm-s: must be a finite number, got {float(value)!r}"


def test_a_wide_randint_is_checked_by_its_extremes():
    """Its values were listed to check them: [0, 2**32] took gigabytes and the OOM killer."""
    spec = SweepSpec.model_validate({"search": {"seed": {"randint": [0, 2**32]}}})
    assert spec.search.seed.randint == [0, 2**32]


def test_duplicate_key_in_spec_json_is_refused():
    from jobs.spec_cli import _json

    with pytest.raises(UserError, match="--spec-json: duplicate key 'model'"):
        _json('{"model": "a", "data": {"path": "x"}, "model": "b"}')


@pytest.mark.cli
@pytest.mark.parametrize("value", ["0", "-5"])
def test_compare_bootstrap_must_be_positive(evalctl, value):
    proc = evalctl("compare", "run-a", "run-b", "--bootstrap", value)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --bootstrap: must be >= 1, got {value}"


@pytest.mark.cli
def test_options_override_the_file_and_are_named_in_errors(evalctl, tmp_path, evalcluster_home):
    f = tmp_path / "sweep.yaml"
    f.write_text("num_samples: 2\nsearch: {epochs: 1}\n")
    proc = evalctl("sweep", "--config", f, "--num-samples", "0")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --num-samples: must be >= 1, got 0"
    assert Registry().list_runs() == []
