"""The head node's view of a cluster: nodes (alive or dead), their resources, and which
evalcluster work runs where (running jobs, Serve replicas, evaluation and trial actors).

Read through Ray's state API (``ray.util.state``), which the head's dashboard serves: it
takes a job-server URL (http://HEAD:8265) or a GCS address (HOST:6379) and needs no
``ray.init`` (so looking does not add a driver to the cluster).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Actor class names of evalcluster's work, as Ray records them (prefix match).
WORK_KINDS = {
    "ServeReplica:evalcluster:": "serve replica",
    "MapWorker(MapBatches(ModelStage))": "evaluation actor",  # Ray Data's model-stage actors
    "WarmModel": "warm model",  # their warm model actors on a running head (cluster/evaluation/warm.py)
    "SweepTrial": "sweep trial",
    "RayTrainWorker": "pretrain worker",
    "ServeController": "serve controller",
    "ProxyActor": "serve proxy",
}
SHOWN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
LIMIT = 10_000  # the most rows Ray's state API returns per call (RAY_MAX_LIMIT_FROM_API_SERVER)


@dataclass
class NodeView:
    node_id: str
    address: str
    head: bool
    alive: bool
    state_message: str | None
    resources: dict[str, float]  # totals, in Ray's units (memory in bytes)
    work: Counter = field(default_factory=Counter)  # kind -> actors of that kind on this node
    jobs: list[str] = field(default_factory=list)  # ids of running jobs whose driver is here


@dataclass
class ClusterView:
    nodes: list[NodeView]
    jobs: list[dict]  # running jobs: id, kind (submission/driver), entrypoint, node_id
    other_actors: int  # alive actors that are not evalcluster work

    def to_json(self) -> dict:
        return {
            "nodes": [{**n.__dict__, "work": dict(n.work), "resources": n.resources} for n in self.nodes],
            "jobs": self.jobs,
            "other_actors": self.other_actors,
        }


def work_kind(class_name: str) -> str | None:
    """What evalcluster work an actor of ``class_name`` is, or None (someone else's actor)."""
    name = class_name.rsplit(".", 1)[-1]  # a class defined in a function: "f.<locals>.SweepTrial"
    return next((kind for prefix, kind in WORK_KINDS.items() if name.startswith(prefix)), None)


def describe_cluster(address: str) -> ClusterView:
    """Nodes, their resources and the work on each, from the cluster at ``address``
    (a job-server URL or a GCS address)."""
    from ray.util.state import list_actors, list_jobs, list_nodes

    nodes = {
        n.node_id: NodeView(
            node_id=n.node_id,
            address=n.node_ip,
            head=bool(n.is_head_node),
            alive=str(n.state) == "ALIVE",
            state_message=n.state_message,
            resources={k: float(v) for k, v in (n.resources_total or {}).items() if k in SHOWN_RESOURCES},
        )
        for n in list_nodes(address=address, limit=LIMIT, raise_on_missing_output=False)
    }
    other = 0
    actors = list_actors(
        address=address, filters=[("state", "=", "ALIVE")], limit=LIMIT, raise_on_missing_output=False
    )
    for actor in actors:
        kind = work_kind(actor.class_name or "")
        if kind is None or actor.node_id not in nodes:
            other += 1
            continue
        nodes[actor.node_id].work[kind] += 1
    jobs = _running_jobs(list_jobs(address=address, raise_on_missing_output=False), nodes)
    ordered = sorted(nodes.values(), key=lambda n: (not n.head, not n.alive, n.node_id))
    return ClusterView(nodes=ordered, jobs=jobs, other_actors=other)


def _running_jobs(jobs, nodes: dict[str, NodeView]) -> list[dict]:
    """Running jobs (submitted ones and plain drivers), each placed on its driver's node."""
    out = []
    for job in jobs:
        if str(getattr(job.status, "value", job.status)) != "RUNNING":
            continue
        driver = job.driver_info
        node_id = getattr(job, "driver_node_id", None) or _node_of_pid_host(driver, nodes)
        entry = {
            "id": job.submission_id or job.job_id,
            "kind": str(getattr(job.type, "value", job.type)).lower(),
            "entrypoint": job.entrypoint,
            "node_id": node_id,
        }
        out.append(entry)
        if node_id in nodes:
            nodes[node_id].jobs.append(entry["id"])
    return out


def _node_of_pid_host(driver, nodes: dict[str, NodeView]) -> str | None:
    """A plain driver's node: the only alive node at its address (None when several share it)."""
    if driver is None:
        return None
    here = [n.node_id for n in nodes.values() if n.alive and n.address == driver.node_ip_address]
    return here[0] if len(here) == 1 else None
