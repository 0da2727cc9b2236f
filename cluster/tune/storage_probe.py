"""Is a sweep's storage the same storage on every node? Checked before any trial starts.

Trials run on any node and write their checkpoints to the sweep's ``storage_path``; a trial
restarted on another node (a lost node, a retried failure, a resumed sweep) must read them
back there. A local directory that only the driver's machine has would let trials start,
then fail later, one by one. So on a multi-node cluster the driver writes a probe file
with a random token into the storage, and a task pinned to each alive node reads it back.
"""

from __future__ import annotations

import logging
import secrets

from cluster.errors import UserError, first_items

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 120.0  # a node's first task starts a worker process; busy machines are slow


def filesystem(path: str):
    """(pyarrow filesystem, path on it) for a local path or a URI."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(path) if "://" in path else (pafs.LocalFileSystem(), path)


def read_probe(path: str, name: str) -> str | None:
    """On a node: the content of probe ``name`` under ``path``, or None when it is not there."""
    fs, root = filesystem(path)
    try:
        with fs.open_input_stream(f"{root.rstrip('/')}/{name}") as f:
            return f.read().decode()
    except (OSError, FileNotFoundError):
        return None


def check_storage_on_every_node(path: str) -> None:
    """Raise a UserError naming the nodes that cannot read what the driver writes to ``path``
    (a no-op on a one-node cluster: the driver's own write check covers it)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    fs, root = filesystem(path)
    name, token = f".evalcluster-probe-{secrets.token_hex(8)}", secrets.token_hex(16)
    with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as f:
        f.write(token.encode())
    try:
        seen = _read_everywhere(nodes, path, name)
    finally:
        fs.delete_file(f"{root.rstrip('/')}/{name}")
    blind = [
        f"{n['NodeID'][:12]} ({n['NodeManagerAddress']}): {seen[n['NodeID']]}"
        for n in nodes
        if seen[n["NodeID"]] != token
    ]
    if blind:
        raise UserError(
            f"storage_path {path} is not the same storage on every node: {len(blind)} of {len(nodes)} "
            f"nodes cannot read a file the driver wrote there ({first_items(blind)}); trials on them "
            "could not save or restore checkpoints. Use storage every node reaches: a shared "
            "filesystem mounted at the same path, or a bucket URI (s3://..., gs://...)"
        )
    log.info("storage %s: the probe was read back on all %d nodes", path, len(nodes))


def _read_everywhere(nodes: list[dict], path: str, name: str) -> dict[str, str]:
    """node id -> what a task pinned there read (the token, or why not)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(read_probe)
    refs = {
        n["NodeID"]: task.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(path, name)
        for n in nodes
    }
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    seen = {}
    for node_id, ref in refs.items():
        if ref not in ready:
            seen[node_id] = f"no answer within {PROBE_TIMEOUT_S:.0f} s"
            ray.cancel(ref, force=True)
            continue
        try:
            content = ray.get(ref)
        except ray.exceptions.RayError as exc:
            seen[node_id] = f"the probe task failed ({type(exc).__name__})"
            continue
        seen[node_id] = content if content is not None else "the file is not there"
    return seen
