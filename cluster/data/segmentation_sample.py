"""The packaged segmentation sample: scenes composed from animal-mnist silhouettes, with exact masks.

No segmentation data set with masks ships in a package we can depend on, so the sample is
synthetic and built here, reproducibly (same seed, same bytes): each 64x64 scene is a varied
background (colour blobs, a gradient, stripes or a plain colour, with pixel noise) on which 1-3
animal silhouettes (animal-mnist, PyPI ``animal-mnist`` 0.4, MIT licence; cluster/data/image_data.py)
are pasted at random scales (22-44 px), positions and mirroring, each filled with its own textured
colour; a later animal hides what it covers. A pixel's mask value is the class of the animal on
top (1..10, ``ANIMAL_LABELS`` order) or 0 (background): exact, since the paste itself follows the
thresholded silhouette. No pixel is unlabelled (ignore_index never occurs here).

The silhouettes are split 80/10/10 first (stratified, as ``evalctl data sample --images``), and each
split's scenes use only its own, so no animal shape appears in two splits. Written as
``train``/``validation``/``test`` Parquet files: ``image`` (PNG, RGB), ``mask`` (PNG, mode L), ``id``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.data.image_data import ANIMAL_LABELS, ROW_GROUP_ROWS, load_animal_mnist

CLASSES = ["background", *ANIMAL_LABELS]  # mask value = index
SCENE = 64  # side in pixels: the default sweep's input size, so no resizing anywhere
SPLITS = {"train": 3000, "validation": 300, "test": 1000}  # scenes; the default sweep fits 20 min on 2 cores
ANIMALS = (1, 2, 3)  # animals per scene, equally likely
SCALE = (22, 44)  # side of a silhouette's 28x28 box once pasted, pixels (inclusive)


def silhouette_splits(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (silhouettes (n, 28, 28) uint8, class ids 1..10), a stratified 80/10/10 split."""
    from sklearn.model_selection import train_test_split

    images, labels = load_animal_mnist()
    ids = np.array([ANIMAL_LABELS.index(lab) + 1 for lab in labels])
    idx = np.arange(len(ids))
    train, rest = train_test_split(idx, test_size=0.2, stratify=ids, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=ids[rest], random_state=seed)
    return {
        name: (images[part], ids[part])
        for name, part in [("train", train), ("validation", val), ("test", test)]
    }


# ------------------------------------------------------------------ one scene


def background(rng: np.random.Generator, side: int = SCENE) -> np.ndarray:
    """(side, side, 3) float in 0..255: blobs, a gradient, stripes or a plain colour, plus noise."""
    from PIL import Image

    kind = rng.integers(4)
    if kind == 0:  # smooth colour blobs: a coarse random image upsampled
        g = int(rng.integers(2, 7))
        coarse = Image.fromarray(rng.integers(0, 256, (g, g, 3), dtype=np.uint8))
        bg = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64)
    elif kind == 1:  # a linear gradient between two colours at a random angle
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
        t = (np.cos(theta) * xx + np.sin(theta) * yy + 1.5) / 3
        bg = a + (b - a) * t[..., None]
    elif kind == 2:  # stripes of two colours, at a random period and orientation
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        period = rng.integers(4, 17)
        yy, xx = np.mgrid[0:side, 0:side]
        stripes = ((xx if rng.random() < 0.5 else yy) // (period // 2)) % 2
        bg = np.where(stripes[..., None] == 1, a, b)
    else:
        bg = np.broadcast_to(rng.uniform(0, 255, 3), (side, side, 3)).astype(np.float64)
    return bg + rng.normal(0, rng.uniform(2, 14), (side, side, 3))


def _fill(rng: np.random.Generator, under: np.ndarray, side: int) -> np.ndarray:
    """An animal's textured colour, at least 60/255 of mean brightness away from what it covers."""
    for _ in range(20):
        colour = rng.uniform(0, 255, 3)
        if abs(colour.mean() - under.mean()) >= 60:
            break
    texture = rng.normal(0, rng.uniform(3, 20), (side, side, 1))
    return colour + texture


def paste(scene, mask, silhouette, class_id: int, rng: np.random.Generator) -> None:
    """Paste one silhouette onto ``scene`` (H, W, 3 float) and ``mask`` (H, W uint8), in place."""
    from PIL import Image

    s = int(rng.integers(SCALE[0], SCALE[1] + 1))
    shape = np.asarray(Image.fromarray(silhouette).resize((s, s), Image.Resampling.BILINEAR)) > 127
    if rng.random() < 0.5:
        shape = shape[:, ::-1]
    side = scene.shape[0]
    y, x = (int(v) for v in rng.integers(0, side - s + 1, 2))
    box = (slice(y, y + s), slice(x, x + s))
    fill = _fill(rng, scene[box][shape] if shape.any() else scene[box], s)
    scene[box][shape] = fill[shape]
    mask[box][shape] = class_id


def make_scene(silhouettes, ids, rng: np.random.Generator, side: int = SCENE):
    """(RGB uint8 (side, side, 3), mask uint8 (side, side), class ids pasted)."""
    scene = background(rng, side)
    mask = np.zeros((side, side), np.uint8)
    pasted = []
    for _ in range(int(rng.choice(ANIMALS))):
        i = int(rng.integers(len(ids)))
        paste(scene, mask, silhouettes[i], int(ids[i]), rng)
        pasted.append(int(ids[i]))
    return np.clip(scene, 0, 255).round().astype(np.uint8), mask, pasted


def png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> an RGB PNG; (H, W) uint8 -> a mode-L PNG (a label map)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ the splits


def sample_segmentation_splits(
    out: str | Path, seed: int = 0, sizes: dict[str, int] | None = None
) -> dict[str, dict[str, int]]:
    """Write the three splits to ``out``; returns per split its scene count and, per class, the
    scenes it appears in. Scene i of a split is drawn from the RNG seeded by (seed, split, i)."""
    sizes = sizes or SPLITS
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for s, (name, (silhouettes, ids)) in enumerate(silhouette_splits(seed).items()):
        images, masks, present = [], [], np.zeros(len(CLASSES), np.int64)
        for i in range(sizes[name]):
            rgb, mask, _ = make_scene(silhouettes, ids, np.random.default_rng([seed, s, i]))
            images.append(png(rgb))
            masks.append(png(mask))
            present[np.unique(mask)] += 1
        table = pa.table(
            {
                "image": pa.array(images, pa.binary()),
                "mask": pa.array(masks, pa.binary()),
                "id": pa.array([f"{name}-{i:05d}" for i in range(sizes[name])], pa.string()),
            }
        )
        tmp = out / f".{name}.parquet.tmp"
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
        tmp.replace(out / f"{name}.parquet")
        counts[name] = {"scenes": sizes[name], **{c: int(n) for c, n in zip(CLASSES, present, strict=True)}}
    return counts
