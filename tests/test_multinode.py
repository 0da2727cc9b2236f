"""Proven on several nodes (issue 11), and an interrupted sweep recorded honestly (issue 16.4).

One multi-node Ray cluster on this machine for the whole module (tests/mn_cluster.py: a head
with 1 CPU, worker nodes with 1 CPU added and killed; token auth on; 127.0.0.1; its own
RAY_TMPDIR, so no other evalctl joins it). A killed node is all of its processes killed at
once with SIGKILL (``Cluster.remove_node(..., allow_graceful=False)``): what a lost machine
looks like to Ray. Each fault test states its outcome as numbers in its assertion messages.
This process joins the cluster too (placement checks, Serve, in-process sweep resumes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cluster.errors import UserError
from cluster.registry.predictions import read_predictions
from cluster.registry.record import Registry
from tests.conftest import LABELS, ROOT, free_port, run_evalctl
from tests.mn_cluster import LocalCluster
from tests.mn_helpers import (
    Load,
    cluster_status,
    evaluate_args,
    part_workers,
    replicas_by_node,
    replicas_running,
    result_rows,
    same_results,
    tiny_sweep,
    workers,
)
from tests.mn_resume import KillChain, moments, small_splits

pytestmark = pytest.mark.multinode


# ------------------------------------------------------------------ the cluster


@pytest.fixture(scope="module")
def mn():
    """The module's cluster: a 1-CPU head; tests add 1-CPU workers with ``workers(mn, n)``."""
    import ray

    assert not ray.is_initialized(), "multinode tests must run before this process joins another Ray"
    cluster = LocalCluster(head_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        _stop_serve()
        ray.shutdown()
        cluster.shutdown()
        assert not cluster.address_file().exists(), "the cluster's address file outlived it"


def _stop_serve() -> None:
    from ray import serve

    with contextlib.suppress(Exception):  # Serve may never have started in this module run
        serve.shutdown()


# ------------------------------------------------------------------ evaluation


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory) -> Path:
    """A random BERT big enough that 800 rows take seconds per actor (so a node can be killed
    mid-run), small enough for CI: hidden 256, 4 layers."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from cluster.models.modeldir import base_model_dir
    from cluster.models.text import save_model_dir

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
    )
    tok = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    out = tmp_path_factory.mktemp("mn-model") / "small"
    return save_model_dir(BertForSequenceClassification(config).eval(), tok, out, {"base_model": "small"})


@pytest.fixture(scope="module")
def eval_data(sample_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mn-data") / "test800.parquet"
    pd.read_parquet(sample_dir / "test.parquet").head(800).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def undisturbed(mn, small_model_dir, eval_data, tmp_path_factory, evalcluster_home_module):
    """The same evaluation on one node (the head) and on two nodes; the work seen while it ran."""
    from cluster.ray.view import describe_cluster

    out = tmp_path_factory.mktemp("mn-eval")
    workers(mn, 0)
    one = run_evalctl(*evaluate_args(small_model_dir, eval_data, out / "one", mn.address))
    assert one.returncode == 0, one.stderr[-3000:]
    (worker,) = workers(mn, 1)
    proc, logs = driver(evaluate_args(small_model_dir, eval_data, out / "two", mn.address), out / "two-")
    seen: dict[str, int] = {}
    while proc.poll() is None and len(seen) < 2:  # which nodes hold an evaluation actor meanwhile
        view = describe_cluster(mn.dashboard_url)
        seen.update({n.node_id: n.work["evaluation actor"] for n in view.nodes if n.work["evaluation actor"]})
        time.sleep(0.3)
    proc.wait(timeout=600)
    assert proc.returncode == 0, logs[1].read_text()[-3000:]
    return {"one": out / "one", "two": out / "two", "worker": worker.node_id, "status_seen": seen}


# Ray Data's actor pool starts its actors asynchronously and hands blocks to those ready: on a busy
# machine the head's actor could take all 16 blocks while the worker node's still loads, and a test
# about two nodes would see one. With this the model stage waits for both (the pool's minimum)
# before any block flows (ray.data.DataContext.wait_for_min_actors_s).
BOTH_ACTORS = {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"}


def driver(args: list, prefix: Path) -> tuple[subprocess.Popen, tuple[Path, Path]]:
    """`evalctl ARGS` started in the background (its model stage waits for its two actors), its stdout
    and stderr going to ``prefix``out/err files (pipes nobody reads while it runs could fill and
    stall it)."""
    logs = (Path(f"{prefix}out"), Path(f"{prefix}err"))
    with logs[0].open("w") as out, logs[1].open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", *map(str, args)],
            cwd=ROOT, stdout=out, stderr=err, text=True, env={**os.environ, **BOTH_ACTORS},
        )  # fmt: skip
    return proc, logs


@pytest.fixture(scope="module")
def evalcluster_home_module(tmp_path_factory):
    """One EVALCLUSTER_HOME for the module's evaluation fixtures (the per-test one is reset per test)."""
    home = tmp_path_factory.mktemp("mn-home")
    old = os.environ.get("EVALCLUSTER_HOME")
    os.environ["EVALCLUSTER_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("EVALCLUSTER_HOME", None)
    else:
        os.environ["EVALCLUSTER_HOME"] = old


def test_evaluation_runs_on_both_nodes_and_equals_the_one_node_run(mn, undisturbed, evalcluster_home_module):
    two = json.loads((undisturbed["two"] / "metrics.json").read_text())
    nodes = {w["node"] for w in two["workers"]}
    rows = {w["node"]: w["rows"] for w in two["workers"]}
    assert nodes == {mn.head_id, undisturbed["worker"]}, f"actors ran on {len(nodes)} node(s): {rows}"
    assert sum(rows.values()) == 800 and all(r > 0 for r in rows.values()), rows
    assert two["recovery"]["rows"] == 800 and not two["recovery"]["restarted_actors"]
    assert not two["recovery"]["lost_actors"]
    assert set(undisturbed["status_seen"]) == nodes, (
        f"cluster status saw actors on {undisturbed['status_seen']}"
    )
    same_results(undisturbed["one"], undisturbed["two"])  # bit for bit: metrics, CIs, predictions
    home = {"EVALCLUSTER_HOME": str(evalcluster_home_module)}  # where the fixture's runs are recorded
    shown = run_evalctl("runs", "show", two["run_id"], env=home)  # `evalctl runs show` prints where it ran
    assert shown.returncode == 0, shown.stderr
    recorded = json.JSONDecoder().raw_decode(shown.stdout)[0]["metrics"]["workers"]  # the JSON, then tables
    assert {(w["node"], w["rows"]) for w in recorded} == {(w["node"], w["rows"]) for w in two["workers"]}


def test_node_lost_mid_evaluation_every_row_once_same_metrics(
    mn, undisturbed, small_model_dir, eval_data, tmp_path, evalcluster_home_module
):
    """The worker node is SIGKILLed once a part file computed there is written. Ray restarts its model
    actor (Ray Data's actors have max_restarts=-1) and retries its unfinished blocks on it
    (max_task_retries=-1) once a node has room: a replacement node joins, as a cluster's autoscaler
    would add one (the head's only CPU is its own actor's). Lost blocks are rebuilt from their
    lineage; a write task run again writes the same file name, so no row is counted twice."""
    (worker,) = workers(mn, 1)
    out = tmp_path / "lost"
    proc, logs = driver(evaluate_args(small_model_dir, eval_data, out, mn.address), tmp_path / "lost-")
    killed, deadline = {}, time.time() + 600
    while proc.poll() is None and not killed and time.time() < deadline:
        done = part_workers(out)
        if any(w["node"] == worker.node_id for w in done):
            killed = {"after_parts": len(done), "kill_s": mn.kill(worker), "at": time.time()}
            mn.add_worker(cpus=1)  # the replacement machine
        time.sleep(0.05)
    proc.wait(timeout=900)
    shown, err = (log.read_text() for log in logs)
    assert proc.returncode == 0 and killed, (
        f"rc {proc.returncode}; killed {killed}; stderr ends {err[-3000:]}"
    )
    metrics = json.loads((out / "metrics.json").read_text())
    preds = read_predictions(out / "predictions")
    rec = metrics["recovery"]
    outcome = (
        f"killed after {killed['after_parts']} part file(s); recovery {rec}; workers {metrics['workers']}"
    )
    assert preds["row"].tolist() == list(range(800)), outcome  # every input row exactly once
    assert rec["rows"] == 800 and metrics["n"] == 800, outcome  # counted once (coverage hash checked too)
    # The loss really hit the run: the killed node's actor had computed rows, and Ray either restarted
    # it elsewhere (same actor id, another node) or Ray Data replaced it (a new actor): which of the
    # two depends on when the pool saw it die.
    lost = [a for a in rec["lost_actors"] if a["node"] == worker.node_id]
    restarted = [a for a in rec["restarted_actors"] if worker.node_id in a["nodes"]]
    assert lost, outcome
    assert all(len(set(a["nodes"])) > 1 for a in restarted), outcome
    others = {w["node"] for w in metrics["workers"]} - {worker.node_id}
    assert len(others) >= 1 and sum(w["rows"] for w in metrics["workers"] if w["node"] in others) > 0, outcome
    same_results(undisturbed["two"], out)  # metrics, CIs and predictions equal the undisturbed run's
    assert "restarted by Ray" in shown, shown  # what the user sees: the loss, under the metric table


# ------------------------------------------------------------------ sweeps


def test_sweep_trials_on_both_nodes_and_a_node_lost_mid_trial(mn, tiny_model_dir, sample_dir, tmp_path):
    from cluster.ray.view import describe_cluster
    from jobs.sweep import run_sweep

    (worker,) = workers(mn, 1)
    spec = tiny_sweep(tiny_model_dir, sample_dir, tmp_path / "store", name="lost", max_train_rows=3000)
    exp = tmp_path / "store" / "lost"
    seen: dict = {}

    def kill_once_the_worker_trial_checkpointed():
        deadline = time.time() + 600
        while time.time() < deadline:
            rows = {d.name: result_rows(d) for d in exp.glob("*") if d.is_dir()}
            nodes = {r["node_id"] for rs in rows.values() for r in rs}
            if worker.node_id in nodes and mn.head_id in nodes:  # both trials reported, one per node
                view = describe_cluster(mn.dashboard_url)
                seen["trials_per_node"] = {n.node_id: n.work["sweep trial"] for n in view.nodes}
                seen["kill_s"], seen["rows"] = mn.kill(worker), {k: len(v) for k, v in rows.items()}
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_once_the_worker_trial_checkpointed)
    killer.start()
    summary = run_sweep(spec)
    killer.join()
    assert "kill_s" in seen, "the worker's trial finished before it could be killed"
    details = {d["trial_id"]: d for d in summary["trial_details"]}
    moved = [d for d in details.values() if worker.node_id in d["nodes"]]
    outcome = f"trials {details}; at the kill: {seen}"
    assert seen["trials_per_node"].get(worker.node_id) == 1, outcome  # `cluster status` saw it there
    assert seen["trials_per_node"].get(mn.head_id) == 1, outcome  # and the other on the head
    assert len(moved) == 1 and mn.head_id in moved[0]["nodes"], outcome  # restarted on the survivor
    assert moved[0]["resumed_from_steps"], outcome  # from its checkpoint, not from step 0
    assert all(d["epochs"] == 2.0 for d in details.values()), outcome  # every trial finished its budget
    reg = Registry()
    assert reg.resolve_model("best")["id"] == summary["model_id"]
    assert reg.get_run(summary["run_id"])["status"] == "finished"


