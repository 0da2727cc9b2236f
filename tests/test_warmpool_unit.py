"""The warm pool's bookkeeping without Ray: keys, leases, LRU eviction within limits, idle unloads.

(The pool on a real head, cold vs warm results: tests/test_warm_head.py, marked `head`.)
"""

import asyncio
import os
import time

import pytest

from cluster.ray.warmpool import LEASE_STALE_S, WarmPool, actor_kind, actor_names, model_key

GIB = 2**30


class Pool:
    """A WarmPool whose evictions are recorded instead of killing actors."""

    def __init__(self, max_models=2, max_gib=4.0):
        self.killed: list[str] = []
        self.pool = WarmPool((max_models, int(max_gib * GIB)), kill=self.killed.extend)

    def call(self, method, *args):
        return asyncio.run(getattr(self.pool, method)(*args))

    def lease(self, key, keep_s=600.0, gib=1.0, n=2):
        return self.call("lease", key, actor_names(key, ["node"] * n), {"model": key}, keep_s, int(gib * GIB))

    def keys(self):
        return [m["key"] for m in self.call("describe")["models"]]


def test_the_key_follows_the_model_files_precision_and_device(tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    key = model_key(model, "auto", 0)
    assert key == model_key(model, "auto", 0) and len(key) == 16
    assert len({key, model_key(model, "fp32", 0), model_key(model, "auto", 1)}) == 3
    # What the actors load is in the key: a bare encoder (drift) never serves an evaluation.
    assert (
        key == model_key(model, "auto", 0, "text-classifier") != model_key(model, "auto", 0, "text-encoder")
    )
    later = time.time() + 5
    os.utime(model / "config.json", (later, later))  # a rewritten file: a new key, never stale weights
    assert model_key(model, "auto", 0) != key


def test_the_actor_kind_names_modality_and_model_type():
    assert actor_kind("text", classifier=True) == "text-classifier"
    assert actor_kind("text", classifier=False) == "text-encoder"
    assert actor_kind("image", classifier=True) == "image-classifier"
    assert actor_kind("text", classifier=False, task="translation") == "text-translator"


def test_least_recently_used_idle_model_leaves_first_when_over_the_model_count():
    p = Pool(max_models=2)
    for key in ("a", "b"):
        p.lease(key)
        p.call("release", key, GIB)
    p.call("touch", "a")
    p.lease("a")  # a is now the most recently used, and in use
    p.call("release", "a", GIB)
    assert p.lease("c") == ["b"]  # b was used least recently
    assert p.killed == actor_names("b", ["node"] * 2) and sorted(p.keys()) == ["a", "c"]


def test_memory_limit_evicts_idle_models_but_never_one_in_use():
    p = Pool(max_models=5, max_gib=2.5)
    p.lease("a", gib=1.0)
    p.lease("b", gib=1.0)
    assert p.lease("c", gib=1.0) == []  # 3 GiB > 2.5, but every model is in use
    assert p.call("release", "a", int(1.2 * GIB)) == ["a"]  # a is idle now: the oldest idle goes
    assert sorted(p.keys()) == ["b", "c"]


def test_keep_warm_zero_unloads_when_done_and_idle_models_expire():
    p = Pool()
    p.lease("now", keep_s=0)
    assert p.call("release", "now", GIB) == ["now"]
    p.lease("soon", keep_s=30)
    p.call("release", "soon", GIB)
    p.pool.reap(time.time() + 10)
    assert p.keys() == ["soon"]
    p.pool.reap(time.time() + 31)
    assert p.keys() == [] and p.killed == actor_names("now", ["node"] * 2) + actor_names("soon", ["node"] * 2)


def test_a_lease_not_renewed_no_longer_protects_its_model():
    p = Pool()
    p.lease("crashed", keep_s=60)
    p.pool.reap(time.time() + LEASE_STALE_S / 2)
    assert p.call("describe")["models"][0]["in_use"]  # renewed recently enough
    p.pool.reap(time.time() + LEASE_STALE_S + 61)  # client gone: lease dropped, then idle past keep
    assert p.keys() == []


@pytest.mark.parametrize("n", [1, 3])
def test_actor_names_are_per_key_node_and_index(n):
    names = actor_names("k", ["a" * 56] * n + ["b" * 56])
    assert len(set(names)) == n + 1 and all(name.startswith("evalcluster-model-k-") for name in names)
    assert (
        names[0] == "evalcluster-model-k-aaaaaaaaaaaa-0" and names[-1] == "evalcluster-model-k-bbbbbbbbbbbb-0"
    )
    assert actor_names("k", ["a" * 56] * n) == names[:n]  # a later run finds each node's actors again


def test_adopted_replacements_are_unloaded_with_the_model():
    p = Pool()
    p.lease("m", keep_s=0, n=1)
    p.call("adopt", "m", ["evalcluster-model-m-other-0"])
    assert p.call("release", "m", GIB) == ["m"]
    assert p.killed == [*actor_names("m", ["node"]), "evalcluster-model-m-other-0"]
