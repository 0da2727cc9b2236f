"""`evalctl cluster up|status|down` against a real `ray start --head` (token auth on)."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.head
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def head_listen_addresses(gcs_port: int = 6379) -> set[str]:
    """IPs the local head's processes listen on: every process of its session, and their children."""
    import psutil

    gcs = next(
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "gcs_server" and f"--gcs_server_port={gcs_port}" in (p.info["cmdline"] or [])
    )
    session = next(
        a.split("=", 1)[1] for a in gcs.cmdline() if a.startswith(("--session-name=", "--session_name="))
    )
    procs = [
        p for p in psutil.process_iter(["cmdline"]) if any(session in a for a in p.info["cmdline"] or [])
    ]
    procs += [c for p in procs for c in p.children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}


def test_cluster_up_status_down(evalctl):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    up = evalctl("cluster", "up", "--num-cpus", "1", timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        assert "127.0.0.1:8265" in up.stdout
        status = evalctl("cluster", "status")
        assert status.returncode == 0 and "GCS address" in status.stdout, status.stderr
        # Ray's own CLI sees the head (token mode, and 127.0.0.1 kept as the head's address).
        seen = subprocess.run(
            [ray_cli, "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        )
        assert seen.returncode == 0 and "1.0 CPU" in seen.stdout.replace("0.0/1.0", "1.0"), seen
        token = Path.home() / ".ray" / "auth_token"
        assert token.is_file() and stat.S_IMODE(token.stat().st_mode) == 0o600  # token auth on, private
        ips = head_listen_addresses()
        assert ips and ips <= LOOPBACK, ips  # GCS, raylet, workers, dashboard, Ray client: loopback only
    finally:
        down = evalctl("cluster", "down", timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert evalctl("cluster", "status").returncode == 1
