"""A sweep's resources per trial against what the cluster has free (issue 28, point 10).

A sweep on a head where a Serve replica held a CPU asked for all of the node's CPUs per trial
and stayed PENDING for minutes with nothing printed. Here an actor holds CPUs of the shared
local Ray as a replica would (a Ray actor with num_cpus), and the defaults fit what is free, or
the sweep says at once what is missing and how to change it.
"""

import time

import pytest

from cluster.errors import UserError
from cluster.specs.workloads import DataSpec, ResourcesSpec, SweepSpec

pytestmark = pytest.mark.ray


def spec(**kw) -> SweepSpec:
    data = DataSpec(path="unused.parquet")
    return SweepSpec(train=data, validation=data, **kw)


def free_cpus() -> float:
    """The most CPUs free on one node, once Ray's view has settled."""
    from cluster.ray.compat import available_resources_per_node

    time.sleep(1)
    return max(n.get("CPU", 0.0) for n in available_resources_per_node().values())


def holder(cpus: float):
    """An actor holding ``cpus`` CPUs, as a Serve replica or a running evaluation does."""
    import ray

    @ray.remote
    class Holder:
        def ready(self) -> bool:
            return True

    actor = Holder.options(num_cpus=cpus).remote()
    ray.get(actor.ready.remote(), timeout=60)
    return actor


def test_default_cpus_fit_what_is_free_and_a_full_node_is_said_at_once(ray_cluster):
    import ray

    from cluster.tune.setup import concurrency, trial_resources

    total = max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
    free = free_cpus()
    assert free >= 1, f"the shared Ray has {free} CPUs free"
    replica = holder(1)  # what the Serve replica held
    try:
        cpus, gpus = trial_resources(spec())
        assert (cpus, gpus) == (free - 1 if free > 1 else 1, 0.0) and cpus < total  # was: total
        assert concurrency(spec(), cpus, gpus) == max(1, int((free - 1) // cpus))
        if free - 1 >= 1:
            rest = holder(free - 1)  # every CPU held now
            try:
                with pytest.raises(UserError) as err:
                    trial_resources(spec())
            finally:
                ray.kill(rest)
            msg = str(err.value)
            assert "\n" not in msg and "no node has a free CPU for a trial" in msg, msg
            assert (
                f"{total:g} CPUs, {total:g} held" in msg and "ray status" in msg and msg.endswith("free one")
            )
        with pytest.raises(UserError) as err:
            trial_resources(spec(resources=ResourcesSpec(cpus=free)))
        msg = str(err.value)
        assert f"resources.cpus = {free:g} per trial, but at most {free - 1:g} CPUs are free" in msg, msg
    finally:
        ray.kill(replica)
