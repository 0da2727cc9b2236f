"""Labelled image data: the bundled animal-mnist sample and ``label/xxx.png`` folder trees.

Both become the same table shape as the text splits: an ``image`` column (encoded
PNG/JPEG bytes) and a ``label`` column (class names).

animal-mnist (PyPI ``animal-mnist`` 0.4, MIT) ships 10,000 28x28 grayscale animal
silhouettes, 1,000 per class, as gzip-pickled numpy arrays. Its package imports
tensorflow, so it is never imported: the files are found through importlib.metadata
and unpickled by ``NumpyUnpickler``, which admits only what a numpy array needs.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import UserError

ANIMAL_PACKAGE = "animal-mnist"
ANIMAL_DIR = "animal_mnist/data/Animal_MNIST/"
ANIMAL_IMAGES = "animal_data_version_3.gz"
ANIMAL_TARGETS = "animal_label_version_3.gz"
# Class ids 0..9 are the package's classes in alphabetical order (as its README lists
# them); checked by eye on a grid of the first images of each id.
ANIMAL_LABELS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
MAX_UNPICKLED_BYTES = 64 * 2**20  # the images are 7.8 MB unpacked; refuse gzip bombs
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
ROW_GROUP_ROWS = 1024  # = cluster.data.scan.ROWS_PER_SHARD: one row group per evaluation shard


# ------------------------------------------------------------------ safe unpickling


class NumpyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else.

    A pickle can call any importable function while loading (``os.system`` included);
    this one resolves only the three globals an ndarray's pickle names and raises
    ``pickle.UnpicklingError`` for every other.
    """

    def find_class(self, module: str, name: str):
        reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, any version
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,  # pickled by numpy < 2
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,  # pickled by numpy >= 2
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays may be unpickled")
        return allowed[module, name]


def load_numpy_pickle(data: bytes, what: str) -> np.ndarray:
    """One numeric numpy array from pickle bytes, or UserError (``what`` names the source)."""
    try:
        obj = NumpyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise UserError(f"{what} is not a plain numpy array pickle: {exc}") from exc
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "biuf":
        raise UserError(f"{what} holds a {type(obj).__name__}, not a numeric numpy array")
    return obj


# ------------------------------------------------------------------ animal-mnist


