"""Registry operations per second on SQLite and on a local PostgreSQL, 1 and 16 processes, in one run.

    python benchmarks/registry_load.py [--seconds 5] [--processes 1 16] [--no-fsync]

Operations, each timed on its own for ``--seconds`` with every process running it at once
(they start together at a barrier; the rate is all processes' operations over the
wall time from the barrier to the last one done):

- ``start+finish``: ``start_run`` then ``finish_run`` (two write transactions);
- ``resolve``: ``resolve_model("best")`` (an alias lookup then the model row);
- ``list 50``: ``list_runs(limit=50)`` over a registry holding hundreds of runs.

PostgreSQL 15 is started by the script itself in a temporary directory on
127.0.0.1 (tests/pg.py), with its durable defaults (fsync and synchronous
commit on; ``--no-fsync`` turns them off as the test fixture does). SQLite is
the default registry.db (WAL) in a temporary EVALCLUSTER_HOME. Every error is
counted (the target is 0). Processes come from a forkserver that has imported
the registry once, so process start-up is not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPS = ("start+finish", "resolve", "list 50")
TARGET_PAIRS_PER_S = 200  # issue 10: PostgreSQL, 16 writers


def worker(home: str, url: str | None, op: str, seconds: float, barrier, results) -> None:
    """Run ``op`` for ``seconds`` after the barrier; report (operations, errors, start, end)."""
    from cluster.registry.record import Registry

    if url:  # the forkserver's environment is the one it started with: set the backend here
        os.environ["EVALCLUSTER_DB"] = url

    reg = Registry(home)
    reg.resolve_model("best")  # opened and warm before the clock starts
    barrier.wait(300)
    start = time.time()
    ops = errors = 0
    while time.time() - start < seconds:
        try:
            if op == "start+finish":
                run_id = reg.start_run("evaluate", {"bench": True}, owner="bench")
                reg.finish_run(run_id, metrics={"f1_macro": 0.5})
            elif op == "resolve":
                assert reg.resolve_model("best") is not None
            else:
                assert len(reg.list_runs(limit=50)) == 50
            ops += 1
        except Exception as exc:  # noqa: BLE001 - counted: the figure is how many failed
            errors += 1
            print(f"error in {op}: {type(exc).__name__}: {exc}", file=sys.stderr)
    results.put((ops, errors, start, time.time()))


def measure(ctx, home: str, op: str, processes: int, seconds: float) -> tuple[float, int]:
    """(operations per second over all processes, errors)."""
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    url = os.environ.get("EVALCLUSTER_DB")
    procs = [
        ctx.Process(target=worker, args=(home, url, op, seconds, barrier, results)) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    reports = [results.get(timeout=seconds + 600) for _ in procs]
    for p in procs:
        p.join(60)
    total, errors = sum(r[0] for r in reports), sum(r[1] for r in reports)
    wall = max(r[3] for r in reports) - min(r[2] for r in reports)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    return total / wall, errors + len(failed)


def prepare(home: str) -> None:
    """A registry with a model aliased ``best`` and 200 finished runs (so list 50 has a full page)."""
    from cluster.registry.record import Registry

    reg = Registry(home)
    reg.set_alias("best", reg.register_model("/models/bench"))
    for _ in range(200):
        reg.finish_run(reg.start_run("evaluate", {}, owner="bench"), metrics={"f1_macro": 0.5})
    reg.close()


def run_backend(ctx, name: str, home: str, args) -> list[tuple]:
    prepare(home)
    rows = []
    for processes in args.processes:
        rates = [measure(ctx, home, op, processes, args.seconds) for op in OPS]
        rows.append((name, processes, *rates))
        print(
            f"  {name}, {processes} process(es): "
            + ", ".join(f"{op} {r:.0f}/s ({e} errors)" for op, (r, e) in zip(OPS, rates, strict=True)),
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per operation and setting")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync (as the tests)")
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    args = parser.parse_args()

    from tests.pg import PostgresServer

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["cluster.registry.record"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        os.environ.pop("EVALCLUSTER_DB", None)
        os.environ.pop("EVALCLUSTER_DB_FILE", None)
        if "sqlite" in args.backends:
            print("SQLite (registry.db, WAL):", flush=True)
            rows += run_backend(ctx, "SQLite", str(Path(tmp) / "sqlite-home"), args)
        if "postgresql" not in args.backends:
            return report(rows, args)
        with PostgresServer(fsync=not args.no_fsync) as pg:
            os.environ["EVALCLUSTER_DB"] = pg.url(pg.create_database())
            label = "PostgreSQL 15" + (" (fsync off)" if args.no_fsync else "")
            print(f"{label} on 127.0.0.1:", flush=True)
            rows += run_backend(ctx, label, str(Path(tmp) / "pg-home"), args)
    report(rows, args)


def report(rows: list[tuple], args) -> None:
    print(f"\n{os.cpu_count()} CPUs, {args.seconds:g} s per operation and setting\n")
    print("| backend | processes | start+finish pairs/s | resolve alias/s | list 50 runs/s | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, processes, *rates in rows:
        cells = " | ".join(f"{rate:.0f}" for rate, _ in rates)
        print(f"| {name} | {processes} | {cells} | {sum(e for _, e in rates)} |")
    for name, processes, (pairs, errors), *_ in rows:
        if name.startswith("PostgreSQL") and processes == 16:
            verdict = "met" if pairs >= TARGET_PAIRS_PER_S and errors == 0 else "NOT met"
            print(
                f"\nPostgreSQL, 16 writers: {pairs:.0f} start+finish pairs/s, {errors} errors"
                f" (target >= {TARGET_PAIRS_PER_S}/s with 0 errors: {verdict})"
            )


if __name__ == "__main__":
    main()
