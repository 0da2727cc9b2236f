"""Evaluation images/s: `evalctl evaluate` (the product path) against a plain PyTorch loop.

    python benchmarks/image_throughput.py [--model DIR] [--size 64] [--rounds 2]
                                          [--modes cold,head,warm] [--out FILE.json]

Both classify the animal-mnist test split (1,000 PNGs, written by `evalctl data sample
--images`) with the same image model directory at the same precision (auto: bf16 where
the CPU has it natively). The baseline is what one would write by hand: a
``torch.utils.data.Dataset`` decoding each PNG with the model's own preprocessing, a
``DataLoader`` (batch 64, workers = cores - 1, at least 1), ``inference_mode`` + autocast.

`evalctl evaluate` runs in the modes of MODES below (``--modes``); the head is
`evalctl cluster up` in a RAY_TMPDIR and on ports of its own, stopped by `evalctl cluster
down` at the end (which stops only it), as benchmarks/cold_start.py does.

Two figures each, every run a separate process:
  whole process  rows / wall time of the whole command (interpreter start, imports,
                 model loading, Ray start-up or joining for evalctl, decoding, inference,
                 writing)
  steady state   evalctl: ``timings.steady_rows_per_s`` of metrics.json (first actor
                 ready -> last output); plain loop: rows after the first batch / time
                 after the first batch
Per round the modes run back to back (plain, cold, cold_1actor, head, warm) and the best
round of each is reported (other tenants only ever slow a round down) with its ratio to
the plain loop's best, every round (with its load average) in the JSON. Where the actor's
own time goes: benchmarks/image_parts.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# cold: an embedded Ray (the command starts and ends it); cold_1actor: the same with --workers 1
# (one actor using every core, the shape before image shards were cut for the actors); head: a
# running head (`evalctl cluster up` on ports of its own), model not loaded; warm: right after
# head, its actors still loaded (the warm pool), unloaded afterwards (--keep-warm-s 0).
MODES = ("cold", "cold_1actor", "head", "warm")
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PLAIN = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, pyarrow.parquet as pq, torch
from cluster.data.images import decode_images, normalize
from cluster.models.device import autocast, resolve_precision
from cluster.models.vision import load_image_model

model_dir, data, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = load_image_model(model_dir)
prep = model.config.preprocessing
precision = resolve_precision("auto", "cpu")
images = pq.read_table(data, columns=["image"])["image"].to_pylist()

class Images(torch.utils.data.Dataset):
    def __len__(self):
        return len(images)
    def __getitem__(self, i):
        return torch.from_numpy(decode_images([images[i]], prep).pixels[0])

loader = torch.utils.data.DataLoader(Images(), batch_size=64, num_workers=workers)
n, first, preds = 0, None, []
with torch.inference_mode(), autocast(precision, "cpu"):
    for batch in loader:
        preds.append(model(normalize(batch, prep)).logits.float().argmax(1))
        n += len(batch)
        if first is None:
            first, n_first = time.perf_counter(), n
end = time.perf_counter()
print(json.dumps({"rows": n, "precision": precision, "in_process_s": end - t0,
                  "steady_rows_per_s": (n - n_first) / max(end - first, 1e-9)}))
"""


def run_plain(model: Path, data: Path, workers: int) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, str(model), str(data), str(workers)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "load": load, "wall_s": wall, "whole_rows_per_s": out["rows"] / wall}


def run_evalctl(bench, mode: str, model: Path, data: Path, out: Path) -> dict:
    """One `evalctl evaluate` as a whole process (cold_start.Bench: its own RAY_TMPDIRs, a head on
    its own ports; Ray failing to start under load is run again once, and counted)."""
    if mode == "cold_1actor":  # the shape before this change: one actor, every core its threads
        load = os.getloadavg()[0]
        args = ["evaluate", "--model", model, "--data", data, "--out", out, "--overwrite", "--workers", "1"]
        wall, _ = bench.evalctl(*args, env=bench.cold_env)
        t = {"wall_s": wall, "load": load, **json.loads((out / "metrics.json").read_text())["timings"]}
    else:
        t = bench.evaluate(mode, data, out)
    m = json.loads((out / "metrics.json").read_text())
    return {
        "rows": m["n"],
        "precision": m["precision_mode"],
        "load": t["load"],
        "wall_s": t["wall_s"],
        "whole_rows_per_s": m["n"] / t["wall_s"],
        "steady_rows_per_s": t.get("steady_rows_per_s"),
        "timings": {k: v for k, v in t.items() if k not in ("wall_s", "load")},
        "workers": [{k: w[k] for k in ("rows", "shards")} for w in m["workers"]],
    }


def image_model(tmp: Path, size: int) -> Path:
    from cluster.data.image_data import ANIMAL_LABELS
    from cluster.models.vision import new_image_classifier, save_image_model_dir

    model = new_image_classifier(sorted(ANIMAL_LABELS), pretrained=True, image_size=size)
    return save_image_model_dir(model, tmp / "model", {"note": "benchmark model, ImageNet backbone"})


def make_bench(model: Path, tmp: Path):
    """cold_start.Bench with its Ray directories under /tmp/itp and a registry of its own."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cold_start import Bench

    bench = Bench(str(model), tmp)
    base = Path(tempfile.mkdtemp(prefix="tp", dir="/tmp/itp" if Path("/tmp/itp").is_dir() else "/tmp"))
    for name, env in (("c", bench.cold_env), ("h", bench.head_env)):
        (base / name).mkdir()
        env.update(RAY_TMPDIR=str(base / name), EVALCLUSTER_HOME=str(tmp / "home"))
    return bench


def ratios(rounds: list[dict], modes: list[str]) -> tuple[dict, dict]:
    """Best round of each mode (other tenants only ever slow a round down), and mode / plain."""
    keys = ("whole_rows_per_s", "steady_rows_per_s")
    best = {m: {k: max(rd[m][k] for rd in rounds) for k in keys} for m in ["plain", *modes]}
    return best, {m: {k: round(best[m][k] / best["plain"][k], 3) for k in keys} for m in modes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="Image model dir (default: ImageNet backbone + new head).")
    ap.add_argument("--size", type=int, default=64, help="Input side of the default model.")
    ap.add_argument("--data", type=Path, help="Test split (default: written to a temp dir).")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES), help=f"evalctl modes, of {', '.join(MODES)}")
    ap.add_argument("--out", type=Path, help="Write the JSON here too.")
    args = ap.parse_args()
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.data is None:
            from cluster.data.image_data import sample_image_splits

            sample_image_splits(tmp / "images")
            args.data = tmp / "images" / "test.parquet"
        model = args.model or image_model(tmp, args.size)
        workers = max(1, (os.cpu_count() or 2) - 1)
        bench = make_bench(model, tmp)
        rounds = []
        if {"head", "warm"} & set(modes):
            bench.head_up()
        try:
            for r in range(args.rounds):
                rounds.append({"round": r, "plain": {**run_plain(model, args.data, workers)}})
                for mode in modes:
                    rounds[-1][mode] = run_evalctl(bench, mode, model, args.data, tmp / f"eval-{mode}")
                print(json.dumps(rounds[-1]), flush=True)
        finally:
            if {"head", "warm"} & set(modes):
                bench.head_down()
    best, ratio = ratios(rounds, modes)
    loads = [rd[m]["load"] for rd in rounds for m in ["plain", *modes]]
    result = {
        "best": best,
        "ratio_over_plain": ratio,
        "load_avg_1m": [min(loads), max(loads)],
        "ray_start_retries": bench.retries,
        "cpus": os.cpu_count(),
        "rounds": rounds,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
