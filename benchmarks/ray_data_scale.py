"""The Ray Data engine measured (issue 23): against the engine it replaced and the HF pipeline script,
and at scale. Not a test: run it on a quiet machine and write the figures into docs/benchmarks.md.

    # (a) side by side, whole processes, medians of --repeats: the Ray Data engine (this checkout),
    #     the shard scheduler it replaced (a checkout of a commit that still has it), the HF pipeline
    git worktree add /tmp/oldengine <commit before issue 23>      # e.g. main before the merge
    python benchmarks/ray_data_scale.py side --model best --old-engine /tmp/oldengine \\
        --rows 1000,8000,37250 --repeats 3

    # (b) scale: synthetic rows as Parquet files on a local S3 endpoint (moto), a tiny model, a
    #     local cluster of several raylets; driver peak RSS, spilling, rows/s against the actors' bare
    #     rate, each row exactly once
    python benchmarks/ray_data_scale.py scale --rows 20000,2000000 --files 40 --nodes 3

    # (c) on a GPU machine: CPU preprocessing + GPU model stage, GPU busy fraction, rows/s against a
    #     bare GPU loop
    python benchmarks/ray_data_scale.py gpu --model best --rows 37250

Smoke runs (this machine is shared): ``side --tiny --rows 300 --repeats 1`` and ``scale --rows
2000,6000 --files 4``. Every figure is measured in the run that prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.cold_start import RAY_START_FAILED, make_data  # noqa: E402
from benchmarks.scale_parts import (  # noqa: E402
    bare_rate,
    gpu_busy,
    same_scores,
    spilled_mib,
    synthetic_files,
    tiny_model,
)

ENGINES = ("raydata", "old")


class Engine:
    """One checkout's `evalctl`, run as a whole process: cold (an embedded Ray) or warm (on a head of
    its own, model loaded by a priming run), each in its own RAY_TMPDIR and ports."""

    def __init__(self, name: str, root: Path, model: str):
        from cluster.ray.runtime import free_port

        self.name, self.root, self.model = name, root, model
        base = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(root)}
        # A registry of its own: an older checkout refuses one a newer revision has upgraded (the model
        # is passed as a directory, so nothing needs the user's registry).
        base["EVALCLUSTER_HOME"] = tempfile.mkdtemp(prefix=f"home-{name}-", dir="/tmp")
        base.pop("RAY_ADDRESS", None)
        self.cold_env = {**base, "RAY_TMPDIR": tempfile.mkdtemp(prefix="c", dir="/tmp")}
        self.head_env = {**base, "RAY_TMPDIR": tempfile.mkdtemp(prefix="h", dir="/tmp")}
        self.ports = [str(free_port()), str(free_port())]

    def evalctl(self, *args, env: dict) -> tuple[float, subprocess.CompletedProcess]:
        for attempt in range(2):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "jobs.cli", *map(str, args)],
                cwd=self.root, env=env, capture_output=True, text=True,
            )  # fmt: skip
            wall = time.perf_counter() - t0
            if proc.returncode == 0 or attempt or not any(m in proc.stderr for m in RAY_START_FAILED):
                break
        if proc.returncode != 0:
            sys.exit(f"{self.name}: evalctl {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
        return wall, proc

    def up(self) -> None:
        port, dash = self.ports
        self.evalctl(
            "cluster", "up", "--port", port, "--dashboard-port", dash, "--no-serve", env=self.head_env
        )

    def down(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "jobs.cli", "cluster", "down"], cwd=self.root, env=self.head_env
        )

    def evaluate(self, mode: str, data: Path, out: Path) -> dict:
        env = self.cold_env if mode == "cold" else self.head_env
        args = ["evaluate", "--model", self.model, "--data", data, "--out", out, "--overwrite"]
        load = os.getloadavg()[0]
        wall, _ = self.evalctl(*args, env=env)
        metrics = json.loads((out / "metrics.json").read_text())
        return {
            "wall_s": wall,
            "load": load,
            **metrics.get("timings", {}),
            "warm": metrics.get("warm_actors"),
        }


def pipeline_run(model_path: str, data: Path) -> dict:
    """benchmarks/cold_start.py's plain HF pipeline script, as one whole process."""
    load, t0 = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cold_start.py"), "--pipeline", model_path, str(data)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"pipeline script failed:\n{proc.stderr[-3000:]}")
    line = next(s for s in reversed(proc.stdout.splitlines()) if s.startswith("{"))
    return {"wall_s": time.perf_counter() - t0, "load": load, **json.loads(line)}