def animal_mnist_file(name: str) -> Path:
    """A data file of the installed animal-mnist wheel, located without importing it."""
    try:
        for f in importlib.metadata.files(ANIMAL_PACKAGE) or []:
            if str(f) == ANIMAL_DIR + name:
                return Path(f.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise UserError(
        f"image sample not found: install the PyPI package {ANIMAL_PACKAGE}==0.4 with --no-deps "
        "(its wheel declares tensorflow, which the sample does not need)"
    )


def _read_gzip_array(name: str) -> np.ndarray:
    path = animal_mnist_file(name)
    with gzip.open(path, "rb") as f:
        data = f.read(MAX_UNPICKLED_BYTES + 1)
    if len(data) > MAX_UNPICKLED_BYTES:
        raise UserError(f"{path} unpacks to more than {MAX_UNPICKLED_BYTES} bytes; refusing it")
    return load_numpy_pickle(data, str(path))


def load_animal_mnist() -> tuple[np.ndarray, list[str]]:
    """(images (n, 28, 28) uint8, class names), exact duplicate images kept once.

    284 of the 10,000 images are byte-identical copies of another (188 of them birds,
    same label each time); keeping one copy means no image sits in two splits.
    """
    images, targets = _read_gzip_array(ANIMAL_IMAGES), _read_gzip_array(ANIMAL_TARGETS)
    if images.ndim != 3 or images.dtype != np.uint8 or targets.shape != images.shape[:1]:
        raise UserError(f"unexpected animal-mnist arrays: images {images.shape}, labels {targets.shape}")
    if targets.min() < 0 or targets.max() >= len(ANIMAL_LABELS):
        raise UserError(f"animal-mnist labels outside 0..{len(ANIMAL_LABELS) - 1}")
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    keep = np.sort(first)
    return images[keep], [ANIMAL_LABELS[t] for t in targets[keep]]


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 grayscale or (H, W, 3) uint8 RGB -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def sample_image_splits(out: str | Path, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write stratified 80/10/10 train/validation/test Parquet splits of animal-mnist.

    Columns: ``image`` (PNG bytes, 28x28 grayscale) and ``label`` (class name).
    Returns the class counts of each split.
    """
    from sklearn.model_selection import train_test_split

    images, labels = load_animal_mnist()
    idx = np.arange(len(labels))
    train, rest = train_test_split(idx, test_size=0.2, stratify=labels, random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=[labels[i] for i in rest], random_state=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, part in [("train", train), ("validation", val), ("test", test)]:
        table = pa.table(
            {
                "image": pa.array([encode_png(images[i]) for i in part], pa.binary()),
                "label": pa.array([labels[i] for i in part], pa.string()),
            }
        )
        tmp = out / f".{name}.parquet.tmp"
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
        tmp.replace(out / f"{name}.parquet")
        counts[name] = {lab: sum(labels[i] == lab for i in part) for lab in ANIMAL_LABELS}
    return counts


# ------------------------------------------------------------------ folder trees


def read_image_folder(root: str, *, path_column: str | None = None, max_bytes: int | None = None) -> pa.Table:
    """A ``label/xxx.png`` tree (local or URI) -> table ``image`` (bytes), ``label`` [, path_column].

    The label is the first directory under ``root`` (as ``ray.data.read_images`` with
    directory partitioning). Files are read in sorted path order. Hidden files and
    directories and files without an image extension are not images and are passed over;
    a bad image file is read as is and caught, by row, when it is decoded.
    """
    from cluster.data.images import MAX_BYTES

    max_bytes = max_bytes or MAX_BYTES
    fs, base = _filesystem(root)
    files = _image_files(fs, base, root)
    images, labels, paths = [], [], []
    for rel in files:
        parts = rel.split("/")
        if len(parts) < 2:
            raise UserError(f"{root}/{rel} is not inside a label directory; expected {root}/LABEL/{parts[0]}")
        with fs.open_input_stream(f"{base}/{rel}") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UserError(f"{root}/{rel} is larger than {max_bytes} bytes")
        images.append(data)
        labels.append(parts[0])
        paths.append(rel)
    cols = {"image": pa.array(images, pa.binary()), "label": pa.array(labels, pa.string())}
    if path_column:
        cols[path_column] = pa.array(paths, pa.string())
    return pa.table(cols)


def _filesystem(root: str):
    import pyarrow.fs as pafs

    try:
        if "://" in root:
            return pafs.FileSystem.from_uri(root)
        return pafs.LocalFileSystem(), str(Path(root).expanduser().absolute())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise UserError(f"cannot open image folder {root}: {exc}") from exc


def _image_files(fs, base: str, shown: str) -> list[str]:
    """Paths relative to ``base`` of the image files below it, sorted."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        raise UserError(f"image folder {shown} is not a directory")
    found = []
    for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        rel = i.path[len(base) :].lstrip("/")
        hidden = any(p.startswith(".") for p in rel.split("/"))
        if i.type == pafs.FileType.File and not hidden and Path(rel).suffix.lower() in IMAGE_EXTENSIONS:
            found.append(rel)
    if not found:
        raise UserError(
            f"image folder {shown} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in LABEL/ subdirectories"
        )
    return sorted(found)


def is_image_folder(path: str) -> bool:
    """A local directory holding image files under label directories and no data files."""
    from cluster.data.files import FORMATS

    p = Path(path).expanduser()
    if "://" in path or not p.is_dir():
        return False
    files = [f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")]
    return not any(f.suffix.lower() in FORMATS for f in files) and any(
        f.suffix.lower() in IMAGE_EXTENSIONS for f in files
    )


def folder_index(root: str, out: str | Path) -> Path:
    """Write ``out`` (Parquet): one row per image of the ``label/xxx.png`` tree ``root``, in
    sorted path order: ``image`` (the file's absolute path; read when decoded) and ``label``."""
    base = Path(root).expanduser().absolute()
    files = _image_files(*_filesystem(str(base)), root)
    bad = [rel for rel in files if "/" not in rel]
    if bad:
        raise UserError(f"{root}/{bad[0]} is not inside a label directory; expected {root}/LABEL/{bad[0]}")
    table = pa.table(
        {
            "image": pa.array([str(base / rel) for rel in files], pa.string()),
            "label": pa.array([rel.split("/")[0] for rel in files], pa.string()),
        }
    )
    pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS)
    return Path(out)
