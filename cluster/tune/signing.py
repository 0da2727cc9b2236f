"""Tune's pickled state on sweep storage, signed by the driver that writes it and checked before
anything reads it.

Tune pickles its state (``tuner.pkl``; the ``experiment_state-*.json`` snapshots, whose trials are
cloudpickled; the search algorithm's ``basic-variant-state-*.json``, ``search_gen_state-*.json``,
``searcher-state-*.pkl``; ``callback-states-*.pkl``; a failed trial's ``error.pkl``) and unpickles
it on ``Tuner.restore``: a file planted in sweep storage would run code on `sweep resume` (and the
sweep's own spec file, JSON, says what a resume runs, so it is signed too). So
the sweep's storage filesystem is :func:`signed_filesystem`: every such file written through it
gets its HMAC-SHA256 recorded in the ledger ``evalcluster-state.sig`` beside it *before* the
file itself is written, and a read of such a file hands out its bytes only if their HMAC is in
the ledger (else :class:`UnsignedState`). The key (32 random bytes, 0600) is
``EVALCLUSTER_HOME/sweep-state.key`` on the machine whose driver writes the state (where
`evalctl sweep` ran, or the head a sweep job was submitted to); the handler keeps only its path,
so the key is never pickled into tuner.pkl nor sent to a trial.

The ledger keeps each file's last LEDGER_DEPTH HMACs: a driver killed between the ledger write
and the file write leaves the previous file valid. A file a kill cut short fails the check like
any damage (cluster/tune/state.py repairs or refuses it).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from cluster.errors import UserError

log = logging.getLogger(__name__)
KEY_FILE = "sweep-state.key"
LEDGER = "evalcluster-state.sig"
LEDGER_DEPTH = 4
SPEC_FILE = "evalcluster_sweep.json"  # the sweep's spec and run id, for `sweep resume` (jobs/sweep.py)
SIGNED = (  # names relative to the experiment directory
    SPEC_FILE,
    "tuner.pkl",
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "search_gen_state-*.json",
    "searcher-state-*.pkl",
    "callback-states-*.pkl",
    "*/error.pkl",
)


class UnsignedState(UserError):
    """A state file whose bytes this machine's key never signed (planted, altered or cut short)."""


def driver_key(key_file: str | Path, create: bool = False) -> bytes | None:
    """The signing key; made (0600) when ``create`` and absent; None when absent."""
    path = Path(key_file)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another driver made it meanwhile
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
    if not path.is_file():
        return None
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; tightened to 0600", path)
        path.chmod(0o600)
    return path.read_bytes()


def is_signed(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pat) and rel.count("/") == pat.count("/") for pat in SIGNED)


