"""The processes of one local Ray head, found by its session, so that only they are stopped.

`ray stop` ends every Ray process on the machine: other users' heads, test clusters,
embedded instances. A head started by `evalctl cluster up` is one Ray session: its GCS
server is the process serving the recorded GCS port, every process Ray starts for it
names the session on its command line, and workers are children of its raylet. So the
head can be stopped alone, and two heads (different RAY_TMPDIR, different ports) can
live side by side on one machine. One process of the head names neither: Ray's client server
(``python -m ray.util.client.server --address=HOST:GCS_PORT ...``), started by `ray start` and
left to init when that exits; it is found by the head's GCS port on its command line.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def session_of(gcs_port: int) -> str | None:
    """The session name (``session_<date>_<pid>``) of the GCS server serving ``gcs_port``."""
    import psutil

    for proc in psutil.process_iter(["name", "cmdline"]):
        args = proc.info["cmdline"] or []
        if proc.info["name"] != "gcs_server" or f"--gcs_server_port={gcs_port}" not in args:
            continue
        for arg in args:
            if arg.startswith(("--session-name=", "--session_name=")):
                return arg.split("=", 1)[1]
    return None


def session_processes(session: str, gcs_port: int | None = None) -> list:
    """Every process of a Ray session: those naming it on their command line, the Ray client
    server of the head serving ``gcs_port``, and their children."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if any(session in arg for arg in args) or (gcs_port and _client_server_of(args, gcs_port)):
            found[proc.pid] = proc
    for proc in list(found.values()):
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _client_server_of(args: list[str], gcs_port: int) -> bool:
    """Whether ``args`` run Ray's client server for the GCS on ``gcs_port`` (of this machine)."""
    return "ray.util.client.server" in args and any(
        a.startswith("--address=") and a.rsplit(":", 1)[-1] == str(gcs_port) for a in args
    )


def stop_session(gcs_port: int, grace_s: float = 10.0) -> int:
    """Terminate the processes of the head serving ``gcs_port`` (SIGTERM, then SIGKILL after
    ``grace_s``); returns how many there were (0: no such head)."""
    import psutil

    session = session_of(gcs_port)
    if session is None:
        return 0
    procs = session_processes(session, gcs_port)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    log.info("stopped %d processes of Ray session %s", len(procs), session)
    return len(procs)


def wait_for_job_agent(gcs_address: str, timeout_s: float = 60.0) -> bool:
    """Wait (bounded) until the head's dashboard agent is registered in the GCS.

    Ray's job server submits every job through that agent, which registers a few seconds
    after `ray start` returns (tens of seconds on a busy machine); until then a submission,
    ours or `ray job submit`'s, is refused with a 500 "No available agent". False on timeout.
    """
    from cluster.ray.auth import ensure_client_auth
    from cluster.ray.compat import head_agent_probe

    ensure_client_auth()
    registered = head_agent_probe(gcs_address)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if registered():
            return True
        time.sleep(0.5)
    log.warning(
        "the head's job agent did not register within %.0f s; job submissions may be refused", timeout_s
    )
    return False


def start_error(proc) -> str:
    """The line of `ray start`'s output that says why it failed (its log lines come after it)."""
    lines = [ln.strip() for ln in f"{proc.stdout}\n{proc.stderr}".splitlines() if ln.strip()]
    why = [i for i, ln in enumerate(lines) if "Exception" in ln or "Error" in ln or "timed out" in ln]
    if not why:
        return lines[-1] if lines else f"exit status {proc.returncode}"
    i = why[-1]  # "Exception:" alone: its message is on the next line
    return " ".join(lines[i : i + 2]) if lines[i].endswith(":") else lines[i]
