"""Ray Tune sweeps with a tiny random BERT on the shared local cluster: ASHA, export, faults."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cluster.errors import UserError
from cluster.models.modeldir import read_lineage
from cluster.registry.record import Registry
from cluster.specs.parse import load_spec, load_spec_file
from cluster.specs.search_space import LogUniform, SearchSpace
from cluster.specs.workloads import DataSpec, ResourcesSpec, SchedulerSpec, SweepSpec
from jobs.sweep import resume_sweep, run_sweep

ROOT = Path(__file__).resolve().parent.parent


def tiny_spec(tiny_model_dir, sample_dir, **kw) -> SweepSpec:
    spec = dict(
        model=str(tiny_model_dir),
        train=DataSpec(path=str(sample_dir / "train.parquet")),
        validation=DataSpec(path=str(sample_dir / "validation.parquet")),
        search=SearchSpace(
            learning_rate=LogUniform(loguniform=[1e-4, 1e-3]), batch_size=16, epochs=2, max_length=32
        ),
        scheduler=SchedulerSpec(kind="asha", grace_period=1, reduction_factor=2),
        num_samples=2,
        max_concurrent_trials=2,
        resources=ResourcesSpec(cpus=1),
        max_train_rows=200,
        max_validation_rows=100,
        precision="fp32",
    )
    return SweepSpec(**{**spec, **kw})


@pytest.mark.ray
def test_asha_sweep_registers_a_loadable_best_model_and_is_seeded(ray_cluster, tiny_model_dir, sample_dir):
    from transformers import AutoModelForSequenceClassification

    first = run_sweep(tiny_spec(tiny_model_dir, sample_dir, name="s1"))
    reg = Registry()
    best = reg.resolve_model("best")
    assert best["id"] == first["model_id"] and first["trials"] == 2
    model = AutoModelForSequenceClassification.from_pretrained(best["path"], local_files_only=True)
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    lineage = read_lineage(best["path"])
    assert lineage["sweep_run"] == first["run_id"] and lineage["trial_config"] == first["best_config"]
    assert reg.get_run(first["run_id"])["status"] == "finished"
    second = run_sweep(tiny_spec(tiny_model_dir, sample_dir, name="s2"))
    configs = lambda s: sorted(d["config"]["learning_rate"] for d in s["trial_details"])  # noqa: E731
    assert configs(first) == configs(second)  # same spec + seed = same trials
    third = run_sweep(tiny_spec(tiny_model_dir, sample_dir, name="s3", seed=1, num_samples=1))
    assert configs(third)[0] not in configs(first)
    assert reg.resolve_model("best")["id"] == third["model_id"]  # best = latest finished sweep


@pytest.mark.ray
def test_killed_trial_resumes_from_its_checkpoint(ray_cluster, tiny_model_dir, sample_dir, evalcluster_home):
    spec = tiny_spec(
        tiny_model_dir,
        sample_dir,
        name="crash",
        num_samples=1,
        max_train_rows=1500,
        evals_per_epoch=4,
        max_failures=2,
        scheduler=SchedulerSpec(kind="none"),
    )
    killed = []

    def kill_after_first_checkpoint():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            # Kill once the driver has recorded a report (and so its checkpoint): result.json has a row.
            results = list((evalcluster_home / "sweeps" / "crash").glob("*/result.json"))
            if results and results[0].read_text().count("\n") >= 2:
                # The trial's worker process is titled after Tune's function-trainable actor.
                pids = subprocess.run(["pgrep", "-f", "ray::SweepTrial"], capture_output=True, text=True)
                for pid in map(int, pids.stdout.split()):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    summary = run_sweep(spec)
    killer.join()
    assert killed, "the trial finished before it could be killed"
    (trial,) = summary["trial_details"]
    assert trial["resumed_from_steps"], "the retried trial started from scratch"
    assert trial["epochs"] == 2.0  # and still finished its whole budget


@pytest.mark.ray
def test_killed_driver_then_resume_finishes_without_rerunning(
    ray_cluster, tiny_model_dir, sample_dir, evalcluster_home, tmp_path
):
    spec = tiny_spec(
        tiny_model_dir,
        sample_dir,
        name="drv",
        max_concurrent_trials=1,
        scheduler=SchedulerSpec(kind="none"),
        max_train_rows=600,
    )
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(spec.model_dump_json())  # JSON is YAML
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.sweep", "--config", str(cfg)],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "EVALCLUSTER_HOME": str(evalcluster_home)},
    )
    exp = evalcluster_home / "sweeps" / "drv"
    finished = _wait_for_finished_trial(exp, timeout=240)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    lines_before = (finished / "result.json").read_text().count("\n")
    summary = resume_sweep("drv")
    assert summary["trials"] == 2 and all(d["epochs"] == 2.0 for d in summary["trial_details"])
    assert (finished / "result.json").read_text().count("\n") == lines_before  # not run again
    runs = {r["status"] for r in Registry().list_runs(kind="sweep")}
    assert runs == {"failed", "finished"}  # the interrupted run is closed, the resumed one finished
    # tuner.pkl's TrialsProgress reported to the resumed run: the trial finished before counts
    resumed = Registry().get_run(summary["run_id"])
    assert resumed["progress"] == {"done": 2, "total": 2, "unit": "trials"}


def _wait_for_finished_trial(exp: Path, timeout: float) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for result in exp.glob("*/result.json"):
            rows = [json.loads(x) for x in result.read_text().splitlines() if x.strip()]
            if rows and rows[-1].get("epoch") == 2.0:
                return result.parent
        time.sleep(0.2)
    raise AssertionError("no trial finished in time")


# ------------------------------------------------------------------ bad input


def test_unknown_key_and_wrong_type_in_yaml(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("search:\n  learnig_rate: 1\n")
    with pytest.raises(
        UserError, match=r'^s.yaml: search.learnig_rate: unknown key \(did you mean "learning_rate"'
    ):
        load_spec_file(SweepSpec, f)
    f.write_text("num_samples: many\n")
    with pytest.raises(UserError, match="num_samples: must be an integer"):
        load_spec_file(SweepSpec, f)


@pytest.mark.parametrize("name", ["sweep.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    spec = load_spec_file(SweepSpec, ROOT / "jobs" / "configs" / name)
    assert spec.model == "base" and spec.scheduler.kind == "asha" and spec.search_alg == "grid"


@pytest.mark.parametrize(
    "change, match",
    [
        ({"search_alg": "grid"}, r"search_alg grid needs at least one \{grid: \[...\]\}"),
        ({"search": {"batch_size": {"grid": []}}}, r"search.batch_size.grid: needs at least 1 item"),
        ({"search": {"epochs": {"normal": [1, 2]}}}, "unknown distribution 'normal'"),
        (
            {"search": {"epochs": {"grid": [1, 2]}}},
            "search_alg random samples distributions, but search.epochs is a grid",
        ),
        ({"mode": "min"}, "mode min disagrees with metric f1_macro"),
        ({"search_alg": "optuna", "search": {"learning_rate": 1e-4}}, "search_alg optuna needs at least one"),
    ],
)
def test_spec_errors(change, match):
    with pytest.raises(UserError, match=match):
        load_spec(SweepSpec, change)


def test_mode_comes_from_the_metric_table():
    assert SweepSpec(metric="f1_macro").metric_mode == "max"
    assert SweepSpec(metric="log_loss").metric_mode == "min"
    assert SweepSpec(metric="log_loss", mode="min").metric_mode == "min"  # an old YAML that agrees


def test_unwritable_storage_fails_before_anything_is_recorded(tiny_model_dir, sample_dir):
    with pytest.raises(UserError, match="storage path /proc/not-writable cannot be written"):
        run_sweep(tiny_spec(tiny_model_dir, sample_dir, storage_path="/proc/not-writable"))
    assert Registry().list_runs() == []


def test_validation_labels_missing_from_training(tiny_model_dir, sample_dir, tmp_path):
    import pandas as pd

    val = pd.read_parquet(sample_dir / "validation.parquet").head(50)
    val.loc[:2, "label"] = "sarcastic"
    val.to_parquet(tmp_path / "val.parquet")
    spec = tiny_spec(tiny_model_dir, sample_dir, validation=DataSpec(path=str(tmp_path / "val.parquet")))
    with pytest.raises(
        UserError, match=r"labels in validation missing from training: 'sarcastic' \(3 rows\)"
    ):
        run_sweep(spec)


@pytest.mark.ray
def test_more_gpus_per_trial_than_any_node(ray_cluster, tiny_model_dir, sample_dir):
    with pytest.raises(UserError, match="no node has more than 0 GPUs"):
        run_sweep(tiny_spec(tiny_model_dir, sample_dir, resources=ResourcesSpec(cpus=1, gpus=1)))
    (run,) = Registry().list_runs()
    assert run["status"] == "failed"


@pytest.mark.ray
def test_optuna_search_runs_seeded_tpe_trials(ray_cluster, tiny_model_dir, sample_dir):
    spec = tiny_spec(
        tiny_model_dir,
        sample_dir,
        name="tpe",
        search_alg="optuna",
        num_samples=3,
        max_concurrent_trials=1,
        search=SearchSpace(
            learning_rate=LogUniform(loguniform=[1e-4, 1e-3]),
            batch_size={"choice": [8, 16]},
            epochs=1,
            max_length=32,
        ),
        scheduler=SchedulerSpec(kind="none"),
        max_train_rows=100,
    )
    summary = run_sweep(spec)
    rates = [d["config"]["learning_rate"] for d in summary["trial_details"]]
    assert summary["trials"] == 3 and len(set(rates)) == 3 and all(1e-4 <= r <= 1e-3 for r in rates)
    assert {d["config"]["batch_size"] for d in summary["trial_details"]} <= {8, 16}
    assert Registry().resolve_model("best")["id"] == summary["model_id"]


def test_optuna_tpe_models_after_a_third_of_the_budget(tiny_model_dir, sample_dir):
    """Optuna's default (10 random start-up trials) would make TPE plain random search on a
    typical 4-12 trial sweep; the sampler starts modelling after a third of the budget."""
    from cluster.tune.search import search_alg

    space = SearchSpace(learning_rate=LogUniform(loguniform=[1e-4, 1e-3]), epochs=1)
    for trials, startup in [(4, 2), (9, 3), (60, 10)]:
        spec = tiny_spec(
            tiny_model_dir, sample_dir, name="tpe", search_alg="optuna", num_samples=trials, search=space
        )
        sampler = search_alg(spec, 1).searcher._sampler
        assert sampler._n_startup_trials == startup
