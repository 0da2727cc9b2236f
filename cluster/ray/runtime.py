"""Connecting to Ray: embedded local by default, a cluster when an address is given.

Addresses mean different things (as in Ray itself):
- none               -> an embedded local Ray started in this process (laptop default)
- http(s)://HOST:8265 -> a cluster's job server: the command is *submitted* as a Ray job
- HOST:6379, "auto", ray://... -> ``ray.init(address=...)`` joins that cluster directly
  (this is what a submitted job sees in RAY_ADDRESS).
Token authentication stays on (cluster/ray/auth.py). Ray on this machine stays on this
machine: the local head (unless `evalctl cluster up --host` says otherwise) and an embedded Ray
take 127.0.0.1 as their node address, and Ray's servers (GCS, raylet, workers, agents, Ray
client) then listen on loopback only; the dashboard and job server on 127.0.0.1:8265. Ray's
files go under RAY_TMPDIR as Ray's own do, and `evalctl cluster up --port/--dashboard-port`
can start a second head beside another.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import UserError
from cluster.ray.auth import (
    ensure_auth_token,
    ensure_client_auth,
)
from cluster.ray.compat import check_ray_version, loopback_constant_off
from cluster.ray.logs import quiet_ray_data

log = logging.getLogger(__name__)
DASHBOARD_PORT = 8265
LOOPBACK = "127.0.0.1"
LOCAL_JOBS_URL = f"http://{LOOPBACK}:{DASHBOARD_PORT}"
# Ray turns a node address of 127.0.0.1 into the machine's address (in `ray start
# --node-ip-address` and in the address a client joins) unless multi-node clusters are off,
# which this variable says; with 127.0.0.1 kept, Ray's gRPC servers bind loopback only.
LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
GCS_PORT = 6379  # Ray's default
EMBEDDED, LOCAL_HEAD = "embedded", "local head"  # what init_ray joined (else the address given)
_joined = EMBEDDED


def ray_tmp() -> Path:
    """Ray's temporary root: RAY_TMPDIR, else TMPDIR on Linux, else /tmp, plus ``ray`` (Ray's own
    rule, ``get_user_temp_dir``), found without importing Ray on the CLI's start-up path."""
    tmp = os.environ.get("RAY_TMPDIR") or (sys.platform.startswith("linux") and os.environ.get("TMPDIR"))
    return Path(tmp or "/tmp") / "ray"


def address_file() -> Path:
    """Where `ray start` (and ray.cluster_utils) record the local head's GCS address."""
    return ray_tmp() / "ray_current_cluster"


def head_info_file() -> Path:
    """Where `evalctl cluster up` records the head's dashboard (job server) port, beside Ray's file."""
    return ray_tmp() / "evalcluster_head.json"


@dataclass
class Target:
    """Where a workload runs: ``mode`` is "local" (in-process or ray.init) or "submit"."""

    mode: str
    address: str | None = None