def test_storage_one_node_cannot_see_fails_before_any_trial(mn, tiny_model_dir, sample_dir, tmp_path):
    from jobs.sweep import run_sweep

    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs mount namespaces (`unshare -m`, root) to give one node its own view")
    workers(mn, 0)
    storage = tmp_path / "only-here"
    storage.mkdir()
    blind = mn.add_isolated_worker(hidden=storage)
    try:
        with pytest.raises(UserError) as err:
            run_sweep(tiny_sweep(tiny_model_dir, sample_dir, storage, name="blind"))
    finally:
        for proc in mn.isolated:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
        mn.isolated.clear()
    msg = str(err.value)
    assert "is not the same storage on every node: 1 of 2 nodes cannot read" in msg, msg
    assert blind[:12] in msg and "the file is not there" in msg, msg
    assert [p.name for p in storage.iterdir()] == [], "a trial or probe file was left in storage"
    (run,) = Registry().list_runs(kind="sweep")
    assert run["status"] == "failed" and "not the same storage" in run["error"]


# ------------------------------------------------------------------ a killed driver, resumed


# The test is about Tune's checkpoint bookkeeping, not the model: 5 trials of the tiny BERT one
# after the other, 128 rows (8 steps an epoch, 2 epochs, a validation with a checkpoint after every
# step: 16 each, 80 in the sweep). The kills aim at the 1st-29th validation, but a driver records
# what the trial reports until it dies: up to 7 in a 0.3 s delay here (a faster machine: more), so
# 2 trials' 32 ran out at the 18th kill in one CI run; 80 leave room for 7 such kills at 7 each
# and 13 others at 2, with the later trials run by the last resume. One sweep takes all 20 kills: each kill's driver is the resume
# of the one killed before it (tests/mn_resume.py), so a kill costs one driver start and one trial
# actor start; every driver joins the module's cluster (no Ray start) and is started while the one
# before it trains, its imports done by its turn.
@pytest.mark.timeout(1800)
def test_killed_driver_resumes_20_times_out_of_20(mn, tiny_model_dir, sample_dir, tmp_path):
    """SIGKILL the sweep's driver at 20 different moments (right after the m-th validation was
    recorded, or a little later: a trial's last checkpoint included), resume each time: each
    resumed driver records validations until the next kill, the last one finishes the sweep,
    every validation is recorded once, no finished trial runs again."""
    from jobs.sweep import resume_sweep

    workers(mn, 1)
    data = small_splits(sample_dir, tmp_path / "data", train=128, validation=24)
    spec = tiny_sweep(
        tiny_model_dir, data, tmp_path / "store", name="k20", max_concurrent_trials=1,
        max_train_rows=None, max_validation_rows=None, evals_per_epoch=8, num_samples=5,
    )  # fmt: skip
    chain, t0 = KillChain(spec, tmp_path, mn.address), time.time()
    try:
        for k, (after, delay) in enumerate(moments(20)):  # the last driver needs no successor ready
            print(f"kill {chain.kill_next(after, delay, ahead=k < 19)}", flush=True)  # per-round figures
            assert chain.rounds[-1]["after"] < 80, (
                f"the sweep ran out of validations to kill at: {chain.rounds}"
            )
    finally:
        chain.close()
    t_resume = time.time()
    summary = resume_sweep(spec.name, storage=spec.storage_path)
    figures = f"{chain.figures(time.time() - t0)}; the last resume {time.time() - t_resume:.0f} s"
    print(figures, flush=True)
    chain.check_finished(summary, 5, 16, f"{figures}; rounds: {chain.rounds}")


