"""The one place evalcluster reaches into Ray's private modules, for the Ray release it was checked
against.

Each function below names what it needs and why no public API serves. Private modules move between
Ray releases without notice, so every accessor first checks the installed Ray's major.minor against
``CHECKED`` (pyproject pins the same minor): another release fails with one line saying which was
found and which is supported, instead of an AttributeError deep inside a run. Ray itself is imported
only when an accessor is called (importing Ray costs ~1 s: commands that never touch it skip that).

    >>> CHECKED
    '2.60'
"""

from __future__ import annotations

import functools
import sys
from importlib.metadata import version

from cluster.errors import UserError

CHECKED = "2.60"  # the Ray release (major.minor) whose private modules this file was read against


@functools.lru_cache(maxsize=1)
def check_ray_version() -> str:
    """The installed Ray's version, or a UserError when it is not the release this file was checked
    against."""
    found = version("ray")
    if ".".join(found.split(".")[:2]) != CHECKED:
        raise UserError(
            f"Ray {found} is installed; evalcluster supports Ray {CHECKED}.x (it uses private Ray "
            f"modules checked against that release: cluster/ray/compat.py); "
            f"install it with `pip install 'ray[serve,tune,data]=={CHECKED}.*'`"
        )
    return found


def refresh_config() -> None:
    """Make this process re-read RAY_AUTH_MODE: Ray caches its config (auth mode included) at first
    use, and its own token-enabling code refreshes it the same way (ray._raylet.Config)."""
    check_ray_version()
    from ray._raylet import Config

    Config.initialize("")


def loopback_constant_off() -> None:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER into ray._private.ray_constants once, at import:
    when Ray is loaded already, set the constant too (cluster/ray/runtime.py keep_loopback)."""
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        check_ray_version()
        constants.ENABLE_RAY_CLUSTER = False


def head_agent_probe(gcs_address: str):
    """A function saying whether the head's dashboard agent is registered in the GCS (Ray's job
    server submits every job through it), read from the GCS's internal KV: no public API says."""
    check_ray_version()
    from ray._private import ray_constants as rc
    from ray._raylet import GcsClient
    from ray.dashboard.consts import DASHBOARD_AGENT_ADDR_NODE_ID_PREFIX as AGENT_KEY

    gcs = GcsClient(address=gcs_address)

    def registered() -> bool:
        head = gcs.internal_kv_get(rc.KV_HEAD_NODE_ID_KEY, rc.KV_NAMESPACE_JOB)
        return bool(
            head and gcs.internal_kv_get(f"{AGENT_KEY}{head.decode()}".encode(), rc.KV_NAMESPACE_DASHBOARD)
        )

    return registered


def max_working_dir_bytes() -> int:
    """The largest working_dir package Ray's GCS stores for a job (a job's upload over it is refused
    by the cluster after the upload; we check before)."""
    check_ray_version()
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return GCS_STORAGE_MAX_SIZE


def kill_embedded_monitor() -> None:
    """Kill the autoscaler monitor of a Ray this process started (ray._private.worker._global_node),
    before ``ray.shutdown``: stopped after the GCS in Ray's order, it reports its end to the dead GCS
    and holds the shutdown for its 1 s grace (jobs/entry.py). A Ray only joined has no such node."""
    check_ray_version()
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    for info in node.all_processes.get("monitor", []) if node else []:
        info.process.kill()


def training_result(checkpoint, metrics: dict):
    """What ``Trainable.restore`` takes to resume from ``checkpoint`` reporting ``metrics`` (Ray
    Train's _TrainingResult): how a trial resumes from its newest complete checkpoint on storage
    rather than the one the driver's snapshot named (cluster/tune/trial.py)."""
    check_ray_version()
    from ray.train._internal.checkpoint_manager import _TrainingResult

    return _TrainingResult(checkpoint=checkpoint, metrics=metrics)


def serve_client(required: bool = True):
    """The running Serve controller's client (its HTTP config says where Serve listens), or None
    when ``required`` is False and no controller runs: ray.serve.context._get_global_client, since
    no public API says where a running Serve listens."""
    check_ray_version()
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=required)


def load_tune_snapshot(data: bytes) -> dict:
    """A Tune experiment snapshot (``experiment_state-*.json``) as Tune itself reads it
    (ray.tune.utils.serialization._loads_with_cloudpickle: its JSON may embed cloudpickled values).
    It can run code: only for state the sweep's own driver wrote."""
    check_ray_version()
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    return _loads_with_cloudpickle(data)


def available_resources_per_node() -> dict[str, dict[str, float]]:
    """Node id -> the resources free on it now (CPU, GPU, ...), alive nodes only: what a trial can
    be placed on. Ray's public API has the cluster's sum (ray.available_resources) and each node's
    totals (ray.nodes), not what is free on each node."""
    check_ray_version()
    from ray._private.state import available_resources_per_node as per_node

    return per_node()