def side(opts) -> dict:
    """(a): per size and repeat, the pipeline script, then each engine cold and warm, back to back."""
    from cluster.models.resolve import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="rdside-"))
    model = tiny_model(tmp) if opts.tiny else str(resolve_model(opts.model).path)
    engines = {"raydata": Engine("raydata", ROOT, model)}
    if opts.old_engine:
        engines["old"] = Engine("old", Path(opts.old_engine).resolve(), model)
    data = make_data(tmp, [int(n) for n in opts.rows.split(",")])
    for e in engines.values():
        e.up()
    results: dict = {}
    try:
        for n, path in data.items():
            runs: dict = {"pipeline": []}
            for r in range(opts.repeats):
                runs["pipeline"].append(pipeline_run(model, path))
                for name, e in engines.items():
                    for mode in ("cold", "warm"):
                        if mode == "warm" and r == 0:  # prime the head: its model actors load now
                            e.evaluate("warm", path, tmp / f"prime-{name}-{n}")
                        out = tmp / f"out-{name}-{mode}-{n}"
                        runs.setdefault(f"{name} {mode}", []).append(e.evaluate(mode, path, out))
                print(
                    json.dumps({"rows": n, "repeat": r + 1, **{k: v[-1] for k, v in runs.items()}}),
                    flush=True,
                )
            outs = [tmp / f"out-{name}-{mode}-{n}" for name in engines for mode in ("cold", "warm")]
            results[n] = {"runs": runs, "identical": same_scores(outs)}
    finally:
        for e in engines.values():
            e.down()
    report_side(results)
    (tmp / "side.json").write_text(json.dumps(results, default=str))
    print(f"raw results: {tmp / 'side.json'}")
    return results


def median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def report_side(results: dict) -> None:
    print("\n| rows | mode | HF pipeline | shard scheduler | Ray Data | Ray Data / scheduler | identical |")
    print("|---:|---|---:|---:|---:|---:|:---:|")
    for n, res in results.items():
        runs, base = res["runs"], median(res["runs"]["pipeline"], "wall_s")
        for mode in ("cold", "warm"):
            new, old = (
                median(runs[f"raydata {mode}"], "wall_s"),
                median(runs.get(f"old {mode}", []), "wall_s"),
            )
            ratio = f"{new / old:.2f}" if old else "-"
            old_cell = f"{old:.1f} s ({base / old:.2f}x)" if old else "-"
            print(
                f"| {n:,} | {mode} | {base:.1f} s | {old_cell} | {new:.1f} s ({base / new:.2f}x) | {ratio} | "
                f"{'yes' if res['identical'] else 'NO'} |"
            )
    keys = (
        "cli_start_s",
        "ray_init_s",
        "scan_s",
        "actors_ready_s",
        "first_batch_s",
        "inference_s",
        "finish_s",
    )
    print("\nmedian breakdown (s): " + ", ".join(keys))
    for n, res in results.items():
        for name, runs in res["runs"].items():
            if name != "pipeline":
                print(f"  {n:>6} {name:>12}: " + ", ".join(_cell(median(runs, k)) for k in keys))
    loads = [r["load"] for res in results.values() for runs in res["runs"].values() for r in runs]
    span = f"{min(loads):.1f}..{max(loads):.1f}"
    print(f"\nload average (1 min) at the runs' starts: {span}, {os.cpu_count()} CPUs")


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


# ------------------------------------------------------------------ (b) scale