# ------------------------------------------------------------------ SIGINT: interrupted, honestly


def test_sigint_records_the_sweep_interrupted_and_keeps_best(mn, tiny_model_dir, sample_dir, tmp_path):
    reg = Registry()
    kept = reg.register_model(tiny_model_dir, base_model="tiny")
    reg.set_alias("best", kept)
    workers(mn, 1)
    spec = tiny_sweep(tiny_model_dir, sample_dir, tmp_path / "store", name="sig", num_samples=200)
    cfg = tmp_path / "sig.json"
    cfg.write_text(spec.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "sweep", "--config", str(cfg), "--address", mn.address],
        cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    exp = tmp_path / "store" / "sig"
    deadline = time.time() + 600
    trials = lambda: [result_rows(d) for d in exp.glob("*") if d.is_dir()]  # noqa: E731
    while sum(bool(r) and r[-1]["epoch"] == 2.0 for r in trials()) < 2:
        assert proc.poll() is None and time.time() < deadline, "no trial finished"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl+C in the driver's terminal
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "interrupted" in err and "evalctl sweep resume sig" in err, err[-3000:]
    (run,) = reg.list_runs(kind="sweep")
    assert run["status"] == "failed" and "interrupted" in run["error"], run
    assert reg.resolve_model("best")["id"] == kept  # `best` did not move
    assert [m["id"] for m in reg.list_models()] == [kept]  # nothing registered


