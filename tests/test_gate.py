"""Quality gates: conditions judged by hand, gate runs on recorded evaluations, the CLI's exit codes."""

import doctest
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

import cluster.stats.gates
from cluster.errors import UserError
from cluster.registry.record import Registry
from cluster.specs.parse import load_spec
from cluster.specs.workloads import GateSpec
from cluster.stats.gates import judge
from jobs.gate import gate_run
from jobs.submit import job_request
from tests.conftest import ROOT
from tests.registry_helpers import fake_eval

LABELS = ["negative", "neutral", "positive"]


def test_docstring_examples():
    assert doctest.testmod(cluster.stats.gates).failed == 0


@pytest.fixture
def runs(tmp_path, evalcluster_home):
    """Model A right on 70% of 600 rows; B fixes half of A's mistakes; C = B's predictions on other data."""
    reg = Registry()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    pa = np.where(rng.random(600) < 0.7, y, (y + 1) % 3)
    pb = np.where(rng.random(600) < 0.5, y, pa)
    a = fake_eval(reg, tmp_path, "a", "fp1", y, pa, model="m-a")
    b = fake_eval(reg, tmp_path, "b", "fp1", y, pb, model="m-b")
    c = fake_eval(reg, tmp_path, "c", "fp2", y, pb, model="m-c", data="other.parquet")
    return reg, a, b, c


def gate(**kw) -> GateSpec:
    return load_spec(GateSpec, kw, where="test")


# ------------------------------------------------------------------ judging, by hand


def test_point_passes_where_the_ci_lower_end_does_not():
    m = {"f1_macro": 0.78, "ece": 0.05, "ci95": {"f1_macro": [0.74, 0.81]}}
    assert judge(gate(min={"f1_macro": 0.75}), m)["passed"]
    strict = judge(gate(min={"f1_macro": 0.75}, max={"ece": 0.08}, use_ci_lower=True), m)
    f1, ece = strict["conditions"]
    assert not strict["passed"] and not f1["passed"] and f1["judged"] == 0.74
    assert f1["line"] == "FAIL  f1_macro >= 0.7500 by its CI lower end 0.7400: 0.7800 [0.7400, 0.8100]"
    assert ece["passed"] and ece["line"] == "PASS  ece <= 0.0800: 0.0500 (no CI: judged by its value)"
    assert not judge(gate(max={"ece": 0.04}), m)["passed"]
    undefined = judge(gate(min={"top_k_accuracy": 0.5}), {"top_k_accuracy": None})
    assert not undefined["passed"] and "undefined" in undefined["conditions"][0]["line"]


