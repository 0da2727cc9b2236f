"""Where an image evaluation actor's time goes, and what each change to it bought: one process.

    python benchmarks/image_parts.py [--size 64] [--rounds 4] [--threads 1] [--out FILE.json]

The animal-mnist test split (972 PNGs) through the steps a model actor runs
(cluster/evaluation/classify_model.py), each step timed in CPU seconds of this process (``time.process_time``:
other tenants of a shared machine move it far less than wall time; with ``--threads 1``
CPU seconds are the work itself). Variants take turns for ``--rounds`` rounds (round 0 is
a warm-up, not counted); the best turn of each is reported with its ratio to the
baseline, every turn in the JSON.

  decode       PNG bytes -> resized uint8 (cluster.data.images.decode_images)
  infer/as_loaded   the model as load_image_model returns it (channels_last), batch 64,
                    inference_mode + autocast at --precision
  infer/prepared    after cluster.models.vision.prepare_for_inference (BatchNorm folded into the
                    convolutions, kernels built by one forward pass)
  first_batch       CPU seconds of the first batch of a freshly loaded model, as loaded and
                    prepared: what a warm-up pass at load takes off the first shard
  fidelity_to_fp32  each variant against the model as loaded in fp32: largest probability
                    difference, share of rows with the same top class
  sharding          whether an image's probabilities are bit-identical when the rows are
                    cut at another place (a shard boundary mid-batch), per precision, and
                    the largest difference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_s(fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``fn()``."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def fresh_model(model_dir: Path, prepared: bool, precision: str):
    from cluster.models.vision import load_image_model, prepare_for_inference

    model = load_image_model(model_dir)
    return prepare_for_inference(model, precision=precision) if prepared else model


def probs(model, pixels, precision: str, batch: int = 64) -> np.ndarray:
    from cluster.models.vision import predict_proba_pixels

    return predict_proba_pixels(model, pixels, batch_size=batch, precision=precision)


def turns(args, model_dir: Path, images: list, pixels) -> dict:
    """decode and the two inference variants, alternating; CPU and wall seconds per turn."""
    from cluster.data.images import decode_images

    prep = fresh_model(model_dir, False, "fp32").config.preprocessing
    models = {p: fresh_model(model_dir, p == "prepared", args.precision) for p in ("as_loaded", "prepared")}
    steps = {
        "decode": lambda: decode_images(images, prep),
        **{f"infer/{k}": (lambda m=m: probs(m, pixels, args.precision)) for k, m in models.items()},
    }
    out = {k: [] for k in steps}
    for r in range(args.rounds):
        for name, fn in steps.items():
            c, w = cpu_s(fn)
            if r:
                out[name].append({"cpu_s": c, "wall_s": w})
        print(json.dumps({"round": r, **{k: v[-1] for k, v in out.items() if v}}), flush=True)
    return out


def first_batch(args, model_dir: Path, pixels) -> dict:
    """CPU seconds of the first batch of 64 right after loading, as loaded and prepared (alternating)."""
    out = {"as_loaded": [], "prepared": []}
    for _ in range(max(1, args.rounds - 1)):
        for name in out:
            model = fresh_model(model_dir, name == "prepared", args.precision)
            out[name].append(cpu_s(lambda m=model: probs(m, pixels[:64], args.precision))[0])
    return out


def sharding(model_dir: Path, pixels) -> dict:
    """Bit-identical probabilities whatever the cut? All rows in batches of 64 from row 0, against
    the rows cut at 5 and at 500 (each part batched from its own start)."""
    out = {}
    model = fresh_model(model_dir, True, "fp32")
    for precision in ("bf16", "fp32"):
        whole = probs(model, pixels, precision)
        for cut in (5, 500):
            parts = np.concatenate(
                [probs(model, pixels[:cut], precision), probs(model, pixels[cut:], precision)]
            )
            out[f"{precision}/cut{cut}"] = {
                "identical_rows": float((parts == whole).all(1).mean()),
                "max_abs_diff": float(np.abs(parts - whole).max()),
            }
    return out


def fidelity(model_dir: Path, pixels) -> dict:
    """How far each variant's probabilities are from the model as loaded in fp32: the largest
    difference and the share of rows with the same top class (folding must not move bf16 further
    from fp32 than bf16 itself does)."""
    ref = probs(fresh_model(model_dir, False, "fp32"), pixels, "fp32")
    out = {}
    for name, prepared, precision in (
        ("as_loaded/bf16", False, "bf16"),
        ("prepared/bf16", True, "bf16"),
        ("prepared/fp32", True, "fp32"),
    ):
        p = probs(fresh_model(model_dir, prepared, precision), pixels, precision)
        out[name] = {
            "max_abs_diff": float(np.abs(p - ref).max()),
            "same_top_class": float((p.argmax(1) == ref.argmax(1)).mean()),
        }
    return out


def summary(steps: dict) -> dict:
    n = steps.pop("_rows")
    best = {
        k: {"cpu_s": min(t["cpu_s"] for t in v), "wall_s": min(t["wall_s"] for t in v)}
        for k, v in steps.items()
    }
    rate = {k: round(n / b["cpu_s"], 1) for k, b in best.items()}
    return {
        "images_per_cpu_s": rate,
        "prepared_over_as_loaded": round(rate["infer/prepared"] / rate["infer/as_loaded"], 3),
        "decode_share_of_prepared": round(best["decode"]["cpu_s"] / best["infer/prepared"]["cpu_s"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds are the work)")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import pyarrow.parquet as pq
    import torch

    from cluster.data.image_data import sample_image_splits
    from cluster.data.images import decode_images

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sample_image_splits(tmp / "images")
        images = pq.read_table(tmp / "images" / "test.parquet", columns=["image"])["image"].to_pylist()
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from image_throughput import image_model

        model_dir = image_model(tmp, args.size)
        pixels = decode_images(images, fresh_model(model_dir, False, "fp32").config.preprocessing).pixels
        load = os.getloadavg()
        steps = turns(args, model_dir, images, pixels)
        result = {
            "rows": len(images),
            "size": args.size,
            "threads": args.threads,
            "precision": args.precision,
            **summary({**steps, "_rows": len(images)}),
            "first_batch_s": {k: round(min(v), 3) for k, v in first_batch(args, model_dir, pixels).items()},
            "sharding": sharding(model_dir, pixels),
            "fidelity_to_fp32": fidelity(model_dir, pixels),
            "load_avg_1m": [load[0], os.getloadavg()[0]],
            "turns": steps,
        }
    print(json.dumps({k: v for k, v in result.items() if k != "turns"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
