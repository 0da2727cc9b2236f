"""Decoding and preprocessing images: PNG/JPEG bytes, a path or a URI -> model input.

Where the text path tokenises, the image path decodes (Pillow) and preprocesses:
any supported mode -> RGB (grayscale is repeated over 3 channels), resize to the
model's square input size, then ImageNet normalisation. Decoding yields uint8
arrays (n, 3, S, S), a quarter of the float size, so a training split can be
held decoded; ``normalize`` turns a batch of them into float model input. Training,
evaluation and serving all go through these two steps, so they cannot diverge.

A bad image (undecodable, truncated, empty, zero-size, an unsupported mode or
format, above the pixel limit) is a UserError naming its row, or, with
``skip_bad_rows``, is counted and listed in ``DecodedImages.bad`` (never dropped
silently). The pixel limit is checked from the header, before any pixel is decoded,
so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cluster.errors import UserError, first_items

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A new image model's input side in pixels (EfficientNet-Lite0's ImageNet size): the sweep spec's
# image_size default and every image model builder's.
IMAGE_SIZE = 224
MAX_PIXELS = 4096 * 4096  # per image, checked from the header before decoding
MAX_BYTES = 32 * 2**20  # per encoded image file
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # Pillow decoders we let run on untrusted bytes
# Modes with 8-bit channels convert to RGB faithfully. 16/32-bit integer and float
# modes ("I;16", "I", "F") have no fixed 0..255 range: converting them would clip.
SUPPORTED_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
# Resize filters, restricted to the two that torch reproduces exactly (antialiased bilinear
# is Pillow's), so that the differentiable resize of cluster.models.saliency sees the same input.
RESAMPLING = ("bilinear", "nearest")
RESIZE_MODES = ("stretch", "center_crop")  # the whole image squeezed to a square, or its central square
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Source = bytes | bytearray | memoryview | str | Path


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes model input; stored as ``preprocessing`` in the model's config.json."""

    image_size: int = IMAGE_SIZE  # square side in pixels
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN  # per channel, on 0..1 pixel values
    std: tuple[float, ...] = IMAGENET_STD
    resample: str = "bilinear"  # Pillow filter used to resize
    resize_mode: str = "stretch"

    def __post_init__(self):
        bad = []
        if not isinstance(self.image_size, int) or not 32 <= self.image_size <= 1024:
            bad.append(f"image_size {self.image_size!r} (allowed: an integer 32..1024)")
        if self.channels != 3:
            bad.append(f"channels {self.channels!r} (allowed: 3; grayscale is repeated over 3 channels)")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(isinstance(x, int | float) for x in v):
                bad.append(f"{name} {list(v)!r} (allowed: 3 numbers)")
        if not all(s > 0 for s in self.std):
            bad.append(f"std {list(self.std)!r} (allowed: positive numbers)")
        if self.resample not in RESAMPLING:
            bad.append(f"resample {self.resample!r} (allowed: {', '.join(RESAMPLING)})")
        if self.resize_mode not in RESIZE_MODES:
            bad.append(f"resize_mode {self.resize_mode!r} (allowed: {', '.join(RESIZE_MODES)})")
        if bad:
            raise UserError(f"invalid image preprocessing: {'; '.join(bad)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "preprocessing") -> Preprocessing:
        """Build from a config.json entry; unknown keys are an error, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        d = {**d, **{k: tuple(d[k]) for k in ("mean", "std") if k in d}}
        return cls(**d)


class BadImage(ValueError):
    """One image cannot be used; the message completes 'image at row N ...'."""


@dataclass
class BadRow:
    row: int
    reason: str


@dataclass
class DecodedImages:
    """The decoded images of a batch and the rows that could not be decoded."""

    pixels: np.ndarray  # (n_ok, 3, S, S) uint8, RGB
    kept: np.ndarray  # (n_ok,) int64: positions in the input of the decoded images, ascending
    bad: list[BadRow] = field(default_factory=list)


# ------------------------------------------------------------------ one image


def read_source(source: Source, base_dir: str | Path | None = None, max_bytes: int = MAX_BYTES) -> bytes:
    """The encoded bytes of an image given as bytes, a local path or a URI (s3://, gs://, file://).

    A relative path is taken relative to ``base_dir`` (the dataset's directory) when given.
    """
    if source is None:
        raise BadImage("is null (no image)")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | Path):
        if not str(source).strip():
            raise BadImage("is an empty path")
        data = _read_file(str(source), base_dir, max_bytes)
    else:
        raise BadImage(f"is a {type(source).__name__}, not image bytes or a path")
    if not data:
        raise BadImage("is empty (0 bytes)")
    if len(data) > max_bytes:
        raise BadImage(f"is {len(data)} bytes, above the limit of {max_bytes}")
    return data


def _read_file(name: str, base_dir: str | Path | None, max_bytes: int) -> bytes:
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        if "://" in name:
            fs, path = pafs.FileSystem.from_uri(name)
        else:
            p = Path(name).expanduser()
            fs, path = (
                pafs.LocalFileSystem(),
                str(p if p.is_absolute() or base_dir is None else Path(base_dir) / p),
            )
        with fs.open_input_stream(path) as f:
            return f.read(max_bytes + 1)  # one byte more than allowed tells "too large"
    except FileNotFoundError as exc:
        raise BadImage(f"names a file that does not exist: {_short(name)}") from exc
    except (OSError, pa.ArrowException) as exc:
        raise BadImage(
            f"names a file that cannot be read: {_short(name)} ({str(exc).splitlines()[0]})"
        ) from exc


def _short(name: str, n: int = 120) -> str:
    """A path as shown in a message: long strings (say, base64 passed as a path) are cut."""
    return name if len(name) <= n else f"{name[:n]}... ({len(name)} characters)"


def open_image(data: bytes, max_pixels: int = MAX_PIXELS):
    """Decode encoded bytes into a loaded RGB ``PIL.Image``, refusing what ``BadImage`` lists."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise BadImage(f"is above the pixel limit ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise BadImage(_undecodable_reason(data)) from exc
    w, h = img.size
    if w == 0 or h == 0:
        raise BadImage(f"has zero size ({w}x{h})")
    if w * h > max_pixels:
        raise BadImage(f"is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}")
    if img.mode not in SUPPORTED_MODES:
        raise BadImage(f"has unsupported mode {img.mode}; supported: 8-bit {', '.join(SUPPORTED_MODES)}")
    try:
        img.load()
        return img.convert("RGB")  # L -> R=G=B; alpha is dropped, as torchvision/HF processors do
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise BadImage(f"is corrupt or truncated ({img.format}: {str(exc).splitlines()[0]})") from exc


def _undecodable_reason(data: bytes) -> str:
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        if w == 0 or h == 0:
            return f"has zero size ({w}x{h})"
    return f"cannot be decoded as an image (supported formats: {', '.join(FORMATS)})"


def to_array(img, prep: Preprocessing) -> np.ndarray:
    """An RGB ``PIL.Image`` resized as ``prep`` says -> (3, S, S) uint8."""
    from PIL import Image

    size = (prep.image_size, prep.image_size)
    if prep.resize_mode == "center_crop":
        img = img.crop(center_square(*img.size))
    if img.size != size:
        img = img.resize(size, getattr(Image.Resampling, prep.resample.upper()))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def center_square(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square, in whole pixels."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


# ------------------------------------------------------------------ batches


def decode_images(
    sources: Sequence[Source],
    prep: Preprocessing,
    *,
    rows: Sequence[int] | None = None,
    skip_bad_rows: bool = False,
    base_dir: str | Path | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> DecodedImages:
    """Decode and resize a batch. ``rows``: the input row number of each source (for messages).

    A bad image raises UserError naming its row, unless ``skip_bad_rows``: then it is
    left out of ``pixels`` and listed in ``bad``.
    """
    rows = range(len(sources)) if rows is None else rows
    out = np.empty((len(sources), 3, prep.image_size, prep.image_size), dtype=np.uint8)
    kept, bad = [], []
    for i, (source, row) in enumerate(zip(sources, rows, strict=True)):
        try:
            img = open_image(read_source(source, base_dir, max_bytes), max_pixels)
        except BadImage as exc:
            if not skip_bad_rows:
                raise UserError(
                    f"image at row {row} {exc}; fix or drop that row, or skip bad images "
                    "(--skip-bad-rows counts and reports them)"
                ) from exc
            bad.append(BadRow(int(row), str(exc)))
            continue
        out[len(kept)] = to_array(img, prep)
        kept.append(i)
    return DecodedImages(out[: len(kept)], np.array(kept, dtype=np.int64), bad)


def normalize(pixels, prep: Preprocessing):
    """uint8 (n, 3, S, S) (numpy or torch) -> float32 tensor ``(x / 255 - mean) / std``."""
    import torch

    x = torch.as_tensor(pixels).float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def preprocess(sources: Sequence[Source], prep: Preprocessing, **kwargs):
    """Decode (strict: a bad image raises) and normalise: float32 tensor (n, 3, S, S)."""
    return normalize(decode_images(sources, prep, **kwargs).pixels, prep)


def bad_rows_report(bad: list[BadRow], limit: int = 100) -> dict:
    """A bounded summary for metrics.json: how many, the first rows, and counts by reason."""
    return {
        "count": len(bad),
        "first_rows": [{"row": b.row, "reason": b.reason} for b in bad[:limit]],
        "reasons": dict(Counter(b.reason.split(" (")[0] for b in bad).most_common()),
    }


def bad_rows_message(bad: list[BadRow]) -> str:
    """One line for the console: 'skipped N bad image row(s): rows ...'."""
    return f"skipped {len(bad)} bad image row(s): rows {first_items([b.row for b in bad])}" if bad else ""