def test_drop_is_judged_in_points_with_the_paired_interval():
    paired = {
        "baseline": "evaluate-a",
        "mcnemar_p": 0.04,
        "metrics": {"f1_macro": {"a": 0.80, "b": 0.795, "diff": -0.005, "ci95": [-0.015, 0.004]}},
    }
    g = gate(baseline="evaluate-a", max_drop={"f1_macro": 1.0})
    (row,) = judge(g, {}, paired)["conditions"]
    assert row["passed"] and row["value"] == pytest.approx(0.5) and row["ci95"] == pytest.approx([-0.4, 1.5])
    assert "drop <= 1.00 points vs evaluate-a: +0.50 [-0.40, +1.50] points" in row["line"]
    assert "McNemar p = 0.040" in row["line"]
    strict = judge(g.model_copy(update={"use_ci_lower": True}), {}, paired)
    assert not strict["passed"] and strict["conditions"][0]["judged"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({}, "a gate needs at least one condition"),
        ({"min": ["f1_macro"]}, "conditions are METRIC=VALUE, e.g. f1_macro=0.75; got 'f1_macro'"),
        ({"min": ["f1_macro=high"]}, "f1_macro: 'high' is not a number"),
        ({"min": ["f1_macr=0.7"]}, 'unknown metric "f1_macr" (did you mean "f1_macro"?)'),
        ({"min": ["ece=0.1"]}, "ece is lower-is-better; use --max ece=VALUE"),
        ({"max": ["accuracy=0.9"]}, "accuracy is higher-is-better; use --min accuracy=VALUE"),
        ({"max_drop": {"f1_macro": 1}}, "max_drop needs a baseline"),
        ({"baseline": "best", "max_drop": {"log_loss": 1}}, "the paired comparison covers accuracy"),
        ({"baseline": "best", "min": {"f1_macro": 0.5}}, "a baseline is only used by max_drop"),
        # issue 28, point 6: taken before (nan/inf exit 1 and recorded, -inf passed, ece=-1 and 1.5
        # taken, a repeated metric silently dropped)
        ({"min": ["f1_macro=nan"]}, "f1_macro=nan: a threshold must be a finite number"),
        ({"min": ["f1_macro=inf"]}, "f1_macro=inf: a threshold must be a finite number"),
        ({"min": ["f1_macro=-inf"]}, "f1_macro=-inf: a threshold must be a finite number"),
        ({"min": {"f1_macro": float("nan")}}, "f1_macro=nan: a threshold must be a finite number"),
        ({"max": ["ece=-1"]}, "ece=-1: outside the metric's range [0, 1]"),
        ({"max": ["ece=1.5"]}, "ece=1.5: outside the metric's range [0, 1]"),
        ({"max": ["log_loss=-0.5"]}, "log_loss=-0.5: outside the metric's range [0, inf]"),
        ({"max": ["brier_score=2.5"]}, "brier_score=2.5: outside the metric's range [0, 2]"),
        ({"min": ["accuracy=1.01"]}, "accuracy=1.01: outside the metric's range [0, 1]"),
        ({"baseline": "b", "max_drop": ["f1_macro=150"]}, "f1_macro=150: a drop is at most 100 points"),
        ({"baseline": "b", "max_drop": ["f1_macro=inf"]}, "a threshold must be a finite number"),
        (
            {"min": ["f1_macro=0.9", "f1_macro=0.1"]},
            "f1_macro is given twice (0.9 and 0.1); give each metric one condition",
        ),
        (
            {"min": ["f1_macro=0.9,accuracy=0.5,f1_macro=0.9"]},
            "f1_macro is given twice (0.9 and 0.9)",
        ),
    ],
)
def test_bad_gates_are_one_line(raw, fragment):
    with pytest.raises(UserError, match="^.*$") as err:
        load_spec(GateSpec, raw, where="gate.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_conditions_repeat_and_comma_separate():
    g = gate(min=["f1_macro=0.75,accuracy=0.8", "roc_auc_macro=0.9"])
    assert g.min == {"f1_macro": 0.75, "accuracy": 0.8, "roc_auc_macro": 0.9}


# ------------------------------------------------------------------ gate runs on recorded evaluations


def test_gate_run_verdicts_are_recorded(runs):
    reg, (a, ma), _, _ = runs
    ok = gate_run(reg, a, gate(min={"f1_macro": ma["f1_macro"] - 0.01}))
    low, high = ma["ci95"]["f1_macro"]
    assert ok["passed"] and ok["run"] == a
    assert not gate_run(reg, a, gate(min={"f1_macro": ma["f1_macro"] + 0.01}))["passed"]
    # Between the CI's lower end and the point: the point passes, --use-ci-lower fails.
    mid = (low + ma["f1_macro"]) / 2
    assert gate_run(reg, a, gate(min={"f1_macro": mid}))["passed"]
    assert not gate_run(reg, a, gate(min={"f1_macro": mid}, use_ci_lower=True))["passed"]
    recorded = reg.list_runs(kind="gate")
    assert len(recorded) == 4 and all(r["status"] == "finished" for r in recorded)
    assert {r["metrics"]["passed"] for r in recorded} == {True, False}
    assert json.loads((reg.run_dir(ok["gate_run"]) / "gate.json").read_text())["passed"] is True


def test_baseline_comparison_is_paired_and_refuses_other_data(runs):
    reg, (a, _), (b, mb), (c, _) = runs
    better = gate_run(reg, b, gate(baseline=a, max_drop={"f1_macro": 0.0}))
    (row,) = better["conditions"]
    assert better["passed"] and row["value"] < 0 and row["mcnemar_p"] < 0.001  # B is better than A
    worse = gate_run(reg, a, gate(baseline=b, max_drop={"f1_macro": 1.0}))
    assert not worse["passed"] and worse["conditions"][0]["value"] > 1.0
    n_gates = len(reg.list_runs(kind="gate"))
    with pytest.raises(UserError, match="evaluated other data .* a gate compares on the same rows"):
        gate_run(reg, c, gate(baseline=a, max_drop={"f1_macro": 1.0}))
    with pytest.raises(UserError, match='baseline "nosuch" is neither an evaluation run nor a model'):
        gate_run(reg, a, gate(baseline="nosuch", max_drop={"f1_macro": 1.0}))
    with pytest.raises(UserError, match="is a finished gate run; gate a finished evaluation"):
        gate_run(reg, better["gate_run"], gate(min={"f1_macro": 0.1}))
    assert len(reg.list_runs(kind="gate")) == n_gates  # refused gates record nothing


def test_baseline_model_means_its_latest_evaluation_of_the_same_data(runs, tiny_model_dir):
    reg, (a, _), (b, _), _ = runs
    model = reg.register_model(tiny_model_dir)
    with pytest.raises(UserError, match=f"baseline model {model} has no finished evaluation on this data"):
        gate_run(reg, b, gate(baseline=model, max_drop={"f1_macro": 1.0}))
    ra = reg.get_run(a)
    run = reg.start_run("evaluate", {}, dataset_fingerprint="fp1", model_id=model, dataset_path="d.parquet")
    reg.finish_run(run, metrics=ra["metrics"], artifact_path=ra["artifact_path"])  # A's predictions
    res = gate_run(reg, b, gate(baseline=model, max_drop={"f1_macro": 0.0}))
    assert res["baseline"] == run and res["passed"]


# ------------------------------------------------------------------ the command line


@pytest.mark.cli
def test_cli_exit_codes(evalctl, runs, evalcluster_home):
    reg, (a, ma), _, (c, _) = runs
    env = {"EVALCLUSTER_HOME": str(evalcluster_home)}
    low = ma["ci95"]["f1_macro"][0]
    mid = f"{(low + ma['f1_macro']) / 2:.6f}"
    ok = evalctl("gate", a, "--min", f"f1_macro={mid}", "--max", "ece=0.9", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("PASS  ") == 2 and "gate passed: 2/2 conditions hold" in ok.stdout
    strict = evalctl("gate", a, "--min", f"f1_macro={mid}", "--use-ci-lower", env=env)
    assert strict.returncode == 1, strict.stderr
    assert "FAIL  f1_macro >= " in strict.stdout and "by its CI lower end" in strict.stdout
    above = evalctl("gate", a, "--min", f"f1_macro={ma['f1_macro'] + 0.01:.6f}", "--json", env=env)
    assert above.returncode == 1 and json.loads(above.stdout)["passed"] is False
    n_gates = len(reg.list_runs(kind="gate"))
    for args, fragment in [
        ([c, "--baseline", a, "--max-drop", "f1_macro=1"], "evaluated other data"),
        ([a, "--min", "ece=0.1"], "--min: ece is lower-is-better"),
        ([a, "--min", "f1_macr=0.5"], 'unknown metric "f1_macr"'),
        ([a, "--min", "f1_macro=nan"], "--min: f1_macro=nan: a threshold must be a finite number"),
        ([a, "--min", "f1_macro=-inf"], "a threshold must be a finite number"),
        ([a, "--max", "ece=1.5"], "--max: ece=1.5: outside the metric's range [0, 1]"),
        ([a, "--min", "f1_macro=0.9", "--min", "f1_macro=0.1"], "f1_macro is given twice"),
        ([a], "a gate needs at least one condition"),
        (["nosuchrun", "--min", "f1_macro=0.5"], 'no run "nosuchrun"'),
    ]:
        bad = evalctl("gate", *args, env=env)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert bad.stderr.startswith("error: ") and fragment in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert len(reg.list_runs(kind="gate")) == n_gates


@pytest.mark.cli
def test_the_ray_job_entrypoint_is_the_same_gate(runs, evalcluster_home):
    """`evalctl gate --address URL` submits `python -m jobs.gate RUN --spec-json ...`: run that command."""
    reg, (a, ma), _, _ = runs
    request = job_request(
        "jobs.gate", gate(min={"f1_macro": ma["f1_macro"] + 0.01}), "http://127.0.0.1:8265", [a]
    )
    request.staged.cleanup()
    argv = shlex.split(request.entrypoint)
    assert argv[:4] == ["python", "-m", "jobs.gate", a] and argv[4] == "--spec-json"
    env = {**os.environ, "EVALCLUSTER_HOME": str(evalcluster_home)}
    job = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert job.returncode == 1, job.stderr  # the condition fails: the job fails, and says why
    assert "FAIL  f1_macro >= " in job.stdout
    assert reg.list_runs(kind="gate")[0]["metrics"]["passed"] is False
