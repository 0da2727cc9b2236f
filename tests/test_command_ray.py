"""A command leaves the Ray it joined when it ends (jobs/entry.py: ray_of_this_command), and only
that one: a Ray the process had before the command (a caller's, the test session's) stays up."""

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT

CHILD = r"""
import json, time, ray
from jobs.entry import ray_of_this_command
with ray_of_this_command():
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    node = ray._private.worker._global_node
    procs = {kind: [i.process for i in infos] for kind, infos in node.all_processes.items()}
up = ray.is_initialized()
deadline = time.monotonic() + 10  # Ray stops them (SIGTERM, 1 s grace, SIGKILL) without reaping
while any(p.poll() is None for ps in procs.values() for p in ps) and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({"up": up, "codes": {k: [p.poll() for p in ps] for k, ps in procs.items()}}))
"""


@pytest.mark.ray
def test_a_command_leaves_the_embedded_ray_it_started():
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="cr", dir="/tmp")}  # short socket paths
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["up"] is False  # left when the block ended, not at the interpreter's exit
    assert got["codes"]["monitor"] == [-signal.SIGKILL]  # killed first, no 1 s grace on a dead GCS
    assert all(code is not None for codes in got["codes"].values() for code in codes), got


@pytest.mark.ray
def test_a_ray_the_process_had_before_the_command_stays_up(ray_cluster):
    from jobs.entry import ray_of_this_command

    with ray_of_this_command():
        assert ray_cluster.is_initialized()
    assert ray_cluster.is_initialized()  # the session's Ray, not the command's: left alone