def resolve_target(address: str | None) -> Target:
    """Decide from ``--address`` (or RAY_ADDRESS) whether to run here or submit a job."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        return Target("submit", address.rstrip("/"))
    return Target("local", address)


# ------------------------------------------------------------------ connecting


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> str:
    """Connect this process to Ray (idempotent); returns what it joined: ``EMBEDDED`` (a Ray
    started in this process, gone when it exits, token auth on as Ray's default), ``LOCAL_HEAD``
    (the running head of `evalctl cluster up`, joined when there is no address and no
    RAY_ADDRESS) or the address given (a cluster, e.g. RAY_ADDRESS inside a submitted job)."""
    import ray

    global _joined
    if ray.is_initialized():
        return _joined
    check_ray_version()  # before anything reaches into Ray's private modules (cluster/ray/compat.py)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise UserError(
            f"{address} is a job-server address; it is used to submit jobs, "
            "not to run here (drop --address to run locally)"
        )
    level = "INFO" if logging.getLogger().getEffectiveLevel() <= logging.INFO else "WARNING"
    kwargs: dict = {"log_to_driver": not quiet, "configure_logging": True, "logging_level": level}
    if address:
        kwargs["address"], joined = address, address
        ensure_client_auth()  # a HOST:6379 address: Ray itself turns token mode on only for "auto"
    elif head_running():
        # the persistent local head (`evalctl cluster up`), by its address: "auto" would also
        # take a RAY_ADDRESS or another head's file
        kwargs["address"], joined = _recorded_address(), LOCAL_HEAD
        ensure_client_auth()  # Ray turns token mode on by itself only for "auto", not an address
    else:  # an embedded Ray, on loopback only, with a private token file
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK)
        ensure_auth_token(create=os.environ.get("RAY_AUTH_MODE", "token").lower() != "disabled")
        # Token mode said, not left to Ray's default: with RAY_AUTH_MODE unset a new local Ray turns
        # it on too, but prints "Token authentication is enabled for this Ray cluster" on every command.
        ensure_client_auth()
        joined = EMBEDDED
    if is_loopback(_bootstrap_host(kwargs["address"])):
        keep_loopback()
    log.info("ray.init(%s)", ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise UserError(f"cannot connect to Ray at {address}: {str(exc).splitlines()[0]}") from exc
    quiet_ray_data()
    _joined = joined
    return joined


def joined_line(joined: str) -> str | None:
    """The one line a command prints when it runs on a Ray it did not start (None: embedded)."""
    if joined == EMBEDDED:
        return None
    if joined == LOCAL_HEAD:
        return f"using the running local Ray head at {_recorded_address()} (`evalctl cluster status`)"
    return f"using the Ray cluster at {joined}"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    return host in ("localhost", "::1") or (host or "").startswith("127.")


def _bootstrap_host(address: str) -> str | None:
    """The host ``ray.init(address)`` connects to ("local": this machine; "auto": the local head)."""
    if address == "local":
        return LOOPBACK
    if address == "auto":
        address = _recorded_address() or ""
    return address.split("://")[-1].rsplit(":", 1)[0] or None


def keep_loopback() -> None:
    """Let this process and its children use 127.0.0.1 as a Ray node's address (see LOOPBACK_VAR).
    Ray reads the variable once, at import, so its constant is set too if Ray is loaded."""
    os.environ[LOOPBACK_VAR] = "0"
    loopback_constant_off()


def cluster_resources() -> dict[str, float]:
    """Total resources of the connected cluster (CPU, GPU, memory, ...)."""
    import ray

    return dict(ray.cluster_resources())


def max_gpus_per_node() -> float:
    """The most GPUs any single alive node has (0 on CPU-only clusters)."""
    import ray

    return max((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)


def worker_threads() -> int:
    """Torch threads a Ray worker should use: the CPUs Ray assigned it (at least 1).

    Ray sets OMP_NUM_THREADS from ``num_cpus`` but torch can still run on one
    thread (measured on these machines), so callers pass this to
    ``torch.set_num_threads`` explicitly.
    """
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            cpus = ctx.get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # noqa: BLE001 - outside a worker we fall back to the env
        pass
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1))


# ------------------------------------------------------------------ a persistent local head


def _ray_cli() -> str:
    """The `ray` executable of this interpreter's environment (not whatever is on PATH)."""
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def head_command(
    num_cpus: int | None = None,
    dashboard_port: int = DASHBOARD_PORT,
    host: str = LOOPBACK,
    port: int = GCS_PORT,
) -> tuple[list[str], dict[str, str]]:
    """The `ray start --head` command line and its environment for a head listening on ``host``.

    127.0.0.1 (the default): Ray's servers and the dashboard on loopback only. 0.0.0.0: on
    every interface, as Ray does by default. Another address of this machine: the node
    takes that address (Ray's gRPC servers then listen on every interface; only 127.0.0.1
    makes them loopback-only) and the dashboard listens on it.
    """
    host = LOOPBACK if is_loopback(host) else host
    cmd = [_ray_cli(), "start", "--head", "--dashboard-host", host, "--dashboard-port", str(dashboard_port)]
    cmd += ["--include-dashboard", "true", "--disable-usage-stats", "--port", str(port)]
    # Ray's other fixed ports (Ray client 10001, the dashboard agent's 52365, the metrics
    # exporter's) collide with another Ray's here (a second head; an embedded Ray's agent also
    # takes 52365, and a head whose agent cannot bind it refuses every job): take free ones then.
    second = (port, dashboard_port) != (GCS_PORT, DASHBOARD_PORT)
    for option, default in (("--ray-client-server-port", 10001), ("--dashboard-agent-listen-port", 52365)):
        cmd += [option, str(free_port())] if second or not port_free(default) else []
    cmd += ["--metrics-export-port", str(free_port())] if second else []
    if host not in ("0.0.0.0", "::"):  # all interfaces: Ray picks the node address itself
        cmd += ["--node-ip-address", host]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    # A job's entrypoint runs `python` from the raylet's PATH: make it this environment's
    # interpreter (with the project installed), not whatever `python` the shell finds first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", LOOPBACK_VAR)}
    # `ray start` turns token auth on only when told to (or when a token already exists).
    env.update(PATH=path, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token")
    if host == LOOPBACK:
        env[LOOPBACK_VAR] = "0"  # inherited by every process of the head: workers, agents, jobs
    return cmd, env


def head_up(
    num_cpus: int | None = None,
    dashboard_port: int = DASHBOARD_PORT,
    host: str = LOOPBACK,
    port: int = GCS_PORT,
    env: dict[str, str] | None = None,
) -> str:
    """Start a persistent local head listening on ``host`` (see :func:`head_command`), with
    ``env`` added to its processes' environment. Returns the job-server URL. Token auth is
    on; the token is ~/.ray/auth_token (0600). Ray's files go under RAY_TMPDIR (as Ray's own).
    """
    if head_running():
        return head_jobs_url()
    check_host(host)
    ensure_auth_token()
    cmd, head_env = head_command(num_cpus, dashboard_port, host, port)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**head_env, **(env or {})})
    if proc.returncode != 0:
        from cluster.ray.headprocs import start_error, stop_session

        # A head that timed out half-way (e.g. on a loaded machine) leaves its GCS, dashboard and
        # monitor running: stop them, so nothing of the failed start is left behind.
        stop_session(port)
        address_file().unlink(missing_ok=True)
        raise UserError(f"`ray start --head` failed: {start_error(proc)}")
    head_info_file().write_text(json.dumps({"dashboard_port": dashboard_port, "gcs": _recorded_address()}))
    from cluster.ray.headprocs import wait_for_job_agent

    wait_for_job_agent(_recorded_address())
    return head_jobs_url()