def scale(opts) -> dict:
    """(b): synthetic rows on moto's S3, a local cluster of ``--nodes`` raylets; one driver per size."""
    import pyarrow.dataset as pads

    from tests.mn_cluster import LocalCluster
    from tests.s3 import S3Server

    tmp = Path(tempfile.mkdtemp(prefix="rdscale-"))
    sizes = [int(n) for n in opts.rows.split(",")]
    with S3Server() as s3:
        os.environ.update(s3.env)  # the cluster's nodes (started below) and the drivers inherit it
        uri = synthetic_files(f"s3://{s3.bucket}/scale", max(sizes), opts.files)
        model = tiny_model(tmp)
        cluster = LocalCluster(head_cpus=opts.cpus_per_node, dashboard=False)
        for _ in range(opts.nodes - 1):
            cluster.add_worker(cpus=opts.cpus_per_node)
        try:
            import ray

            ray.init(address=cluster.address, log_to_driver=False)
            bare = bare_rate(model, opts)  # rows/s of one model actor over ready blocks, summed over actors
            results = {}
            for n in sizes:
                out = tmp / f"out-{n}"
                args = ["evaluate", "--model", model, "--data", uri, "--limit", n, "--out", out,
                        "--address", cluster.address, "--bootstrap", opts.bootstrap,
                        "--no-threshold"]  # fmt: skip
                spilled_before = spilled_mib()
                run = driver(args, cluster.env())
                m = json.loads((out / "metrics.json").read_text())
                rows = pads.dataset(str(out / "predictions"), format="parquet").count_rows()
                run.update(
                    rows=n, n=m["n"], written=rows, coverage=m["recovery"]["rows"],
                    files=m["recovery"]["part_files"],
                    rows_per_s=m["timings"].get("rows_per_s"), steady=m["timings"].get("steady_rows_per_s"),
                    actors=m["worker_plan"]["actors"], spilled_mib=spilled_mib() - spilled_before,
                )  # fmt: skip
                run["bare_rows_per_s"] = bare["per_actor"] * run["actors"]
                results[n] = run
                print(json.dumps(run), flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()
    report_scale(results, bare)
    return results


RSS_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def driver(args: list, env: dict) -> dict:
    """One `evalctl` driver process: its wall time and peak resident memory (Linux ru_maxrss of the
    driver, reported by a launcher that only waits for it)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RSS_LAUNCHER, sys.executable, "-m", "jobs.cli", *map(str, args)],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"evaluate failed:\n{proc.stderr[-3000:]}")
    kib = int(
        next(line.split()[1] for line in reversed(proc.stderr.splitlines()) if line.startswith("maxrss"))
    )
    return {"wall_s": round(time.perf_counter() - t0, 1), "driver_peak_rss_mib": round(kib / 1024, 1)}


def report_scale(results: dict, bare: dict) -> None:
    head = "rows | driver peak RSS | spilled | rows/s (steady) | bare rate (actors x per actor) | ratio"
    print(f"\n| {head} | each row once |")
    print("|---:|---:|---:|---:|---:|---:|:---:|")
    for n, r in results.items():
        once = r["n"] == r["written"] == r["coverage"] == n
        ratio = r["steady"] / r["bare_rows_per_s"] if r.get("steady") else None
        print(
            f"| {n:,} | {r['driver_peak_rss_mib']:.0f} MiB | {r['spilled_mib']:.0f} MiB | {r['rows_per_s']} "
            f"({r['steady']}) | {r['bare_rows_per_s']:.0f} ({r['actors']} x {bare['per_actor']:.0f}) | "
            f"{_cell(ratio)} | {'yes' if once else 'NO'} |"
        )
    if len(results) >= 2:
        small, big = (results[k]["driver_peak_rss_mib"] for k in (min(results), max(results)))
        print(f"\ndriver peak RSS, largest vs smallest run: {big / small - 1:+.1%} (target < +20%)")


# ------------------------------------------------------------------ (c) GPU


def gpu(opts) -> dict:
    """(c): an embedded Ray on a GPU machine: the pipeline's rows/s and the GPU's busy fraction while
    it runs, against a bare loop of the same model on the GPU."""
    from cluster.models.resolve import resolve_model

    tmp = Path(tempfile.mkdtemp(prefix="rdgpu-"))
    model = tiny_model(tmp) if opts.tiny else str(resolve_model(opts.model).path)
    (path,) = make_data(tmp, [int(opts.rows)]).values()
    engine = Engine("raydata", ROOT, model)
    with gpu_busy() as busy:
        run = engine.evaluate("cold", path, tmp / "out")
    run["gpu_busy"] = busy["fraction"]
    run["bare_gpu_rows_per_s"] = bare_rate(model, opts, device="cuda", data=path)["per_actor"]
    print(json.dumps(run, indent=1))
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("side", "scale", "gpu"))
    p.add_argument("--model", default="best", help="MODEL: a fine-tuned classifier (alias, id or dir)")
    p.add_argument("--tiny", action="store_true", help="a tiny random BERT instead of --model (smoke runs)")
    p.add_argument("--old-engine", help="side: a checkout whose evalctl still runs the shard scheduler")
    p.add_argument("--rows", default=None, help="comma-separated sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", type=int, default=40, help="scale: Parquet files on S3")
    p.add_argument("--nodes", type=int, default=3, help="scale: raylets of the local cluster")
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--bootstrap", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    opts = p.parse_args()
    default_rows = {"side": "1000,8000,37250", "scale": "20000,2000000", "gpu": "37250"}
    opts.rows = opts.rows or default_rows[opts.mode]
    {"side": side, "scale": scale, "gpu": gpu}[opts.mode](opts)


if __name__ == "__main__":
    main()
