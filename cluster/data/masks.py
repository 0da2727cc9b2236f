"""Image + mask pairs for semantic segmentation: decoding and checking them, tables and folder trees.

A mask is a label map: a single-channel image (mode L, or P whose palette indices are the values,
as PASCAL VOC's masks; 1, I;16 and I are read as their integer values), pixel value = class index
0..K-1 of the spec's ``classes``, ``ignore_index`` (default 255) = an unlabelled pixel, left out of
the loss and the metrics; it is read as 255 from then on (a class index is < 255). Images are
decoded by cluster/data/images.py (the classifier's own path).

A pair that cannot be used is a UserError naming its row (and file, for a folder tree), or with
``skip_bad_rows`` is left out, counted and listed (``DecodedPairs.bad``):
  - the image or the mask cannot be read or decoded (or is empty, zero-size, above the limits);
  - the mask is not a label map (RGB, RGBA, ...);
  - the mask's size differs from its image's;
  - the mask holds a value outside 0..K-1 that is not ``ignore_index``;
  - (folder trees) an image has no mask.

A dataset is a table (Parquet/CSV/JSONL; an image column of bytes, paths or URIs and a mask column
of PNG bytes, paths or URIs) or a folder tree ``ROOT/images/NAME.ext`` + ``ROOT/masks/NAME.png``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.data.images import (
    MAX_BYTES,
    MAX_PIXELS,
    BadImage,
    BadRow,
    Preprocessing,
    open_image,
    read_source,
    to_array,
)
from cluster.errors import UserError, first_items

log = logging.getLogger(__name__)
IGNORE_INDEX = 255
MASK_MODES = ("L", "P", "1", "I;16", "I")  # single-channel modes whose values are class indices
SKIP_HINT = "fix or drop that row, or skip bad rows (--skip-bad-rows counts and reports them)"


@dataclass(frozen=True)
class MaskRules:
    """What a valid mask holds: values 0..num_classes-1, or ignore_index."""

    num_classes: int
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self):
        if not 2 <= self.num_classes <= IGNORE_INDEX:
            raise UserError(f"segmentation needs 2 to {IGNORE_INDEX} classes, got {self.num_classes}")
        if 0 <= self.ignore_index < self.num_classes:
            raise UserError(
                f"ignore_index {self.ignore_index} is a class index (0..{self.num_classes - 1}); "
                "choose a value outside them (default 255)"
            )


@dataclass
class DecodedPairs:
    """The usable pairs of a batch: model input, masks, and the rows that could not be used."""

    pixels: np.ndarray  # (n_ok, 3, S, S) uint8 RGB, the model's input size
    masks: list  # n_ok masks: (H, W) uint8 at the image's own size, or (S, S) with ``resize_masks``
    sizes: list  # n_ok (width, height) of each image as given
    kept: np.ndarray  # (n_ok,) int64 positions in the input, ascending
    bad: list[BadRow] = field(default_factory=list)


# ------------------------------------------------------------------ one mask


def open_mask(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a label-map mask -> (H, W) int64 class indices, refusing what is no label map."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=("PNG", "BMP", "GIF", "WEBP"))
    except Image.DecompressionBombError as exc:
        raise BadImage(f"is above the pixel limit ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImage(
            "cannot be decoded as a mask (a PNG label map: one channel, value = class index)"
        ) from exc
    w, h = img.size
    if w == 0 or h == 0:
        raise BadImage(f"has zero size ({w}x{h})")
    if w * h > max_pixels:
        raise BadImage(f"is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
    if img.mode not in MASK_MODES:
        raise BadImage(
            f"has mode {img.mode}, not a label map: a mask has one channel (mode L or P), "
            "pixel value = class index"
        )
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"is corrupt or truncated ({img.format}: {str(exc).splitlines()[0]})") from exc
    return np.asarray(img, dtype=np.int64)  # P: the palette indices, not the colours


def check_mask(mask: np.ndarray, image_size: tuple[int, int], rules: MaskRules) -> np.ndarray:
    """The mask as uint8, its unlabelled pixels 255, if it fits its image (``image_size`` = (width,
    height)) and the classes."""
    h, w = mask.shape
    if (w, h) != tuple(image_size):
        raise BadImage(f"is {w}x{h}, its image {image_size[0]}x{image_size[1]}: a mask must match its image")
    values = np.unique(mask)
    outside = values[((values < 0) | (values >= rules.num_classes)) & (values != rules.ignore_index)]
    if outside.size:
        raise BadImage(
            f"has value(s) {first_items(outside.tolist(), 3)} outside the {rules.num_classes} classes "
            f"0..{rules.num_classes - 1} (and not ignore_index {rules.ignore_index})"
        )
    return np.where(mask == rules.ignore_index, IGNORE_INDEX, mask).astype(np.uint8)


def resize_mask(mask: np.ndarray, side: int) -> np.ndarray:
    """(H, W) uint8 -> (side, side) by nearest neighbour (a label is never blended with another)."""
    from PIL import Image

    if mask.shape == (side, side):
        return mask
    return np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.NEAREST), dtype=np.uint8)


# ------------------------------------------------------------------ batches


def decode_pairs(
    images: Sequence,
    masks: Sequence,
    prep: Preprocessing,
    rules: MaskRules,
    *,
    rows: Sequence[int] | None = None,
    skip_bad_rows: bool = False,
    base_dir: str | Path | None = None,
    resize_masks: bool = False,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> DecodedPairs:
    """Decode and check a batch of (image, mask) pairs. Images become the model's input (``prep``);
    masks stay at their image's size (what the metrics compare with), or with ``resize_masks`` are
    resized to the input size (training targets). A bad pair raises UserError naming its row (and
    file), unless ``skip_bad_rows``: then it is left out and listed in ``bad``."""
    rows = range(len(images)) if rows is None else rows
    side = prep.image_size
    pixels = np.empty((len(images), 3, side, side), dtype=np.uint8)
    out, sizes, kept, bad = [], [], [], []
    for i, (image, mask, row) in enumerate(zip(images, masks, rows, strict=True)):
        try:
            img, m = _pair(image, mask, rules, base_dir, max_pixels, max_bytes)
        except BadImage as exc:
            reason = str(exc)
            if not skip_bad_rows:
                raise UserError(f"row {row}{_file(image, mask, reason)}: {reason}; {SKIP_HINT}") from exc
            bad.append(BadRow(int(row), reason))
            continue
        pixels[len(kept)] = to_array(img, prep)
        out.append(resize_mask(m, side) if resize_masks else m)
        sizes.append(img.size)
        kept.append(i)
    return DecodedPairs(pixels[: len(kept)], out, sizes, np.array(kept, dtype=np.int64), bad)


def _pair(image, mask, rules: MaskRules, base_dir, max_pixels: int, max_bytes: int):
    try:
        img = open_image(read_source(image, base_dir, max_bytes), max_pixels)
    except BadImage as exc:
        raise BadImage(f"image {exc}") from exc
    if mask is None:
        raise BadImage("image has no mask")
    try:
        return img, check_mask(open_mask(read_source(mask, base_dir, max_bytes), max_pixels), img.size, rules)
    except BadImage as exc:
        raise BadImage(f"mask {exc}") from exc


def _file(image, mask, reason: str) -> str:
    """' (FILE)' naming the file a reason is about, when the pair was given by path."""
    source = mask if reason.startswith("mask") else image
    return f" ({source})" if isinstance(source, str | Path) and len(str(source)) < 300 else ""


# ------------------------------------------------------------------ folder trees


IMAGE_DIR, MASK_DIR = "images", "masks"


def is_mask_folder(path: str) -> bool:
    """A local directory with ``images/`` and ``masks/`` subdirectories (a segmentation tree)."""
    p = Path(path).expanduser()
    return "://" not in path and (p / IMAGE_DIR).is_dir() and (p / MASK_DIR).is_dir()


def mask_folder_index(root: str) -> pa.Table:
    """``ROOT/images/NAME.ext`` + ``ROOT/masks/NAME.png`` -> table ``image``, ``mask`` (absolute paths;
    ``mask`` null for an image without one, a bad row when decoded) and ``name``, sorted by name.
    Hidden files and files without an image extension are passed over; a mask without an image
    is logged and not used."""
    from cluster.data.image_data import IMAGE_EXTENSIONS

    base = Path(root).expanduser().absolute()

    def files(sub: str) -> dict[str, Path]:
        found = {}
        for f in sorted((base / sub).rglob("*")):
            rel = f.relative_to(base / sub)
            if (
                f.is_file()
                and not any(p.startswith(".") for p in rel.parts)
                and f.suffix.lower() in IMAGE_EXTENSIONS
            ):
                key = str(rel.with_suffix(""))
                if key in found:
                    raise UserError(
                        f"{root}/{sub}: {found[key].name} and {f.name} have the same name; keep one"
                    )
                found[key] = f
        return found

    images, masks = files(IMAGE_DIR), files(MASK_DIR)
    if not images:
        raise UserError(f"{root}/{IMAGE_DIR} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        log.warning("%s: %d mask(s) without an image, not used: %s", root, len(orphans), first_items(orphans))
    names = sorted(images)
    return pa.table(
        {
            "image": pa.array([str(images[n]) for n in names], pa.string()),
            "mask": pa.array([str(masks[n]) if n in masks else None for n in names], pa.string()),
            "name": pa.array(names, pa.string()),
        }
    )


# ------------------------------------------------------------------ tables


def read_pairs(path: str, image_column: str, mask_column: str, id_column: str | None = None) -> pa.Table:
    """A whole dataset (a table, or a folder tree) -> table ``row``, ``image``, ``mask`` [, ``id``], in
    input order; for data that fits in memory (training and validation splits)."""
    from cluster.data.files import read_file, resolve_files

    if is_mask_folder(path):
        t = mask_folder_index(path)
        return pa.table(
            {"row": pa.array(np.arange(t.num_rows)), "image": t["image"], "mask": t["mask"], "id": t["name"]}
        )
    fs, files, fmt = resolve_files(path)
    wanted = [c for c in (image_column, mask_column, id_column) if c]
    tables = []
    for f in files:
        t = read_file(fs, f, fmt)
        missing = [c for c in wanted if c not in t.column_names]
        if missing:
            raise UserError(
                f'{path}: column "{missing[0]}" not found; columns: {", ".join(t.column_names)} '
                "(segmentation reads --image-column and --mask-column)"
            )
        tables.append(t.select(wanted))
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    cols = {"row": pa.array(np.arange(t.num_rows)), "image": _source(t[image_column], path, image_column)}
    cols["mask"] = _source(t[mask_column], path, mask_column)
    if id_column:
        cols["id"] = t[id_column]
    if not t.num_rows:
        raise UserError(f"dataset {path} is empty (0 rows)")
    return pa.table(cols)


def _source(col: pa.ChunkedArray, path: str, name: str) -> pa.ChunkedArray:
    """Encoded files stay binary; a string column holds paths or URIs."""
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return col.cast(pa.binary())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    raise UserError(
        f'column "{name}" of {path} is {t}; allowed: binary (PNG bytes) or string (a path or URI)'
    )


def pairs_fingerprint(table: pa.Table) -> str:
    """16 hex digits: sha256(sha256(images) + sha256(masks)), each stream the SHA-256 of each value in
    input order (bytes as they are, a path or URI as UTF-8 text), so neither the file format nor
    the sharding changes it (docs/contracts.md: the dataset fingerprint)."""
    import hashlib

    def stream(col: pa.ChunkedArray) -> bytes:
        h = hashlib.sha256()
        for v in col.to_pylist():
            h.update(hashlib.sha256(v.encode() if isinstance(v, str) else (v or b"")).digest())
        return h.digest()

    return hashlib.sha256(stream(table["image"]) + stream(table["mask"])).hexdigest()[:16]


def is_pairs_data(path: str, mask_column: str, label_column: str | None) -> bool:
    """A segmentation dataset: a mask folder tree, or a table with the mask column and no label column."""
    if is_mask_folder(path):
        return True
    from cluster.data.files import file_schema, resolve_files
    from cluster.data.image_data import is_image_folder

    if is_image_folder(path):  # LABEL/xxx.png: classification
        return False
    fs, files, fmt = resolve_files(path)
    names = file_schema(fs, files[0], fmt).names
    return mask_column in names and (label_column is None or label_column not in names)


def check_pairs(spec) -> dict:
    """Decode and check every pair of a DataSpec's segmentation data (the classes are a sweep's or a
    model's: any value below ``ignore_index`` passes, or below 255); its size, fingerprint and pixels
    per mask value."""
    table = read_pairs(spec.path, spec.image_column, spec.mask_column, spec.id_column)
    ignore = spec.ignore_index
    rules = MaskRules(ignore if 2 <= ignore < IGNORE_INDEX else IGNORE_INDEX, ignore)
    values = np.zeros(256, np.int64)
    prep = Preprocessing(image_size=32)  # the images are decoded to be checked, not used
    for start in range(0, table.num_rows, 256):
        part = table.slice(start, 256)
        d = decode_pairs(
            part["image"].to_pylist(), part["mask"].to_pylist(), prep, rules,
            rows=part["row"].to_pylist(), base_dir=data_dir(spec.path),
        )  # fmt: skip
        for m in d.masks:
            values += np.bincount(m.ravel(), minlength=256)
    shown = {("unlabelled" if v == IGNORE_INDEX else str(v)): int(n) for v, n in enumerate(values) if n}
    return {"rows": table.num_rows, "fingerprint": pairs_fingerprint(table), "pixels_per_value": shown}


def data_dir(path: str) -> str | None:
    """Where relative paths in a dataset are resolved: the data file's directory (None for a URI)."""
    if "://" in path:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_dir() else p.parent)
