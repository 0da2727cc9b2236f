"""`evalctl evaluate --resume RUN` after the driver is SIGKILLed: the rows whose part files were
committed are not computed again, and metrics.json and the predictions equal an uninterrupted run's.

Each driver is `evalctl evaluate` in a subprocess joined to the session's Ray (so a kill costs no
Ray start); it is killed with SIGKILL at several points, read from Ray Data's checkpoint directory
(committed part files) while it runs: before any part file (as soon as the run is recorded), after
the first, halfway, and before the last one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cluster.registry.predictions import read_predictions
from cluster.registry.record import Registry
from tests.conftest import ROOT, run_evalctl

pytestmark = pytest.mark.ray
VOLATILE = ("run_id", "timings", "workers", "worker_plan", "recovery", "ray", "warm_actors")
BLOCKS = 12  # 1,200 rows in blocks of 100


@pytest.fixture(scope="module")
def data(sample_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "rows.parquet"
    pd.read_parquet(sample_dir / "test.parquet").head(100 * BLOCKS).to_parquet(path, row_group_size=100)
    return path


def args(model: Path, data: Path, out: Path, address: str) -> list:
    return [
        "evaluate", "--model", model, "--data", data, "--out", out, "--address", address,
        "--rows-per-shard", 100, "--sort-rows", 100, "--batch-size", 16, "--max-length", 48,
        "--bootstrap", 50, "--precision", "fp32",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def address(ray_cluster) -> str:
    return ray_cluster.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def uninterrupted(address, tiny_model_dir, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "out"
    proc = run_evalctl(*args(tiny_model_dir, data, out, address), env={"RAY_AUTH_MODE": "token"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def committed(out: Path) -> int:
    ckpt = out / "_checkpoint"
    return (
        len([p for p in ckpt.glob("*.parquet") if not p.name.endswith(".pending.parquet")])
        if ckpt.is_dir()
        else 0
    )


def kill_when(out: Path, cmd: list, ready) -> dict:
    """Start the driver, SIGKILL it once ``ready(committed part files)`` holds (or when it ends).
    Its stderr goes to a file (a pipe nobody reads could fill and stall it)."""
    log = out.parent / "driver.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", *map(str, cmd)], cwd=ROOT, start_new_session=True,
            env={**os.environ, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        deadline = time.time() + 600
        while proc.poll() is None and not ready(committed(out)) and time.time() < deadline:
            time.sleep(0.02)
        at = committed(out)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    killed = proc.returncode == -signal.SIGKILL
    return {
        "killed": killed,
        "at": at,
        "rc": proc.returncode,
        "stderr": "" if killed else log.read_text()[-3000:],
    }


def running_run(n: int) -> bool:
    return any(r["status"] == "running" for r in Registry().list_runs(kind="evaluate"))


KILL_POINTS = {
    "before any part file": running_run,  # as soon as the run is recorded
    "after the first part file": lambda n: n >= 1,
    "halfway": lambda n: n >= BLOCKS // 2,
    "before the last part file": lambda n: n >= BLOCKS - 1,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_driver_resumes_and_equals_the_uninterrupted_run(
    address, tiny_model_dir, data, uninterrupted, tmp_path, point
):
    out = tmp_path / "out"
    cmd = args(tiny_model_dir, data, out, address)
    ready = KILL_POINTS[point]
    kill = kill_when(out, cmd, ready)
    assert kill["killed"], f"the driver ended before the kill {point}: {kill}"
    (run,) = Registry().list_runs(kind="evaluate")
    assert run["status"] == "running", (kill, run)  # a SIGKILLed driver cannot record its end
    before = committed(out)
    resumed = run_evalctl(
        "evaluate", "--resume", run["id"], "--address", address, env={"RAY_AUTH_MODE": "token"}
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout or before == 0, resumed.stdout
    a = json.loads((uninterrupted / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    outcome = f"killed {point} with {kill['at']} part file(s) committed; recovery {b['recovery']}"
    assert {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE
    }, outcome
    assert b["run_id"] == run["id"] and b["recovery"]["rows"] == 100 * BLOCKS, outcome
    assert b["recovery"]["resumed_rows"] >= 100 * before, outcome  # those blocks were not computed again
    pd.testing.assert_frame_equal(
        read_predictions(uninterrupted / "predictions"), read_predictions(out / "predictions")
    )
    assert not (out / "_checkpoint").exists(), outcome
    ended = Registry().get_run(run["id"])
    assert ended["status"] == "finished"
    # the resumed driver's progress counts the rows committed before the kill too
    assert ended["progress"] == {"done": 100 * BLOCKS, "total": 100 * BLOCKS, "unit": "rows"}, outcome