def check_host(host: str) -> None:
    """``--host`` must be an IP address this machine can listen on."""
    try:
        ipaddress.ip_address(LOOPBACK if host == "localhost" else host)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
    except (ValueError, OSError) as exc:
        raise UserError(
            f"--host {host} is not an IP address of this machine (use 127.0.0.1, 0.0.0.0 or one of "
            f"its addresses): {exc}"
        ) from exc


def head_jobs_url(dashboard_port: int | None = None) -> str:
    """The running local head's job-server URL (its node address; 127.0.0.1 on loopback) and
    the dashboard port `evalctl cluster up` recorded for it (default 8265)."""
    host = _bootstrap_host("auto") or LOOPBACK
    return f"http://{LOOPBACK if is_loopback(host) else host}:{dashboard_port or _dashboard_port()}"


def _dashboard_port() -> int:
    try:
        info = json.loads(head_info_file().read_text())
    except (OSError, ValueError):
        return DASHBOARD_PORT
    return int(info["dashboard_port"]) if info.get("gcs") == _recorded_address() else DASHBOARD_PORT


def head_down() -> bool:
    """Stop the local head of this RAY_TMPDIR (and Serve with it), and only it: unlike
    `ray stop`, other Ray instances on the machine keep running (cluster/ray/headprocs.py)."""
    from cluster.ray.headprocs import stop_session

    address = _recorded_address()
    if not address or not head_running():
        return False
    stopped = stop_session(int(address.rpartition(":")[2]))
    for path in (address_file(), head_info_file()):
        path.unlink(missing_ok=True)
    return stopped > 0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` can be listened on now (nothing else holds it)."""
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _recorded_address() -> str | None:
    path = address_file()
    return path.read_text().strip() or None if path.is_file() else None


def head_running() -> bool:
    """True when a local head recorded its GCS address and that address accepts connections.

    Checking the recorded address itself (not "some gcs_server process exists") keeps an
    unrelated embedded Ray on this machine from being mistaken for the head.
    """
    address = _recorded_address()
    if not address:
        return False
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or LOOPBACK, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def status_address(address: str | None = None) -> str | None:
    """The cluster `evalctl cluster status` describes: ``address`` (a job-server URL or a GCS
    address), else RAY_ADDRESS, else the running local head; None when there is none.

    Token mode is turned on when a token exists, and 127.0.0.1 kept as a loopback node's
    address, as for any client of that cluster.
    """
    address = address or os.environ.get("RAY_ADDRESS") or (_recorded_address() if head_running() else None)
    if not address:
        return None
    ensure_client_auth()
    if is_loopback(_bootstrap_host(address)):
        keep_loopback()
    return address
