"""Workloads submitted as Ray jobs to a real local head (`ray start --head`, token auth on).

Marked `head`: these run first in the suite, because `evalctl cluster down` is
`ray stop`, which ends every Ray process on the machine.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_evalctl as evalctl

from cluster.registry.record import Registry

pytestmark = pytest.mark.head
ROOT = Path(__file__).resolve().parent.parent
URL = "http://127.0.0.1:8265"


@pytest.fixture(scope="module")
def head():
    from cluster.ray.runtime import head_down, head_up

    head_up(num_cpus=2)
    yield URL
    head_down()


@pytest.fixture
def project_files(tiny_model_dir, sample_dir):
    """A tiny model and data inside the project dir, so they travel with the job's working dir."""
    d = ROOT / f".jobtest-{uuid.uuid4().hex[:8]}"
    shutil.copytree(tiny_model_dir, d / "tiny")
    pd.read_parquet(sample_dir / "test.parquet").head(120).to_parquet(d / "test.parquet")
    yield d.relative_to(ROOT)
    shutil.rmtree(d, ignore_errors=True)


def evaluate_tiny(project_files, *args, env=None):
    """`evalctl evaluate` of the tiny model on the project's test file, plus ARGS."""
    return evalctl(
        "evaluate",
        "--model",
        project_files / "tiny",
        "--data",
        project_files / "test.parquet",
        *args,
        env=env,
    )


def test_evaluate_submitted_with_wait_registers_its_run(head, project_files):
    proc = evaluate_tiny(
        project_files,
        "--bootstrap",
        "50",
        "--address",
        head,
        "--wait",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "submitted evaluate-" in proc.stdout and "succeeded" in proc.stdout
    (run,) = Registry().list_runs(kind="evaluate")
    assert run["status"] == "finished" and run["metrics"]["n"] == 120
    job_id = proc.stdout.split("submitted ")[1].split()[0]
    logs = evalctl("jobs", "logs", job_id, "--address", head)
    assert logs.returncode == 0 and "f1_macro" in logs.stdout
    listed = evalctl("jobs", "list", "--address", head)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout


def test_rays_own_job_submit_runs_the_documented_entrypoint(head, project_files):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": head}
    runtime_env = json.dumps(
        {"env_vars": {"EVALCLUSTER_HOME": os.environ["EVALCLUSTER_HOME"], "HF_HUB_OFFLINE": "1"}}
    )
    proc = subprocess.run(
        [
            ray_cli,
            "job",
            "submit",
            "--working-dir",
            ".",
            "--runtime-env-json",
            runtime_env,
            "--",
            "python",
            "-m",
            "jobs.evaluate",
            "--model",
            str(project_files / "tiny"),
            "--data",
            str(project_files / "test.parquet"),
            "--bootstrap",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert Registry().list_runs(kind="evaluate")[0]["status"] == "finished"


def test_stop_a_running_sweep_job(head, project_files, tmp_path):
    cfg = ROOT / project_files / "sweep.yaml"
    cfg.write_text(
        f"model: {project_files / 'tiny'}\ntrain: {{path: {project_files / 'test.parquet'}}}\n"
        f"validation: {{path: {project_files / 'test.parquet'}}}\n"
        "search: {epochs: 200, batch_size: 8, max_length: 16}\nnum_samples: 1\nresources: {cpus: 1}\n"
    )
    proc = evalctl("sweep", "--config", project_files / "sweep.yaml", "--address", head)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split("submitted ")[1].split()[0]
    _wait_status(job_id, head, "RUNNING")
    time.sleep(3)
    stop = evalctl("jobs", "stop", job_id, "--address", head)
    assert stop.returncode == 0 and "stop requested" in stop.stdout
    _wait_status(job_id, head, "STOPPED")


def _wait_status(job_id, address, wanted, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = evalctl("jobs", "status", job_id, "--address", address).stdout
        if wanted in out:
            return
        time.sleep(1)
    raise AssertionError(f"{job_id} never reached {wanted}: {out}")


def test_failed_job_with_wait_exits_nonzero_with_log_tail(head, project_files):
    proc = evalctl(
        "evaluate",
        "--model",
        "no-such-model",
        "--data",
        project_files / "test.parquet",
        "--address",
        head,
        "--wait",
    )
    assert proc.returncode == 1
    assert "ended FAILED" in proc.stdout and 'MODEL "no-such-model" resolves to nothing' in proc.stdout


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"HOME": "{tmp}"}, id="no-token-file"),
        pytest.param({"RAY_AUTH_TOKEN": "wrong-token", "RAY_AUTH_MODE": "token"}, id="wrong-token"),
    ],
)
def test_missing_or_wrong_token_says_what_to_set(head, project_files, tmp_path, env):
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}  # HOME={tmp}: no ~/.ray/auth_token
    proc = evaluate_tiny(project_files, "--address", head, env=env)
    assert proc.returncode == 2 and "refused the token" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr


