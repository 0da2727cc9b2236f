"""Warm model actors on a persistent Ray: loaded once, reused by later evaluations from any client.

An evaluation on a running head (`evalctl cluster up`, or a cluster it was submitted to)
leaves its model actors loaded for ``keep_warm_s`` idle seconds: the Ray Data model stage's actors
reach these long-lived actors (cluster/evaluation/warm.py), each claiming one for its run. They are detached,
named actors in the ``evalcluster`` namespace, named after a *key*: a digest of the
model directory's files (path, size, mtime of each: a changed model is a new key, never
served stale), what is loaded from it (modality, classifier or bare encoder), the
requested precision, CPU or GPU, and the evaluation code itself (a
changed checkout never runs on actors that loaded the old one). A later evaluation
with the same key finds them by name (``ray.get_actor``) and skips the model load.

The bookkeeping is one small detached async actor, :class:`WarmPool`: which keys are
warm, who is using them (leases, renewed by ``touch`` while an evaluation runs), how
much memory their actors hold, and when each was last used. It keeps the pool within
``EVALCLUSTER_WARM_MAX_MODELS`` models and ``EVALCLUSTER_WARM_MAX_GIB`` GiB (read from
the head's environment; `evalctl cluster up --warm-models/--warm-gib` set them), evicting
the least recently used idle model first, and unloads a model idle for longer than its
``keep_warm_s``. A model in use is never evicted; a lease not renewed for
``LEASE_STALE_S`` (its client died) no longer counts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster.specs.settings import settings

NAMESPACE = "evalcluster"
MODEL_PREFIX = "evalcluster-model-"
POOL_PREFIX = "evalcluster-warm-pool-"
ENV_MAX_MODELS, ENV_MAX_GIB = (
    "EVALCLUSTER_WARM_MAX_MODELS",
    "EVALCLUSTER_WARM_MAX_GIB",
)  # cluster/specs/settings.py
LEASE_STALE_S = 120.0  # a client renews its lease every TOUCH_EVERY_S while it evaluates
TOUCH_EVERY_S = 10.0
REAP_EVERY_S = 5.0
EXIT_WHEN_EMPTY_S = 600.0  # an empty pool (e.g. of an older checkout) leaves after this long
CODE_DIRS = ("cluster", "jobs")  # the code a model actor runs


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 over the source of the code a model actor runs (a few hundred KB: ~5 ms)."""
    root = Path(__file__).resolve().parents[2]  # the checkout cluster/ lives in
    h = hashlib.sha256()
    for d in CODE_DIRS:
        for f in sorted((root / d).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def model_key(model_path: str | Path, precision: str, gpus: float, kind: str = "text-classifier") -> str:
    """The warm-pool key of a model directory at a precision, on CPU or GPU (16 hex digits).

    ``kind``: what the actors load from it, modality and model type (``text-classifier``,
    ``text-encoder`` for the drift checks, ``image-classifier``, ``text-translator``): the same
    directory loaded as a bare encoder must never serve an evaluation that needs its classifier."""
    path = Path(model_path).resolve()
    device = "gpu" if gpus > 0 else "cpu"
    h = hashlib.sha256(f"{path}\0{precision}\0{device}\0{kind}\0{code_digest()}".encode())
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"\0{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


PROCESS_BYTES = 450 * 2**20  # a model actor's memory besides its weights (torch + transformers), measured


def actor_kind(modality: str, classifier: bool, task: str = "classification") -> str:
    """What a model actor loads: ``text-classifier``, ``text-encoder`` (drift), ``image-classifier``
    ``text-translator`` (a seq2seq model with its generation code) or, for another evaluation task,
    ``{modality}-{task}`` (``image-segmentation``)."""
    if task == "translation":
        return f"{modality}-translator"
    if task != "classification":
        return f"{modality}-{task}"
    return f"{modality}-{'classifier' if classifier else 'encoder'}"


def memory_estimate(model_path: str | Path, actors: int) -> int:
    """Bytes ``actors`` model actors of the model directory ``model_path`` hold (before they report it)."""
    weights = sum(f.stat().st_size for f in Path(model_path).glob("*.safetensors"))
    return actors * (PROCESS_BYTES + weights)


def actor_names(key: str, nodes: list[str]) -> list[str]:
    """One name per entry of ``nodes`` (a node id per actor): the key, the node, an index per node."""
    seen: dict[str, int] = {}
    names = []
    for node in nodes:
        seen[node] = seen.get(node, -1) + 1
        names.append(f"{MODEL_PREFIX}{key}-{node[:12]}-{seen[node]}")
    return names


def pool_name() -> str:
    return POOL_PREFIX + code_digest()[:12]


def limits_from_env() -> tuple[int, int]:
    """(max models, max bytes) from the environment of the process that reads them."""
    s = settings()
    return s.warm_max_models, int(s.warm_max_gib * 2**30)


@dataclass
class Entry:
    """One warm model: its actors' names, how long it stays, who uses it, what it holds."""

    key: str
    names: list[str]
    label: dict  # what `cluster status` shows: model id, precision, device
    keep_s: float
    bytes: int  # resident memory of its actors (an estimate until the first release)
    leases: int = 0
    last_used: float = field(default_factory=time.time)
    touched: float = field(default_factory=time.time)
    holders: dict[str, str] = field(default_factory=dict)  # actor name -> the run using it now


class WarmPool:
    """The warm pool's bookkeeping (a detached Ray actor; see the module docstring)."""

    def __init__(self, limits: tuple[int, int] | None = None, kill: Callable[[list], None] | None = None):
        self.max_models, self.max_bytes = limits or limits_from_env()
        self.kill = kill or kill_actors  # tests pass a fake
        self.entries: dict[str, Entry] = {}
        self.empty_since = time.time()
        self._reaper: asyncio.Task | None = None

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def lease(self, key: str, names: list[str], label: dict, keep_s: float, est_bytes: int) -> list:
        """An evaluation starts using ``key``'s actors (created by the caller under ``names``);
        returns the keys evicted to make room."""
        self._start_reaper()
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = Entry(key, list(names), label, keep_s, est_bytes)
        entry.names = sorted(set(entry.names) | set(names))
        entry.keep_s, entry.leases = keep_s, entry.leases + 1
        entry.last_used = entry.touched = time.time()
        return self._trim()

    async def adopt(self, key: str, names: list[str]) -> None:
        """Actors started for ``key`` in place of lost ones (unloaded with the others)."""
        if key in self.entries:
            self.entries[key].names = sorted(set(self.entries[key].names) | set(names))

    async def touch(self, key: str) -> None:
        """The evaluation using ``key`` is alive (renews its lease)."""
        if key in self.entries:
            self.entries[key].touched = time.time()

    async def claim(self, key: str, run: str, node: str) -> tuple[str, bool]:
        """A model actor of ``key`` on ``node`` for the run ``run`` alone: the name of one no other
        run holds (``True``: it was made before, so it is loaded or loading), else a new name on that
        node (``False``: the caller creates it). Each model-stage actor of a run claims one."""
        entry = self.entries[key]
        on_node = [n for n in entry.names if n.startswith(f"{MODEL_PREFIX}{key}-{node[:12]}-")]
        free = [n for n in on_node if n not in entry.holders]
        if free:
            entry.holders[free[0]] = run
            return free[0], True
        name = next(n for n in actor_names(key, [node] * (len(on_node) + 1)) if n not in entry.names)
        entry.names.append(name)
        entry.holders[name] = run
        return name, False

    async def held(self, key: str, run: str) -> list[str]:
        """The names of the actors ``run`` holds."""
        entry = self.entries.get(key)
        return [] if entry is None else sorted(n for n, r in entry.holders.items() if r == run)

    async def release(self, key: str, rss_bytes: int, run: str | None = None) -> list:
        """An evaluation is done with ``key`` (``rss_bytes``: its actors' memory now; ``run``: the
        actors it claimed are free again); returns the keys evicted (this one too when it may not
        stay: ``keep_s`` 0, or over the limits)."""
        entry = self.entries.get(key)
        if entry is None:
            return []
        entry.holders = {n: r for n, r in entry.holders.items() if r != run}
        entry.leases = max(0, entry.leases - 1)
        entry.bytes, entry.last_used = rss_bytes, time.time()
        if entry.keep_s <= 0 and entry.leases == 0:
            self._evict(key)
            return [key, *self._trim()]
        return self._trim()

    async def describe(self) -> dict:
        """The pool as `evalctl cluster status` shows it."""
        now = time.time()
        models = [
            {
                **e.label,
                "key": e.key,
                "actors": len(e.names),
                "memory_bytes": e.bytes,
                "in_use": e.leases > 0,
                "idle_s": 0.0 if e.leases else round(now - e.last_used, 1),
                "unload_in_s": None if e.leases else round(max(0.0, e.keep_s - (now - e.last_used)), 1),
            }
            for e in sorted(self.entries.values(), key=lambda e: -e.last_used)
        ]
        return {"max_models": self.max_models, "max_bytes": self.max_bytes, "models": models}

    def _trim(self) -> list:
        """Evict least recently used idle models until the pool is within its limits."""
        evicted = []
        while len(self.entries) > self.max_models or self._bytes() > self.max_bytes:
            idle = [e for e in self.entries.values() if e.leases == 0]
            if not idle:
                break  # everything is in use: trimmed when released
            victim = min(idle, key=lambda e: e.last_used).key
            self._evict(victim)
            evicted.append(victim)
        return evicted

    def _bytes(self) -> int:
        return sum(e.bytes for e in self.entries.values())

    def _evict(self, key: str) -> None:
        self.kill(self.entries.pop(key).names)
        if not self.entries:
            self.empty_since = time.time()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            self.reap(time.time())

    def reap(self, now: float) -> None:
        """Drop stale leases, unload models idle past their time; leave when long empty."""
        for e in list(self.entries.values()):
            if e.leases and now - e.touched > LEASE_STALE_S:
                e.leases, e.last_used, e.holders = 0, e.touched, {}
            if not e.leases and now - e.last_used > e.keep_s:
                self._evict(e.key)
        if not self.entries and now - self.empty_since > EXIT_WHEN_EMPTY_S:
            import ray

            ray.kill(ray.get_runtime_context().current_actor)  # a client's next call starts a new one


def kill_actors(names: list[str]) -> None:
    """End the named model actors (those already gone are skipped)."""
    import ray

    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE))
        except ValueError:
            continue


# ------------------------------------------------------------------ the client side


def pool_actor(name: str | None = None):
    """The warm pool ``name`` (default: this code version's) on the connected Ray, started on first
    use. A run's workers use the pool its driver named, even if their code was read later."""
    import ray

    return (
        ray.remote(WarmPool)
        .options(
            name=name or pool_name(),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=64,
        )
        .remote()
    )


def describe_pools() -> list[dict]:
    """Every warm pool on the connected Ray (one per code version that used it), described."""
    import ray
    from ray.util import list_named_actors

    names = [
        a["name"]
        for a in list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(POOL_PREFIX)
    ]
    out = []
    for name in sorted(names):
        try:
            out.append({"pool": name, **ray.get(ray.get_actor(name, namespace=NAMESPACE).describe.remote())})
        except (ValueError, ray.exceptions.RayActorError):  # it left meanwhile
            continue
    return out