# ------------------------------------------------------------------ serving, and the head's view


def test_serving_spreads_replicas_survives_a_lost_node_and_cluster_status_shows_it(mn, tiny_model_dir):
    from cluster.specs.serve import ServeSpec
    from jobs.deploy import deploy

    (worker,) = workers(mn, 1)
    spec = ServeSpec(
        model=str(tiny_model_dir), replicas=2, cpus_per_replica=0.5, port=free_port(), precision="fp32"
    )
    url = deploy(spec, address=mn.address, start_head=False, timeout_s=300)["url"]
    before = cluster_status(mn)
    assert replicas_by_node(before) == {mn.head_id: 1, worker.node_id: 1}, before  # spread
    assert any(j["kind"] == "driver" for j in before["jobs"]), before["jobs"]  # this test's driver runs
    with Load(url, clients=4) as load:
        load.wait_ok(20, since=0)  # steady load before the fault
        t_kill = time.time()
        mn.kill(worker)
        deadline = time.time() + 300
        while not (replicas_running() == 2 and replicas_by_node(cluster_status(mn)) == {mn.head_id: 2}):
            assert time.time() < deadline, f"replicas never came back: {cluster_status(mn)}"
            time.sleep(1)
        t_back = time.time()
        load.wait_ok(100, since=t_back)  # afterwards: a clean stretch
    errors = [(round(t - t_kill, 2), what) for t, ok, what in load.log if not ok]
    answered = len(load.log)
    outcome = (
        f"{len(errors)} errors of {answered} requests (4 clients); errors at s after the kill: {errors}; "
        f"replicas back {t_back - t_kill:.1f} s after the kill"
    )
    print(outcome)  # the measured figures, shown with `pytest -rA`
    assert len(errors) <= load.clients, outcome  # at most the requests in flight on the lost node
    assert all(0 <= t <= 30 for t, _ in errors), outcome  # none before the kill; none after 30 s
    assert not [t for t, ok, _ in load.log if not ok and t >= t_back], outcome  # 0 errors once back
    after = cluster_status(mn)
    dead = [n for n in after["nodes"] if n["node_id"] == worker.node_id]
    assert dead and not dead[0]["alive"], after  # the lost node is listed, dead
    text = run_evalctl("cluster", "status", "--address", mn.address, env={"COLUMNS": "250"})  # no wrapping
    assert text.returncode == 0 and "DEAD" in text.stdout and "serve replica x2" in text.stdout, text.stdout