def test_working_dir_over_the_upload_limit_says_what_to_exclude(head, project_files):
    proc = evaluate_tiny(
        project_files,
        "--address",
        head,
        env={"RAY_max_grpc_message_size": "100000"},
    )
    assert proc.returncode == 2 and "too large to upload" in proc.stderr, proc.stderr[-2000:]


def test_unreachable_address_and_invisible_paths(project_files, sample_dir):
    t0 = time.time()
    proc = evaluate_tiny(
        project_files,
        "--address",
        "http://127.0.0.1:9",
    )
    assert proc.returncode == 2 and "cannot reach the Ray job server at http://127.0.0.1:9" in proc.stderr
    assert time.time() - t0 < 30
    outside = evalctl(
        "evaluate",
        "--model",
        project_files / "tiny",
        "--data",
        sample_dir / "test.parquet",
        "--address",
        "http://ray-head.invalid:8265",  # a remote cluster: it cannot see this machine's /tmp
    )
    assert outside.returncode == 2 and "the cluster cannot see" in outside.stderr


def test_deploy_submitted_with_a_key_serves_with_auth(head, project_files):
    """Issue 16.2a: the submitted deploy job carries the key's digest (never the key), so auth holds."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "k-submitted-4471"
    args = ["serve", "deploy", "--model", project_files / "tiny", "--port", port, "--precision", "fp32"]
    proc = evalctl(
        *args, "--cpus-per-replica", "0.5", "--address", head, "--wait", env={"EVALCLUSTER_API_KEY": key}
    )
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert key not in proc.stdout + proc.stderr
        url = f"http://127.0.0.1:{port}/v1/predict"
        assert httpx.post(url, json={"texts": ["hi"]}, timeout=60).status_code == 401
        ok = httpx.post(url, json={"texts": ["hi"]}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert ok.status_code == 200, ok.text
    finally:
        evalctl("serve", "stop")


def test_evaluation_depth_commands_run_as_ray_jobs(head, project_files):
    """Robustness, drift and gate submitted to the head: each one run in the registry."""
    data = project_files / "test.parquet"
    df = pd.read_parquet(data)
    df.iloc[:60].to_parquet(project_files / "ref.parquet")
    df.iloc[60:].to_parquet(project_files / "cur.parquet")
    rob = evalctl(
        "robustness", "--model", project_files / "tiny", "--data", data, "--perturb", "identity,typo",
        "--bootstrap", "50", "--address", head, "--wait",
    )  # fmt: skip
    assert rob.returncode == 0, rob.stdout[-3000:] + rob.stderr[-3000:]
    drift = evalctl(
        "drift", "--reference", project_files / "ref.parquet", "--current", project_files / "cur.parquet",
        "--model", project_files / "tiny", "--address", head, "--wait",
    )  # fmt: skip
    assert drift.returncode == 0, drift.stdout[-3000:] + drift.stderr[-3000:]
    (robustness,) = Registry().list_runs(kind="robustness")
    assert robustness["status"] == "finished"
    per = robustness["metrics"]["robustness"]["perturbations"]
    assert robustness["metrics"]["n"] == 120 and per["identity"]["flip_rate"] == 0.0, per
    assert 0 <= per["typo"]["flip_rate"] <= 1
    (drifted,) = Registry().list_runs(kind="drift")
    assert drifted["status"] == "finished", drifted
    gate = evalctl("gate", robustness["id"], "--min", "f1_macro=0", "--address", head, "--wait")
    assert gate.returncode == 0 and "succeeded" in gate.stdout, gate.stdout[-3000:] + gate.stderr[-3000:]
    failing = evalctl("gate", robustness["id"], "--min", "f1_macro=1.01", "--address", head, "--wait")
    assert failing.returncode != 0, failing.stdout[-3000:]
