"""One Ray worker node joining GCS_ADDRESS, as ray.cluster_utils.Cluster.add_node starts one.

    python -m tests.mn_node GCS_ADDRESS CPUS AGENT_PORT METRICS_PORT

Used by tests/mn_cluster.py to start a node inside its own mount namespace (`unshare -m`),
which plain `Cluster.add_node` cannot do. Prints ``node <id>`` once the node is up, then
stays until SIGTERM, when it kills its node's processes.
"""

from __future__ import annotations

import signal
import sys
import threading


def main(gcs_address: str, cpus: str, agent_port: str, metrics_port: str) -> None:
    import ray._private.node
    import ray._private.parameter
    import ray._private.services

    params = ray._private.parameter.RayParams(
        gcs_address=gcs_address,
        num_cpus=float(cpus),
        num_gpus=0,
        node_ip_address="127.0.0.1",
        object_store_memory=200 * 1024**2,
        min_worker_port=0,
        max_worker_port=0,
        include_log_monitor=False,
        node_manager_port=0,
        dashboard_agent_listen_port=int(agent_port),
        metrics_export_port=int(metrics_port),
    )
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    ray._private.services.wait_for_node(gcs_address, node.plasma_store_socket_name, 30)
    print(f"node {node.node_id}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
