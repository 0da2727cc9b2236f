"""Model directories kept in the artifact store: published with a checksum, downloaded once per node.

A registered model lives where the registry's ``models.path`` says: a directory on
this machine (loaded in place, as always) or a URI in the artifact store
(cluster/registry/artifacts.py). A process that needs a stored model (the driver, a Ray Data
inference actor, a Serve replica) calls :meth:`ModelSource.local_path`: the first
one on a node downloads it into the node's cache, keyed by the model id::

    $EVALCLUSTER_CACHE (default $EVALCLUSTER_HOME/cache)/models/<model-id>/
    $EVALCLUSTER_CACHE/models/<model-id>.verified     the checksum the copy matched

and verifies it against the checksum recorded at registration before anything
loads it; later ones (on the node, under a file lock) reuse the verified copy.
A copy that does not match is deleted and the load refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cluster.data.storage import is_remote, is_uri, resolve
from cluster.errors import UserError
from cluster.registry.artifacts import ArtifactStore, dir_checksum, fetch_dir, publish, remove
from cluster.specs.settings import settings

CACHE_ENV = "EVALCLUSTER_CACHE"
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ModelSource:
    """Where a model is kept, its id and its recorded checksum (None: nothing recorded)."""

    location: str  # a local directory or a URI
    model_id: str
    checksum: str | None = None

    def local_path(self) -> Path:
        """A directory on this machine holding the model (downloaded and verified if remote)."""
        return fetch_model(self)[0]


def cache_root() -> Path:
    from cluster.registry.record import default_home

    return (settings().cache or default_home() / "cache").expanduser()


def fetch_model(source: ModelSource) -> tuple[Path, str | None]:
    """(local directory, checksum of that copy) for ``source``.

    A local location is returned as it is (checksum not recomputed: None). A remote one
    comes from this node's cache when a copy verified against ``source.checksum`` is
    there; else it is downloaded (under a per-model file lock), verified, and cached.
    Without a recorded checksum (a URI that is not registered) it is downloaded again.
    """
    if not is_remote(source.location):
        return Path(resolve(source.location)[1] if is_uri(source.location) else source.location), None
    key = cache_key(source)
    dest = cache_root() / "models" / key
    marker = dest.with_name(f"{key}.verified")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(dest.with_name(f"{key}.lock")):
        if source.checksum and dest.is_dir() and _read(marker) == source.checksum:
            return dest, source.checksum
        got = _download_verified(source, dest)
        marker.write_text(got)
    return dest, got


def _download_verified(source: ModelSource, dest: Path) -> str:
    """Download into a fresh directory beside ``dest``, check the checksum, then put it in place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        fetch_dir(source.location, tmp)
        got = dir_checksum(tmp)
        if source.checksum and got != source.checksum:
            raise UserError(
                f"model {source.model_id} at {source.location} does not match the checksum recorded at "
                f"registration ({got[:19]}... instead of {source.checksum[:19]}...): its files were "
                "changed or are incomplete; nothing was loaded"
            )
        dest.with_name(f"{dest.name}.verified").unlink(missing_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        return got
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_key(source: ModelSource) -> str:
    """The model id when it is a safe file name (registered ids are), else a hash of the location."""
    if _SAFE_KEY.fullmatch(source.model_id):
        return source.model_id
    return "uri-" + hashlib.sha256(source.location.encode()).hexdigest()[:16]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        yield


# ------------------------------------------------------------------ storing


def store_model(save: Callable[[Path], Path], model_id: str, store: ArtifactStore, staging: Path):
    """Save a model directory into the artifact store; returns (location, checksum) to register.

    ``save(out)`` writes a complete model directory at ``out`` (which must not exist).
    A local store gets it in place; a remote one gets it from a staging copy, removed
    afterwards. Register only after this returns: the files are complete by then.
    """
    location = store.model_location(model_id)
    if not store.remote:
        path = save(Path(resolve(location)[1]))
        return str(path), dir_checksum(path)
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{model_id}.", dir=staging) as tmp:
        path = save(Path(tmp) / model_id)
        checksum = dir_checksum(path)
        try:
            publish(path, location, last="config.json")
        except BaseException:
            remove(location)
            raise
    return location, checksum
