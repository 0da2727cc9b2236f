"""A multi-node Ray cluster on this machine, for the multinode tests and benchmarks/multi_node.py.

Several raylets on one host form a real multi-node cluster (``ray.cluster_utils.Cluster``,
which Ray's docs recommend for simulating one in tests): each node has its own raylet,
object store and worker processes, and killing a node's processes is what a lost machine
looks like to Ray. Token authentication stays on and every server binds 127.0.0.1.

The cluster records its address under its own RAY_TMPDIR (a fresh short directory in
/tmp), never in /tmp/ray, so no other evalctl on this machine joins it by accident;
callers pass ``address`` explicitly. ``shutdown`` removes the nodes, the address file and
the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 200 * 1024**2  # per node: small, the machine is shared


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ports() -> dict:
    """Ports a node would otherwise take at fixed defaults (another engineer's head may hold them)."""
    return {"dashboard_agent_listen_port": free_port(), "metrics_export_port": free_port()}


class LocalCluster:
    """A head node plus worker nodes added and killed at will (each a set of real processes)."""

    def __init__(self, head_cpus: float = 1, dashboard: bool = True, head_resources: dict | None = None):
        self.tmp = tempfile.mkdtemp(prefix="mn", dir="/tmp")  # short: Ray's socket paths must fit
        self._saved = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())
        from cluster.ray.runtime import keep_loopback

        keep_loopback()  # Ray read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import: 127.0.0.1 must stay
        from ray._raylet import Config
        from ray.cluster_utils import Cluster

        Config.initialize("")  # Ray caches RAY_AUTH_MODE at first use: read it again
        self.dashboard_port = free_port() if dashboard else None
        head = {
            "num_cpus": head_cpus,
            "node_ip_address": LOOPBACK,
            "include_dashboard": dashboard,
            "dashboard_host": LOOPBACK,
            "dashboard_port": self.dashboard_port,
            "object_store_memory": OBJECT_STORE_BYTES,
            "resources": head_resources or {},
            **_ports(),
        }
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.isolated: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        """What every process of this cluster (and each driver joining it) gets in its environment."""
        return {
            "RAY_TMPDIR": self.tmp,
            "RAY_AUTH_MODE": "token",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as every node's address
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(ROOT),  # workers import this worktree's cluster/ and jobs/
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }

    @property
    def address(self) -> str:
        return self.cluster.address

    @property
    def dashboard_url(self) -> str | None:
        return f"http://{LOOPBACK}:{self.dashboard_port}" if self.dashboard_port else None

    @property
    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    def add_worker(self, cpus: float = 1, resources: dict | None = None):
        """A new worker node (returns Ray's Node handle; ``.node_id`` is its id)."""
        return self.cluster.add_node(
            num_cpus=cpus,
            node_ip_address=LOOPBACK,
            object_store_memory=OBJECT_STORE_BYTES,
            resources=resources or {},
            **_ports(),
        )

    def kill(self, node) -> float:
        """Kill every process of ``node`` at once (SIGKILL: a lost machine); returns the time it took."""
        t0 = time.perf_counter()
        self.cluster.remove_node(node, allow_graceful=False)
        return time.perf_counter() - t0

    def workers(self) -> list:
        return list(self.cluster.worker_nodes)

    def add_isolated_worker(self, hidden: Path, cpus: float = 1, timeout: float = 60) -> str:
        """A worker node in its own mount namespace where ``hidden`` is an empty tmpfs: a machine
        that cannot see that directory. Returns its node id. Needs `unshare -m` (root)."""
        script = (
            f"mount -t tmpfs tmpfs {hidden} && exec {sys.executable} -m tests.mn_node "
            f"{self.address} {cpus} {free_port()} {free_port()}"
        )
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.isolated.append(proc)
        line = proc.stdout.readline().strip()  # tests/mn_node.py prints "node <id>" once up
        if not line.startswith("node "):
            proc.kill()
            raise RuntimeError(f"isolated node did not start (exit {proc.poll()}): {line!r}")
        return line.split()[1]

    def shutdown(self) -> None:
        """Remove every node, the recorded address and the temp dir; restore the environment."""
        for proc in self.isolated:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
        self.cluster.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def address_file(self) -> Path:
        return Path(self.tmp) / "ray" / "ray_current_cluster"
