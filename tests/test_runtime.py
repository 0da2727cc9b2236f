"""Local Ray exposure: the head's command line and bind addresses, the token file's mode.

No persistent head is started here (tests/test_cluster_head.py does that, marked `head`):
the command line is checked as built, and the bind addresses on an embedded Ray,
which binds by the same rule (node IP 127.0.0.1 -> Ray's servers listen on loopback only).
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of our own: the token file is ~/.ray/auth_token."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def option(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_the_local_head_binds_loopback_by_default():
    from cluster.ray.runtime import head_command

    cmd, env = head_command()
    assert cmd[1:3] == ["start", "--head"]
    assert option(cmd, "--node-ip-address") == "127.0.0.1" and option(cmd, "--dashboard-host") == "127.0.0.1"
    # `ray start` turns 127.0.0.1 into the machine's address unless multi-node is off
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["RAY_AUTH_MODE"] == "token"


@pytest.mark.parametrize(
    "host, node_ip, dashboard", [("0.0.0.0", None, "0.0.0.0"), ("10.1.2.3", "10.1.2.3", "10.1.2.3")]
)
def test_cluster_up_host_opens_the_head_to_the_network(host, node_ip, dashboard):
    from cluster.ray.runtime import head_command

    cmd, env = head_command(host=host, num_cpus=3)
    assert option(cmd, "--node-ip-address") == node_ip and option(cmd, "--dashboard-host") == dashboard
    assert option(cmd, "--num-cpus") == "3" and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in env


def test_a_new_token_file_is_private(home):
    from cluster.ray.auth import ensure_auth_token, find_auth_token

    ensure_auth_token()
    token = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(find_auth_token()) == 64  # 256 bits, hex, as Ray's own generator makes them
    before = token.read_text()
    ensure_auth_token()
    assert token.read_text() == before  # an existing token is kept


def test_a_readable_token_file_is_tightened_and_said(home, caplog):
    from cluster.ray.auth import ensure_auth_token

    token = home / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("t" * 64)
    token.chmod(0o644)
    with caplog.at_level("WARNING"):
        ensure_auth_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "t" * 64
    assert "was readable by others" in caplog.text and "0600" in caplog.text


LISTENERS = """
import json, os, psutil, ray
from cluster.ray.runtime import init_ray
init_ray(num_cpus=1)
worker = ray.get(ray.remote(lambda: os.getpid()).remote())
procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
assert worker in {p.pid for p in procs}
ips = {c.laddr.ip for p in procs for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
print(json.dumps(sorted(ips)))
"""


@pytest.mark.ray
def test_embedded_ray_listens_on_loopback_only_and_keeps_its_token_private(home):
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", LISTENERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ips = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert ips and ips <= LOOPBACK, ips  # GCS, raylet, workers, agents: nothing on other interfaces
    token = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def test_a_held_agent_port_makes_the_head_take_a_free_one():
    """An embedded Ray's dashboard agent holds 52365; a head started beside it whose agent
    cannot bind that port refuses every job ("No available agent"), so it takes a free one."""
    import contextlib
    import socket

    from cluster.ray.runtime import head_command, port_free

    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # something here holds it already: the same situation
            held.bind(("127.0.0.1", 52365))
        held.listen()
        assert not port_free(52365)
        agent = option(head_command()[0], "--dashboard-agent-listen-port")
        assert agent is not None and agent != "52365" and port_free(int(agent))
