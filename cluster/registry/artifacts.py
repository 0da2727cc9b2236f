"""Where runs' artifacts and registered models are kept: a local directory or an object store.

``EVALCLUSTER_ARTIFACTS`` = a local directory (default: ``EVALCLUSTER_HOME``) or a URI
(``s3://bucket/prefix``, ``gs://...``, ``file://...``; cluster/data/storage.py). Layout under it::

    runs/<run-id>/       metrics.json, predictions.parquet, report.html
    models/<model-id>/   a model directory (docs/contracts.md)

The registry records each run's and model's location (a path or a URI). Nothing
half-written is registered: files are written completely on local disk first
(the run's staging directory, or the saved model directory), then published to
the store, and only then is the registry record written. Within a run directory
``metrics.json`` is published last, so its presence still means the run completed.

A model's checksum (:func:`dir_checksum`) is recorded at registration; a node that
downloads the model verifies it (cluster/models/cache.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from cluster.data.storage import check_location, is_remote, is_uri, join, resolve, storage_error
from cluster.errors import UserError
from cluster.specs.settings import settings

log = logging.getLogger(__name__)
ENV = "EVALCLUSTER_ARTIFACTS"
CHUNK = 1 << 20  # bytes read at a time when hashing


@dataclass(frozen=True)
class ArtifactStore:
    """The artifact root: ``runs/`` and ``models/`` below it (a local directory or a URI)."""

    root: str

    @classmethod
    def from_env(cls, home: str | Path) -> ArtifactStore:
        """``EVALCLUSTER_ARTIFACTS`` if set, else ``home`` (EVALCLUSTER_HOME)."""
        root = check_location((settings().artifacts or "").strip() or str(home), ENV)
        if is_uri(root) and not is_remote(root):  # file://: this machine's disk, kept as a plain path
            root = resolve(root)[1]
        return cls(root)

    @property
    def remote(self) -> bool:
        """True when the store is not this machine's disk (files are staged here, then uploaded)."""
        return is_remote(self.root)

    def run_location(self, run_id: str) -> str:
        return join(self.root, "runs", run_id)

    def model_location(self, model_id: str) -> str:
        return join(self.root, "models", model_id)

    def check_writable(self) -> None:
        """Fail now, before anything is recorded, when the store cannot be written (a probe object)."""
        if not self.remote:
            return
        fs, root = resolve(self.root)
        probe = f"{root}/.write-probe-{os.getpid()}"
        try:
            with fs.open_output_stream(probe) as f:
                f.write(b"ok")
            fs.delete_file(probe)
        except OSError as exc:
            raise storage_error(exc, self.root, f"write artifacts ({ENV}) to") from exc


# ------------------------------------------------------------------ publishing


def publish(local_dir: Path, dest: str, last: str | None = None) -> None:
    """Copy every file under ``local_dir`` to ``dest`` (a directory path or URI); ``last`` goes last.

    Locally the copy is a plain copy tree (``dest`` == ``local_dir`` is a no-op).
    """
    local_dir = Path(local_dir)
    files = sorted(p for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)  # stable: ``last`` moves to the end
    fs, root = resolve(dest)
    if isinstance(fs, pafs.LocalFileSystem) and Path(root).resolve() == local_dir.resolve():
        return
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(root, recursive=True)  # (an object store has no directories to create)
        for path in files:
            rel = path.relative_to(local_dir).as_posix()
            pafs.copy_files(
                str(path),
                f"{root}/{rel}",
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=fs,
            )
    except OSError as exc:
        raise storage_error(exc, dest, "write") from exc
    log.info("published %d files to %s", len(files), dest)


def remove(location: str) -> None:
    """Delete a directory of artifacts (best effort: used to clean up after a failure)."""
    try:
        fs, root = resolve(location)
        if fs.get_file_info(root).type != pafs.FileType.NotFound:
            fs.delete_dir(root)
    except (OSError, UserError) as exc:
        log.warning("could not remove %s: %s", location, exc)


# ------------------------------------------------------------------ reading


@contextlib.contextmanager
def open_input(location: str, what: str = "artifact") -> Iterator:
    """A seekable binary file for ``location`` (path or URI); UserError if it cannot be opened."""
    fs, path = resolve(location)
    try:
        f = fs.open_input_file(path)
    except FileNotFoundError as exc:
        raise UserError(f"{what} {location} not found") from exc
    except OSError as exc:
        raise storage_error(exc, location, "read") from exc
    with f:
        yield f


def read_text(location: str, what: str = "artifact") -> str:
    with open_input(location, what) as f:
        return f.read().decode()


def exists(location: str) -> bool:
    fs, path = resolve(location)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as exc:
        raise storage_error(exc, location, "read") from exc


def fetch_file(location: str, dest: Path) -> Path:
    """Download one file to ``dest`` (written beside it, then renamed: never half a file)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open_input(location) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
    tmp.replace(dest)
    return dest


def fetch_dir(location: str, dest: Path) -> None:
    """Download every file under ``location`` into the (new or empty) directory ``dest``."""
    fs, root = resolve(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        if not infos:
            raise UserError(f"{location} is empty or does not exist")
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            target = Path(dest) / info.path[len(root) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(
                info.path, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
            )
    except OSError as exc:
        raise storage_error(exc, location, "download") from exc


# ------------------------------------------------------------------ checksums


def dir_checksum(path: Path) -> str:
    """``sha256:<hex>`` over the sorted manifest of a directory: one ``relpath<TAB>size<TAB>sha256``
    line per file. Any changed, added, removed or renamed file changes it.

    >>> import tempfile; d = Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("x")
    >>> dir_checksum(d) == dir_checksum(d) and dir_checksum(d).startswith("sha256:")
    True
    """
    lines = []
    for p in sorted(Path(path).rglob("*"), key=lambda q: q.relative_to(path).as_posix()):
        if p.is_file():
            lines.append(f"{p.relative_to(path).as_posix()}\t{p.stat().st_size}\t{_file_sha256(p)}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
