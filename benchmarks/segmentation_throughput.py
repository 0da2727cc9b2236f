"""Segmentation evaluation images/s: `evalctl evaluate` (the product path) against a plain PyTorch loop.

    python benchmarks/segmentation_throughput.py --model DIR [--data TEST.parquet] [--rounds 3]
        [--out FILE.json]

Both score the same images with the same segmentation model directory at the same precision
(auto: bf16 where the CPU has it natively) and end with the same numbers: each image's mask at its
own size and the pixel confusion matrix of all images (from which mIoU). The baseline is what one
would write by hand: a ``torch.utils.data.Dataset`` decoding each image and mask with the model's
preprocessing (cluster/data/masks.py), a ``DataLoader`` (batch 64, evaluate's default batch size;
workers = cores - 1, at least 1), the model prepared as the evaluation's actors prepare it
(BatchNorm folded: cluster/models/vision.py ``prepare_for_inference``), ``inference_mode`` +
autocast, masks upsampled to each image's size (cluster/models/segmenter.py ``masks_at``) and
bincounted. `evalctl evaluate` runs cold (an embedded Ray started and ended by the command) and
writes metrics.json, predictions (mask PNGs, per-image IoU) and report.html besides. Both runs'
masks are compared pixel by pixel: the script stops if more than 1e-3 of the pixels differ. They
need not agree on every pixel: the forward passes run with different torch thread counts (an actor
uses its Ray CPUs), which can move a probability in its last bits, and a near-tie pixel (common in
an untrained model) then changes class; the mIoU of both and the share of differing pixels are in
the JSON.

Every run is a separate process; per round the plain loop then evaluate, and the best round of
each is reported (other tenants only ever slow a round down), every round (with its load average)
in the JSON:
  whole process  images / wall time of the whole command (interpreter start, imports, model
                 loading, Ray start for evalctl, decoding, inference, metrics, writing)
  steady state   evalctl: ``timings.steady_rows_per_s`` of metrics.json; plain loop: images after
                 the first batch / time after the first batch
Default data: the sample's test split (1,000 scenes, `evalctl data sample --segmentation`).
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

PLAIN = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, pyarrow.parquet as pq, torch
from cluster.data.masks import MaskRules, decode_pairs
from cluster.models.device import resolve_precision
from cluster.models.segmentation import load_segmentation_model
from cluster.models.segmenter import Segmenter, masks_at
from cluster.models.vision import prepare_for_inference
from cluster.stats.segmentation import finalize, stats_from_confusions

model_dir, data, workers, masks_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = load_segmentation_model(model_dir)
seg, prep, k = Segmenter(model, model.config.labels), model.config.preprocessing, model.config.num_labels
precision = resolve_precision("auto", "cpu")
prepare_for_inference(model, batch_size=64, precision=precision)
table = pq.read_table(data, columns=["image", "mask"])
images, masks = table["image"].to_pylist(), table["mask"].to_pylist()

class Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return len(images)
    def __getitem__(self, i):
        d = decode_pairs([images[i]], [masks[i]], prep, MaskRules(k))
        return torch.from_numpy(d.pixels[0]), torch.from_numpy(d.masks[0])

def collate(items):
    return torch.stack([x for x, _ in items]), [m for _, m in items]

loader = torch.utils.data.DataLoader(Pairs(), batch_size=64, num_workers=workers, collate_fn=collate)
cm, n, first, flat = np.zeros((k, k), np.int64), 0, None, []
for pixels, trues in loader:
    probs = seg.predict_proba(pixels.numpy(), precision=precision, batch_size=len(pixels))
    for p, t in zip(probs, trues):
        t = t.numpy()
        pred = masks_at(p, (t.shape[1], t.shape[0]))
        flat.append(pred.ravel())
        keep = t != 255
        cm += np.bincount(t[keep].astype(np.int64) * k + pred[keep], minlength=k * k).reshape(k, k)
    n += len(pixels)
    if first is None:
        first, n_first = time.perf_counter(), n
end = time.perf_counter()
np.save(masks_out, np.concatenate(flat))  # after the clock: the comparison's, not the loop's
miou = finalize(stats_from_confusions(cm[None], np.zeros(1, np.int64)), list(model.config.labels))["miou"]
print(json.dumps({"rows": n, "precision": precision, "miou": miou, "in_process_s": end - t0,
                  "steady_rows_per_s": (n - n_first) / max(end - first, 1e-9)}))
"""


