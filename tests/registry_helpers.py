"""Helpers of the registry tests: main's registry.db, damaged registry files, writer processes."""

import multiprocessing as mp
import os
from pathlib import Path

from cluster.registry import Registry

MAIN_DB = Path(__file__).parent / "data" / "registry_main_32d0bcc.db"  # see data/make_registry_main.py


def _truncated(db: Path) -> None:
    reg = Registry(db.parent)
    for i in range(300):
        reg.start_run("evaluate", {"i": i, "pad": "x" * 500})
    reg.close()  # the last connection checkpoints the WAL into the file
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


DAMAGE = {
    "bad header": (
        lambda db: db.write_bytes(b"not a database at all " * 100),
        "is not an SQLite database (bad header)",
    ),
    "truncated": (_truncated, "is damaged (truncated: "),
    "a directory": (lambda db: db.mkdir(), "is a directory, not an SQLite file"),
    "0 bytes": (lambda db: db.write_bytes(b""), "is an empty file (0 bytes), not an evalcluster registry"),
}


def snapshot(path: Path):
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else path.read_bytes()


def writers_context():
    """Processes forked from a fresh single-threaded server that has imported the registry once:
    they start in milliseconds instead of re-importing everything as spawned ones do."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["cluster.registry"])
    return ctx


def start_writer(target, *args):
    """Start ``target(*args)`` in a writers_context process with this process's EVALCLUSTER_*
    settings (a forkserver's children get the environment the server started with)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("EVALCLUSTER_")}
    proc = writers_context().Process(target=_in_env, args=(env, target, *args))
    proc.start()
    return proc


def _in_env(env, target, *args):
    for key in [k for k in os.environ if k.startswith("EVALCLUSTER_")]:
        del os.environ[key]
    os.environ.update(env)
    target(*args)