class SignedStorage(pafs.FileSystemHandler):
    """A pyarrow filesystem handler over ``inner`` that signs and checks the state files of the
    experiment directory ``root`` (see the module docstring); everything else passes through."""

    def __init__(self, inner: pafs.FileSystem, root: str, key_file: str):
        self.inner, self.root, self.key_file = inner, root.rstrip("/"), str(key_file)
        self._lock = threading.Lock()  # copy_files writes files from several threads

    def __getstate__(self) -> dict:  # the key's path, never the key
        return {"inner": self.inner, "root": self.root, "key_file": self.key_file}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __eq__(self, other) -> bool:
        return isinstance(other, SignedStorage) and self.__getstate__() == other.__getstate__()

    # -------------------------------------------------------------- signing and checking

    def rel(self, path: str) -> str | None:
        """``path`` relative to the experiment directory when it is a signed state file."""
        prefix = self.root + "/"
        rel = path[len(prefix) :] if path.startswith(prefix) else None
        return rel if rel is not None and is_signed(rel) else None

    def put(self, path: str, data: bytes) -> None:
        """Record ``data``'s HMAC in the ledger, then write ``data`` to ``path``."""
        rel, key = self.rel(path), driver_key(self.key_file, create=True)
        mac = _mac(key, rel, data)
        with self._lock:
            ledger = self.ledger()
            macs = ledger.setdefault(rel, [])
            if mac not in macs:
                ledger[rel] = (macs + [mac])[-LEDGER_DEPTH:]
                self._write_ledger(ledger)
        self._write_whole(path, data)  # a driver killed meanwhile leaves the old file, still signed

    def checked(self, path: str) -> bytes:
        """The bytes of the signed file ``path``, if this machine's key signed them."""
        rel = self.rel(path)
        with self.inner.open_input_stream(path) as f:
            data = f.readall()
        key = driver_key(self.key_file)
        if key is None:
            raise UnsignedState(f"{path}: this machine has no sweep key ({self.key_file}) to check it with")
        if _mac(key, rel, data) not in self.ledger().get(rel, []):
            raise UnsignedState(
                f"{path}: its {len(data)} bytes are not what this sweep's driver wrote (cut short, "
                f"altered or planted: their HMAC is not in {LEDGER}); not loaded"
            )
        return data

    def ledger(self) -> dict[str, list[str]]:
        """File -> its last HMACs (hex); {} when there is no ledger yet."""
        try:
            with self.inner.open_input_stream(f"{self.root}/{LEDGER}") as f:
                return json.loads(f.readall())
        except FileNotFoundError:
            return {}

    def _write_ledger(self, ledger: dict) -> None:
        self._write_whole(f"{self.root}/{LEDGER}", json.dumps(ledger, indent=1).encode())

    def _write_whole(self, path: str, data: bytes) -> None:
        """``data`` at ``path``, all of it or none: a driver SIGKILLed mid-write (the resume tests
        kill drivers at random moments) left a truncated, 0-byte state file, refused on resume."""
        if isinstance(self.inner, pafs.LocalFileSystem):  # beside, then renamed (atomic on POSIX)
            with self.inner.open_output_stream(f"{path}.tmp") as f:
                f.write(data)
            self.inner.move(f"{path}.tmp", path)
        else:  # an object store's PUT is atomic
            with self.inner.open_output_stream(path) as f:
                f.write(data)

    # -------------------------------------------------------------- pyarrow's handler interface

    def open_output_stream(self, path, metadata):
        if self.rel(path) is None:
            return self.inner.open_output_stream(path, metadata=metadata)
        return pa.PythonFile(_Signing(self, path), mode="w")

    def open_input_stream(self, path):
        return pa.BufferReader(self.checked(path)) if self.rel(path) else self.inner.open_input_stream(path)

    def open_input_file(self, path):
        return pa.BufferReader(self.checked(path)) if self.rel(path) else self.inner.open_input_file(path)

    def move(self, src, dest):
        if self.rel(dest) is not None:  # e.g. cluster/tune/state.py's atomic rewrite
            with self.inner.open_input_stream(src) as f:
                self.put(dest, f.readall())
            self.inner.delete_file(src)
        else:
            self.inner.move(src, dest)

    def copy_file(self, src, dest):
        if self.rel(dest) is not None:
            self.put(
                dest, self.checked(src) if self.rel(src) else self.inner.open_input_stream(src).readall()
            )
        else:
            self.inner.copy_file(src, dest)

    def open_append_stream(self, path, metadata):
        if self.rel(path) is not None:
            raise OSError(f"{path}: a signed state file is written whole, not appended to")
        return self.inner.open_append_stream(path, metadata=metadata)

    def get_type_name(self):
        return f"evalcluster-signed+{self.inner.type_name}"

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.inner.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.inner.delete_file(path)


class _Signing(io.BytesIO):
    """A signed file being written: held whole, signed and written when closed."""

    def __init__(self, store: SignedStorage, path: str):
        super().__init__()
        self.store, self.path = store, path

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            self.store.put(self.path, data)


def signed_filesystem(experiment: str, key_file: str | Path) -> tuple[pafs.FileSystem, str]:
    """(the signing filesystem, the experiment directory's path on it) for ``experiment``, a
    sweep's directory on storage (a local path or a URI)."""
    from cluster.data.storage import resolve

    inner, root = resolve(experiment)
    return pafs.PyFileSystem(SignedStorage(inner, root, str(key_file))), root.rstrip("/")


def _mac(key: bytes, rel: str, data: bytes) -> str:
    """HMAC-SHA256 over the file's name and bytes: a signed file cannot stand in for another."""
    return hmac.new(key, rel.encode() + b"\0" + data, hashlib.sha256).hexdigest()