def run_plain(model: Path, data: Path, workers: int, masks: Path) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, str(model), str(data), str(workers), str(masks)],
        capture_output=True, text=True, cwd=ROOT, check=True, env=env,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "load": load, "wall_s": wall, "whole_rows_per_s": out["rows"] / wall}


def run_evalctl(model: Path, data: Path, out: Path, home: Path) -> dict:
    """One cold `evalctl evaluate` (an embedded Ray in a RAY_TMPDIR of its own) as a whole process."""
    load = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVALCLUSTER_HOME": str(home)}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="segtp", dir="/tmp")
    cmd = [sys.executable, "-m", "jobs.cli", "evaluate", "--model", str(model), "--data", str(data)]
    t0 = time.perf_counter()
    subprocess.run(
        [*cmd, "--out", str(out), "--overwrite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    return {
        "rows": m["n"],
        "precision": m.get("precision_mode"),
        "miou": m["miou"],
        "load": load,
        "wall_s": wall,
        "whole_rows_per_s": m["n"] / wall,
        "steady_rows_per_s": m["timings"].get("steady_rows_per_s"),
        "timings": m["timings"],
    }


def evalctl_masks(out: Path):
    """The evaluation's predicted masks, flattened in row order (as the plain loop saves its own)."""
    import io

    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from cluster.registry.predictions import open_predictions

    pngs = open_predictions(str(out / "predictions")).read(["pred_mask"])["pred_mask"].to_pylist()
    return np.concatenate([np.asarray(Image.open(io.BytesIO(b)), np.uint8).ravel() for b in pngs])


def differing(plain_masks: Path, out: Path) -> float:
    """The share of pixels whose class the two runs disagree on."""
    import numpy as np

    a, b = np.load(plain_masks), evalctl_masks(out)
    if a.shape != b.shape:
        raise SystemExit(f"the runs scored different pixels: {a.shape} and {b.shape}")
    return float((a != b).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="A segmentation model directory (e.g. best's).")
    ap.add_argument("--data", type=Path, help="Image + mask Parquet (default: the sample's test split).")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, help="Write the JSON here too.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.data is None:
            sys.path.insert(0, str(ROOT))
            from cluster.data.segmentation_sample import sample_segmentation_splits

            sample_segmentation_splits(tmp / "seg")
            args.data = tmp / "seg" / "test.parquet"
        workers = max(1, (os.cpu_count() or 2) - 1)
        rounds = []
        for r in range(args.rounds):
            plain = run_plain(args.model, args.data, workers, tmp / "plain_masks.npy")
            ev = run_evalctl(args.model, args.data, tmp / "eval", tmp / "home")
            share = differing(tmp / "plain_masks.npy", tmp / "eval")
            if share > 1e-3:
                raise SystemExit(f"{share:.2%} of the pixels differ: plain loop and evalctl disagree")
            rounds.append({"round": r, "plain": plain, "evalctl": ev, "pixels_differing": share})
            print(json.dumps(rounds[-1]), flush=True)
    keys = ("whole_rows_per_s", "steady_rows_per_s")
    best = {m: {k: max(rd[m][k] for rd in rounds) for k in keys} for m in ("plain", "evalctl")}
    result = {
        "images": rounds[0]["plain"]["rows"],
        "best": best,
        "ratio_over_plain": {  # None where the loop had no steady state (data within one batch)
            k: round(best["evalctl"][k] / best["plain"][k], 3) if best["plain"][k] else None for k in keys
        },
        "miou": {m: rounds[0][m]["miou"] for m in ("plain", "evalctl")},
        "pixels_differing_max": max(rd["pixels_differing"] for rd in rounds),
        "load_avg_1m": [
            min(rd[m]["load"] for rd in rounds for m in ("plain", "evalctl")),
            max(rd[m]["load"] for rd in rounds for m in ("plain", "evalctl")),
        ],  # fmt: skip
        "cpus": os.cpu_count(),
        "rounds": rounds,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
