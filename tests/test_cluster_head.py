"""`evalctl cluster up|status|down` against a real `ray start --head` (token auth on)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.head


def test_cluster_up_status_down(evalctl):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    up = evalctl("cluster", "up", "--num-cpus", "1", timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        assert "127.0.0.1:8265" in up.stdout
        status = evalctl("cluster", "status")
        assert status.returncode == 0 and "GCS address" in status.stdout, status.stderr
        # Ray's own CLI sees the head (it needs token mode, as every Ray client does).
        seen = subprocess.run(
            [ray_cli, "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "RAY_AUTH_MODE": "token"},
        )
        assert seen.returncode == 0 and "1.0 CPU" in seen.stdout.replace("0.0/1.0", "1.0"), seen
        assert (Path.home() / ".ray" / "auth_token").is_file()  # token auth stayed on
    finally:
        down = evalctl("cluster", "down", timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert evalctl("cluster", "status").returncode == 1
