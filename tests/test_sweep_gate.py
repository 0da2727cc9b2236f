"""A sweep's `gate:`: `best` moves only when the sweep's best model passes, and the run says why not."""

import pytest

from cluster.registry.record import Registry
from cluster.specs.search_space import SearchSpace
from cluster.specs.workloads import DataSpec, SchedulerSpec, SweepGateSpec
from jobs.sweep import run_sweep
from tests.test_sweep import tiny_spec


def one_trial(tiny_model_dir, sample_dir, name, gate):
    """One 1-epoch trial (the gate, not the search, is under test)."""
    search = SearchSpace(learning_rate=1e-3, batch_size=16, epochs=1, max_length=32)
    return tiny_spec(
        tiny_model_dir, sample_dir, name=name, num_samples=1, max_concurrent_trials=1, search=search,
        scheduler=SchedulerSpec(kind="none"), gate=gate,
    )  # fmt: skip


@pytest.mark.ray
def test_best_moves_only_when_the_gate_passes(ray_cluster, tiny_model_dir, sample_dir):
    reg = Registry()
    test_split = DataSpec(path=str(sample_dir / "test.parquet"))
    # A tiny random BERT cannot reach macro F1 0.99: best stays unset, the record says why.
    failed = run_sweep(
        one_trial(tiny_model_dir, sample_dir, "g1", SweepGateSpec(min={"f1_macro": 0.99}, data=test_split))
    )
    assert reg.resolve_model("best") is None
    assert not failed["gate"]["passed"] and failed["best_alias"].startswith("best stays unset")
    assert "f1_macro" in failed["best_alias"] and failed["gate"]["data"] == test_split.path
    gate_eval = reg.get_run(failed["gate"]["evaluation_run"])
    assert gate_eval["model_id"] == failed["model_id"] and gate_eval["dataset_path"] == test_split.path
    recorded = reg.get_run(failed["run_id"])["metrics"]
    assert recorded["best_alias"] == failed["best_alias"] and not recorded["gate"]["passed"]

    # A gate it passes, judged on the validation data by default (which the result states).
    passed = run_sweep(one_trial(tiny_model_dir, sample_dir, "g2", SweepGateSpec(min={"accuracy": 0.0})))
    assert passed["gate"]["passed"] and reg.resolve_model("best")["id"] == passed["model_id"]
    assert "validation data" in passed["gate"]["note"]

    # Against the best model: a drop of at most 100 points always passes; the comparison is paired.
    third = run_sweep(
        one_trial(
            tiny_model_dir,
            sample_dir,
            "g3",
            SweepGateSpec(baseline="best", max_drop={"accuracy": 100.0}, data=test_split),
        )
    )
    assert third["gate"]["passed"] and reg.resolve_model("best")["id"] == third["model_id"]
    (cond,) = third["gate"]["conditions"]
    assert cond["metric"] == "accuracy" and cond["kind"] == "max_drop"
