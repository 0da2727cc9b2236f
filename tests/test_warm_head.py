"""Warm evaluations on a persistent head: the same results as a cold run, the model loaded once,
the pool visible in `evalctl cluster status`, a changed model never served stale.

The head runs in a RAY_TMPDIR and on ports of its own, and `evalctl cluster down` stops only
its processes, so other Ray instances on the machine are left alone.
"""

import json
import os
import tempfile

import pytest

from cluster.registry.predictions import read_predictions
from tests.conftest import free_port, run_evalctl

pytestmark = pytest.mark.head
VOLATILE = ("run_id", "timings", "ray", "warm_actors", "workers", "worker_plan", "recovery")  # how it ran


@pytest.fixture
def head_env():
    """A running head of our own: (env for evalctl on it, env for an embedded Ray beside it)."""
    head = {"RAY_TMPDIR": tempfile.mkdtemp(prefix="wh", dir="/tmp")}  # short: Ray's socket paths
    cold = {"RAY_TMPDIR": tempfile.mkdtemp(prefix="wc", dir="/tmp")}
    ports = ("--port", free_port(), "--dashboard-port", free_port())
    up = run_evalctl("cluster", "up", "--num-cpus", "2", "--no-serve", *ports, env=head, timeout=300)
    assert up.returncode == 0, up.stderr  # a failed start leaves no process behind (head_up)
    try:
        yield head, cold
    finally:
        down = run_evalctl("cluster", "down", env=head, timeout=180)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stderr


def evaluate(model, data, out, env):
    args = (
        "evaluate",
        "--model",
        model,
        "--data",
        data,
        "--limit",
        300,
        "--rows-per-shard",
        100,
        "--sort-rows",
        100,
    )
    res = run_evalctl(*args, "--out", out, env=env)
    assert res.returncode == 0, res.stderr
    return res, json.loads((out / "metrics.json").read_text())


def same(a, b) -> bool:
    ma = {k: v for k, v in json.loads((a / "metrics.json").read_text()).items() if k not in VOLATILE}
    mb = {k: v for k, v in json.loads((b / "metrics.json").read_text()).items() if k not in VOLATILE}
    pa_, pb_ = (read_predictions(d / "predictions") for d in (a, b))
    return ma == mb and pa_.equals(pb_)


def test_warm_runs_reuse_the_model_and_match_a_cold_run(head_env, tiny_model_dir, sample_dir, tmp_path):
    head, cold = head_env
    data = sample_dir / "test.parquet"
    _, m_cold = evaluate(tiny_model_dir, data, tmp_path / "cold", cold)
    assert m_cold["ray"] == "embedded" and m_cold["warm_actors"] == 0

    first, m_head = evaluate(tiny_model_dir, data, tmp_path / "head", head)
    assert "using the running local Ray head" in first.stderr  # says so, one line
    assert m_head["warm_actors"] == 0  # nothing loaded yet
    _, m_warm = evaluate(tiny_model_dir, data, tmp_path / "warm", head)
    assert m_warm["warm_actors"] >= 1  # the model actors the first run left loaded
    assert same(tmp_path / "cold", tmp_path / "head") and same(tmp_path / "cold", tmp_path / "warm")
    for m in (m_cold, m_head, m_warm):
        assert {"cli_start_s", "ray_init_s", "actors_ready_s", "first_batch_s", "inference_s"} <= set(
            m["timings"]
        )
        assert "finish_s" in m["timings"]

    status = run_evalctl("cluster", "status", env=head, timeout=180)
    assert status.returncode == 0, status.stderr
    assert "warm models" in status.stdout and "idle" in status.stdout
    assert " MiB" in status.stdout  # the warm model's resident memory, which the pool's limits bound

    # A changed model directory is a new key: its actors load the new files, never the old ones.
    weights = tiny_model_dir / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, m_changed = evaluate(tiny_model_dir, data, tmp_path / "changed", head)
    assert m_changed["warm_actors"] == 0
    assert same(tmp_path / "cold", tmp_path / "changed")
