"""`evalctl cluster up|status|down` against a real `ray start --head` (token auth on)."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

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


def client_servers(gcs_port: int = 6379) -> list:
    """Ray client server processes of the head serving ``gcs_port`` (their command line names no
    session: issue 28, point 11, `cluster down` left this one running)."""
    import psutil

    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ray.util.client.server" in (p.info["cmdline"] or [])
        and any(a.startswith("--address=") and a.endswith(f":{gcs_port}") for a in p.info["cmdline"])
    ]


def joins_the_running_head(evalctl) -> None:
    """issue 28, point 11: a command joining the head by its GCS address needs no RAY_AUTH_MODE when
    the token file exists; and a token file loosened to 0644 is tightened by any command that joins
    the head (it was only by `cluster up`)."""
    token = Path.home() / ".ray" / "auth_token"
    token.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    joined = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "serve", "status", "--address", "127.0.0.1:6379"],
        capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert '"status"' in joined.stdout and "Traceback" not in joined.stderr
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and "was readable by others" in joined.stderr


def test_cluster_up_status_down(evalctl, tiny_model_dir):
    ray_cli = str(Path(sys.executable).with_name("ray"))
    serve_port = free_port()
    up = evalctl("cluster", "up", "--num-cpus", "1", "--serve-port", serve_port, timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        assert "127.0.0.1:8265" in up.stdout and f"127.0.0.1:{serve_port}" in up.stdout
        # Serve runs with the head: its proxy answers HTTP before anything is deployed (503 "no
        # routes yet" or 200)
        assert httpx.get(f"http://127.0.0.1:{serve_port}/-/routes", timeout=30).status_code in (200, 503)
        deploy_on_the_running_serve(evalctl, tiny_model_dir, serve_port)
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
        joins_the_running_head(evalctl)
        assert client_servers(), "the head runs no Ray client server: nothing for `cluster down` to stop"
    finally:
        down = evalctl("cluster", "down", timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert evalctl("cluster", "status").returncode == 1
    assert client_servers() == []  # every process of the head stopped, its Ray client server too


def deploy_on_the_running_serve(evalctl, model_dir, serve_port: int) -> None:
    """A deploy uses the Serve `cluster up` started; one asking for another port is told where
    Serve listens (exit 2, one line) instead of waiting on a port nothing listens on; `serve stop
    --shutdown` stops Serve itself."""
    deploy = ("serve", "deploy", "--model", model_dir, "--cpus-per-replica", "0.5", "--precision", "fp32")
    other = free_port()
    wrong = evalctl(*deploy, "--port", other, timeout=180)
    assert wrong.returncode == 2, wrong.stderr
    assert f"Serve on this cluster listens on 127.0.0.1:{serve_port}, not 127.0.0.1:{other}" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    ok = evalctl(*deploy, "--port", serve_port, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert (
        "Connecting to existing Serve app" not in ok.stdout + ok.stderr
    )  # Serve's INFO line: not at WARNING
    status = json.loads(evalctl("serve", "status", timeout=120).stdout)  # no --port: where Serve listens
    assert status["url"] == f"http://127.0.0.1:{serve_port}" and status["model"] == str(model_dir), status
    url = f"http://127.0.0.1:{serve_port}"
    answer = httpx.post(f"{url}/v1/predict", json={"texts": ["what a flight"]}, timeout=60)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1, answer.text
    stop = evalctl("serve", "stop", "--shutdown", timeout=120)
    assert stop.returncode == 0 and "stopped Serve" in stop.stdout, stop.stderr
    assert proxy_gone(url, within_s=60)  # the proxy stops with Serve
    assert "nothing was being served" in evalctl("serve", "stop", timeout=120).stdout


def proxy_gone(url: str, within_s: float) -> bool:
    """True once nothing answers at ``url`` (polled every 0.5 s for at most ``within_s``)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/-/routes", timeout=5)
        except httpx.ConnectError:
            return True
        time.sleep(0.5)
    return False


def test_cluster_up_refuses_a_taken_serve_port_before_starting_anything(evalctl):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = evalctl("cluster", "up", "--port", free_port(), "--serve-port", port, timeout=120)
    assert up.returncode == 2 and f"--serve-port {port}: port taken on 127.0.0.1" in up.stderr, up.stderr
    assert "Traceback" not in up.stderr
    assert evalctl("cluster", "status").returncode == 1  # no head was started
