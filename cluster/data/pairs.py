"""A segmentation dataset as a whole: tables and folder trees of image + mask pairs.

A dataset is a table (Parquet/CSV/JSONL, local or a URI; an image column of bytes, paths or URIs and
a mask column of PNG bytes, paths or URIs) or a folder tree ``ROOT/images/NAME.ext`` +
``ROOT/masks/NAME.png``. Here: reading one whole (training splits), indexing a tree, its
fingerprint, and `evalctl data check`. Decoding and checking each pair: cluster/data/masks.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.data.images import Preprocessing
from cluster.data.masks import IGNORE_INDEX, MaskRules, decode_pairs
from cluster.errors import UserError, first_items

log = logging.getLogger(__name__)

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


def is_pairs_data(path: str, mask_column: str, label_column: str | None, encoding: str = "utf-8") -> bool:
    """A segmentation dataset: a mask folder tree, or a table with the mask column and no label column
    (a CSV/JSONL table's first rows read in ``encoding``, the DataSpec's)."""
    if is_mask_folder(path):
        return True
    from cluster.data.files import file_schema, resolve_files
    from cluster.data.image_data import is_image_folder

    if is_image_folder(path):  # LABEL/xxx.png: classification
        return False
    fs, files, fmt = resolve_files(path)
    names = file_schema(fs, files[0], fmt, encoding).names
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


# ------------------------------------------------------------------ for an evaluation


def mask_folder_spec(spec, workdir: str | Path):
    """A DataSpec naming a folder tree -> the same spec reading its index (image, mask, name: the id
    column unless one is named), written as Parquet into ``workdir``; any other spec as it is."""
    import pyarrow.parquet as pq

    if not is_mask_folder(spec.path):
        return spec
    Path(workdir).mkdir(parents=True, exist_ok=True)
    index = Path(workdir) / "mask_folder_index.parquet"
    pq.write_table(mask_folder_index(spec.path), index)
    update = {"path": str(index), "image_column": "image", "mask_column": "mask", "id_column": "name"}
    return spec.model_copy(update=update)


def scan_pairs(spec, limit: int | None = None):
    """Rows and fingerprint of a segmentation dataset (cluster/data/scan.py's DataSummary, without
    labels). Each pair is checked where it is decoded: a null or unusable image or mask is one line
    naming its row, or a skipped and counted row (cluster/data/masks.py)."""
    from cluster.data.scan import DataSummary

    table = read_pairs(spec.path, spec.image_column, spec.mask_column)
    if limit is not None:
        table = table.slice(0, limit)
    return DataSummary(table.num_rows, {}, pairs_fingerprint(table))
