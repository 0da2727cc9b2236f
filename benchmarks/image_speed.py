"""EfficientNet-Lite0 on animal-mnist: speeds by input size and precision, a fine-tune check, baselines.

    python benchmarks/image_speed.py speed    [--sizes 64 96 128] [--steps 3] [--rounds 3]
    python benchmarks/image_speed.py finetune [--size 64] [--steps 300] [--lr 1e-3] [--init imagenet]
    python benchmarks/image_speed.py logreg

speed: training images/s (forward + backward + AdamW step, batch 32) and inference
images/s (inference_mode, batch 64) on decoded images, both cores, fp32 and bf16
autocast, NCHW and channels_last; at each size the variants take turns for --rounds
rounds, plus decoding images/s (PNG -> resized uint8). The best turn is the headline
(other work on a shared machine only ever slows a turn down, as timeit takes the
minimum); the median turn is printed beside it. Ratios are against the first row
(fp32, NCHW, the first size), best turns.
finetune: the sweep's training recipe (AdamW, linear warm-up/decay, gradient clipping)
for a few hundred steps, validation accuracy along the way and test accuracy at the end.
logreg: scikit-learn logistic regression on raw 28x28 pixels, the baseline (a).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def splits(tmp: Path) -> dict:
    """{split: (encoded images, class ids)} of the animal-mnist sample, seed 0."""
    import pyarrow.parquet as pq

    from cluster.data.image_data import ANIMAL_LABELS, sample_image_splits

    sample_image_splits(tmp, seed=0)
    out = {}
    for name in ("train", "validation", "test"):
        t = pq.read_table(tmp / f"{name}.parquet")
        y = np.array([ANIMAL_LABELS.index(v) for v in t["label"].to_pylist()])
        out[name] = (t["image"].to_pylist(), y)
    return out


def decoded(images, size: int):
    from cluster.data.images import Preprocessing, decode_images

    return decode_images(images, Preprocessing(image_size=size)).pixels


VARIANTS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]  # (precision, channels_last)


class Variant:
    """One model at one size, precision and memory layout, timed a few steps per turn."""

    def __init__(self, size: int, precision: str, channels_last: bool):
        import torch

        from cluster.data.image_data import ANIMAL_LABELS
        from cluster.models.vision import new_image_classifier

        self.size, self.precision, self.channels_last = size, precision, channels_last
        self.model = new_image_classifier(ANIMAL_LABELS, image_size=size)
        self.model.set_memory_format(torch.channels_last if channels_last else torch.contiguous_format)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.train_s, self.infer_s = [], []  # seconds per image, one entry per timed turn

    def input(self, pixels):

        from cluster.data.images import Preprocessing, normalize

        return normalize(pixels, Preprocessing(image_size=self.size))  # the model lays it out

    def train_turn(self, pixels, y, steps: int, batch: int = 32) -> None:
        import torch

        from cluster.models.device import autocast

        self.model.train()
        t0 = time.perf_counter()
        for step in range(steps):
            idx = np.random.default_rng(step).choice(len(pixels), batch, replace=False)
            with autocast(self.precision, "cpu"):
                logits = self.model(self.input(pixels[idx])).logits
            torch.nn.functional.cross_entropy(logits.float(), torch.as_tensor(y[idx])).backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        self.train_s.append((time.perf_counter() - t0) / (steps * batch))

    def infer_turn(self, pixels, batches: int, batch: int = 64) -> None:
        import torch

        from cluster.models.device import autocast

        self.model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(self.precision, "cpu"):
            for i in range(batches):
                self.model(self.input(pixels[i * batch : (i + 1) * batch])).logits.float().softmax(-1)
        self.infer_s.append((time.perf_counter() - t0) / (batches * batch))


def speed(args, data) -> None:
    """Every variant of a size takes turns (round robin), so machine noise spreads over all."""
    images, y = data["train"]
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        pixels = decoded(images[:1024], size)
        decode_rate = 1024 / (time.perf_counter() - t0)
        variants = [Variant(size, p, cl) for p, cl in VARIANTS]
        for v in variants:  # warm-up turn, not timed
            v.train_turn(pixels, y, 1)
            v.infer_turn(pixels, 1)
            v.train_s, v.infer_s = [], []
        for _ in range(args.rounds):
            for v in variants:
                v.train_turn(pixels, y, args.steps)
                v.infer_turn(pixels, args.steps)
        for v in variants:
            rows.append(
                {
                    "size": size,
                    "precision": v.precision,
                    "channels_last": v.channels_last,
                    "train_img_s": round(1 / min(v.train_s), 1),
                    "infer_img_s": round(1 / min(v.infer_s), 1),
                    "train_img_s_median": round(1 / statistics.median(v.train_s), 1),
                    "infer_img_s_median": round(1 / statistics.median(v.infer_s), 1),
                    "decode_img_s": round(decode_rate),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["train_x"] = round(r["train_img_s"] / base["train_img_s"], 2)
        r["infer_x"] = round(r["infer_img_s"] / base["infer_img_s"], 2)
    print(json.dumps({"load_avg_1m": os.getloadavg()[0], "speed": rows}, indent=1))


def finetune(args, data) -> None:
    """Fine-tune for ``args.steps`` steps; validation accuracy every ``args.eval_every`` steps."""
    import torch

    from cluster.models.device import resolve_precision
    from cluster.models.vision import predict_proba_pixels
    from cluster.specs.search_space import TrialParams
    from cluster.train.loop import epoch_batches
    from cluster.train.step import make_optimizer

    torch.set_num_threads(os.cpu_count())
    (tr_im, tr_y), (va_im, va_y), (te_im, te_y) = data["train"], data["validation"], data["test"]
    tr_px, va_px, te_px = (decoded(im, args.size) for im in (tr_im, va_im, te_im))
    precision = resolve_precision(args.precision, "cpu")
    model = finetune_model(args)
    hp = TrialParams(learning_rate=args.lr, weight_decay=0.01, warmup_ratio=0.06)
    opt, sched = make_optimizer(model, hp, args.steps)
    per_epoch = -(-len(tr_y) // args.batch)
    train_s, t_start = 0.0, time.perf_counter()
    for step in range(args.steps):
        epoch, i = divmod(step, per_epoch)
        if i == 0:  # the sweep's shuffled batches, seeded by (seed, epoch)
            batches = epoch_batches(np.zeros(len(tr_y)), args.batch, 0, epoch)
        t0 = time.perf_counter()
        loss = train_step(model, opt, sched, tr_px[batches[i]], tr_y[batches[i]], precision)
        train_s += time.perf_counter() - t0
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc = (predict_proba_pixels(model, va_px, precision=precision).argmax(1) == va_y).mean()
            row = {"step": step + 1, "epoch": round((step + 1) / per_epoch, 2), "loss": round(loss, 3)}
            row.update(val_acc=round(float(acc), 4), train_img_s=round((step + 1) * args.batch / train_s, 1))
            print(json.dumps({**row, "wall_s": round(time.perf_counter() - t_start, 1)}), flush=True)
    test_acc = (predict_proba_pixels(model, te_px, precision=precision).argmax(1) == te_y).mean()
    summary = {
        "init": args.init,
        "size": args.size,
        "precision": precision,
        "lr": args.lr,
        "steps": args.steps,
    }
    print(json.dumps({**summary, "bn_momentum": args.bn_momentum, "test_acc": round(float(test_acc), 4)}))


def finetune_model(args):
    import torch

    from cluster.data.image_data import ANIMAL_LABELS
    from cluster.models.vision import new_image_classifier

    model = new_image_classifier(ANIMAL_LABELS, image_size=args.size, pretrained=args.init == "imagenet")
    if args.bn_momentum is not None:  # the architecture's is 0.01 (TF's 0.99): slow running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = args.bn_momentum
    return model


def train_step(model, opt, sched, pixels, y, precision: str) -> float:
    """One step of the sweep's recipe: cross-entropy, gradient clipping at 1, AdamW, schedule."""
    import torch

    from cluster.data.images import normalize
    from cluster.models.device import autocast

    model.train()
    with autocast(precision, "cpu"):
        logits = model(normalize(pixels, model.config.preprocessing)).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.as_tensor(y))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def logreg(data) -> None:
    """Baseline (a): logistic regression on the raw 28x28 pixels (0..1), C picked on validation."""
    import io

    from PIL import Image
    from sklearn.linear_model import LogisticRegression

    def raw(images) -> np.ndarray:
        return np.stack(
            [np.asarray(Image.open(io.BytesIO(b)), dtype=np.float32).ravel() / 255 for b in images]
        )

    (tr, ytr), (va, yva), (te, yte) = ((raw(data[s][0]), data[s][1]) for s in ("train", "validation", "test"))
    best = None
    for c in (0.01, 0.1, 1.0):
        t0 = time.perf_counter()
        clf = LogisticRegression(C=c, max_iter=2000).fit(tr, ytr)
        acc = clf.score(va, yva)
        print(
            json.dumps({"C": c, "val_acc": round(acc, 4), "fit_s": round(time.perf_counter() - t0, 1)}),
            flush=True,
        )
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    print(json.dumps({"logreg_C": best[1], "test_acc": round(best[2].score(te, yte), 4)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["speed", "finetune", "logreg"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    p.add_argument("--steps", type=int, default=3, help="speed: steps per turn; finetune: total steps")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--init", choices=["imagenet", "random"], default="imagenet")
    # fp32: bf16 autocast trains EfficientNet-Lite0 ~1.8x slower on this CPU (see `speed`).
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    p.add_argument("--bn-momentum", type=float, default=None, help="finetune: override BatchNorm momentum")
    args = p.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        data = splits(Path(tmp))
        if args.what == "speed":
            speed(args, data)
        elif args.what == "finetune":
            finetune(args, data)
        else:
            logreg(data)


if __name__ == "__main__":
    main()
