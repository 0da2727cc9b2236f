"""Image data and preprocessing: safe unpickling, the animal-mnist splits, folder trees, decoding."""

import io
import os
import pickle
import struct
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.data.image_data import (
    ANIMAL_LABELS,
    NumpyUnpickler,
    load_animal_mnist,
    load_numpy_pickle,
    read_image_folder,
    sample_image_splits,
)
from cluster.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    bad_rows_message,
    bad_rows_report,
    decode_images,
    normalize,
    preprocess,
)
from cluster.errors import UserError

PREP = Preprocessing(image_size=32)


def png(pixels: np.ndarray) -> bytes:
    """(H, W) uint8 -> L, (H, W, 3|4) uint8 -> RGB|RGBA, (H, W) uint16 -> I;16."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixel data (what a bomb's header looks like)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, format="TIFF")
    return buf.getvalue()


# ------------------------------------------------------------------ restricted unpickler


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_loads_numpy_arrays_only():
    arr = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.testing.assert_array_equal(load_numpy_pickle(pickle.dumps(arr), "test"), arr)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing (posix|os)\.system"):
        NumpyUnpickler(io.BytesIO(pickle.dumps(Exploit()))).load()
    with pytest.raises(UserError, match=r"test is not a plain numpy array pickle: refusing .*system"):
        load_numpy_pickle(pickle.dumps([arr, Exploit()]), "test")
    with pytest.raises(UserError, match="holds a dict, not a numeric numpy array"):
        load_numpy_pickle(pickle.dumps({"a": 1}), "test")


def test_animal_mnist_reads_without_importing_its_package():
    import sys

    images, labels = load_animal_mnist()
    assert "animal_mnist" not in sys.modules and "tensorflow" not in sys.modules
    assert images.shape == (9716, 28, 28) and images.dtype == np.uint8  # 10,000 less 284 copies
    assert sorted(set(labels)) == ANIMAL_LABELS
    assert len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)


# ------------------------------------------------------------------ sample splits


@pytest.fixture(scope="module")
def image_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    return out, sample_image_splits(out, seed=0)


def test_sample_splits_are_stratified_disjoint_and_decodable(image_sample):
    out, counts = image_sample
    tables = {name: pq.read_table(out / f"{name}.parquet") for name in ("train", "validation", "test")}
    assert {n: t.num_rows for n, t in tables.items()} == {n: sum(c.values()) for n, c in counts.items()}
    assert sum(t.num_rows for t in tables.values()) == 9716
    assert tables["train"].column_names == ["image", "label"]
    total = {lab: sum(c[lab] for c in counts.values()) for lab in ANIMAL_LABELS}
    for name, share in [("train", 0.8), ("validation", 0.1), ("test", 0.1)]:
        for lab in ANIMAL_LABELS:  # stratified: each class's share within 1 row of the split's
            assert abs(counts[name][lab] - share * total[lab]) <= 1.01, (name, lab)
    seen = [bytes(b) for t in tables.values() for b in t["image"].to_pylist()]
    assert len(set(seen)) == len(seen)  # no image in two splits
    decoded = decode_images(tables["test"]["image"].to_pylist()[:5], PREP)
    assert decoded.pixels.shape == (5, 3, 32, 32) and not decoded.bad


def test_sample_splits_are_deterministic_per_seed(image_sample, tmp_path):
    out, counts = image_sample
    assert sample_image_splits(tmp_path / "again", seed=0) == counts
    again = pq.read_table(tmp_path / "again" / "test.parquet")
    assert again.equals(pq.read_table(out / "test.parquet"))
    sample_image_splits(tmp_path / "other", seed=1)
    assert not pq.read_table(tmp_path / "other" / "test.parquet").equals(again)


# ------------------------------------------------------------------ folder trees


def test_image_folder_reads_labels_from_directories(tmp_path):
    for label, value in [("cat", 10), ("dog", 200)]:
        (tmp_path / label).mkdir()
        for i in range(2):
            (tmp_path / label / f"{i}.png").write_bytes(png(np.full((6, 9), value + i, np.uint8)))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.png").write_bytes(b"hidden")
    table = read_image_folder(str(tmp_path), path_column="path")
    assert table.column_names == ["image", "label", "path"]
    assert table["label"].to_pylist() == ["cat", "cat", "dog", "dog"]
    assert table["path"].to_pylist() == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"]
    pixels = decode_images(table["image"].to_pylist(), PREP).pixels
    assert pixels[3].min() == pixels[3].max() == 201
    (tmp_path / "stray.png").write_bytes(png(np.zeros((4, 4), np.uint8)))
    with pytest.raises(UserError, match="stray.png is not inside a label directory"):
        read_image_folder(str(tmp_path))
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no images"):
        read_image_folder(str(tmp_path / "empty"))


# ------------------------------------------------------------------ decoding and preprocessing


def test_grayscale_becomes_three_channels_resized_and_normalised():
    gray = png(np.full((28, 28), 255, np.uint8))
    rgb = png(np.dstack([np.full((10, 40), c, np.uint8) for c in (0, 128, 255)]))
    x = preprocess([gray, rgb], PREP)
    assert x.shape == (2, 3, 32, 32) and x.dtype.is_floating_point
    expected_white = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    np.testing.assert_allclose(x[0].mean(dim=(1, 2)).numpy(), expected_white, rtol=1e-6)
    np.testing.assert_allclose(x[1, 1].numpy(), (128 / 255 - IMAGENET_MEAN[1]) / IMAGENET_STD[1], rtol=1e-6)
    np.testing.assert_allclose(
        normalize(np.zeros((1, 3, 2, 2), np.uint8), PREP)[0, 2, 0, 0].item(), -0.406 / 0.225
    )


def test_center_crop_keeps_the_central_square():
    wide = np.zeros((40, 120), np.uint8)
    wide[:, 40:80] = 255  # only the central 40x40 square is white
    crop = decode_images([png(wide)], Preprocessing(image_size=32, resize_mode="center_crop")).pixels
    stretch = decode_images([png(wide)], PREP).pixels
    assert crop.min() == 255 and stretch.min() == 0


def test_paths_rgba_palette_and_jpeg_decode(tmp_path):
    (tmp_path / "a.png").write_bytes(png(np.zeros((5, 5, 4), np.uint8)))
    Image.new("P", (7, 3), 3).save(tmp_path / "p.gif")
    Image.new("RGB", (50, 50), (200, 10, 10)).save(tmp_path / "c.jpg", quality=95)
    decoded = decode_images(
        ["a.png", str(tmp_path / "p.gif"), "file://" + str(tmp_path / "c.jpg")], PREP, base_dir=tmp_path
    )
    assert decoded.pixels.shape == (3, 3, 32, 32)
    assert abs(int(decoded.pixels[2, 0].mean()) - 200) <= 3


NOISE = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)  # compresses badly
BAD_IMAGES = {
    "garbage": (b"not an image at all", r"cannot be decoded as an image \(supported formats: PNG, JPEG"),
    "cut header": (png(NOISE)[:30], "cannot be decoded as an image"),
    "cut pixels": (png(NOISE)[:2000], r"is corrupt or truncated \(PNG: image file is truncated"),
    "empty": (b"", r"is empty \(0 bytes\)"),
    "zero size": (header_only_png(0, 0), r"has zero size \(0x0\)"),
    "above our limit": (
        header_only_png(5000, 5000),
        "is 5000x5000 = 25000000 pixels, above the limit of 16777216",
    ),
    "above Pillow's limit": (header_only_png(100_000, 100_000), "is above the pixel limit"),
    "16-bit": (png(np.zeros((4, 4), np.uint16)), "has unsupported mode I;16"),
    "tiff": (tiff(), r"cannot be decoded as an image \(supported formats"),
    "missing file": ("/no/such/image.png", "names a file that does not exist: /no/such/image.png"),
    "not a source": (12345, "is a int, not image bytes or a path"),
    "null": (None, r"is null \(no image\)"),
    "empty path": ("  ", "is an empty path"),
}


@pytest.mark.parametrize("data,reason", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_image_is_an_error_naming_its_row(data, reason):
    good = png(np.zeros((28, 28), np.uint8))
    with pytest.raises(UserError, match=rf"image at row 41 ({reason}).*--skip-bad-rows"):
        decode_images([good, data], PREP, rows=[40, 41])


def test_skip_bad_rows_counts_and_reports_every_bad_row():
    good = png(np.full((28, 28), 7, np.uint8))
    sources = [good, b"junk", good, header_only_png(0, 0), b"", good]
    decoded = decode_images(sources, PREP, rows=[10, 11, 12, 13, 14, 15], skip_bad_rows=True)
    assert decoded.pixels.shape == (3, 3, 32, 32) and (decoded.pixels == 7).all()
    assert decoded.kept.tolist() == [0, 2, 5]
    assert [b.row for b in decoded.bad] == [11, 13, 14]
    report = bad_rows_report(decoded.bad)
    assert report["count"] == 3 and report["first_rows"][1] == {"row": 13, "reason": "has zero size (0x0)"}
    assert bad_rows_message(decoded.bad) == "skipped 3 bad image row(s): rows 11, 13, 14"


def test_a_zero_byte_or_null_image_is_a_bad_row_that_skip_bad_rows_skips(tmp_path):
    """issue 28, point 5: the scan before decoding stopped the run on a 0-byte image (exit 2),
    although --skip-bad-rows leaves out zero-size images."""
    import pyarrow as pa

    from cluster.data.scan import scan
    from cluster.specs.workloads import DataSpec

    good = png(np.full((28, 28), 7, np.uint8))
    path = tmp_path / "d.parquet"
    pictures = [good, b"", good, None, good]
    pq.write_table(pa.table({"image": pa.array(pictures, pa.binary()), "label": list("ababa")}), path)
    spec = DataSpec(path=str(path))
    summary = scan(spec, modality="image", skip_bad_rows=True)  # left to the decoding, which skips them
    assert summary.num_rows == 5 and summary.label_counts == {"a": 3, "b": 2}
    with pytest.raises(
        UserError, match=r'2 row\(s\) .* null or empty "image" \(first rows: 1, 3\).*--skip-bad'
    ):
        scan(spec, modality="image")  # without it: stopped before any model loads, naming the rows
    decoded = decode_images(pictures, PREP, skip_bad_rows=True)
    assert [(b.row, b.reason) for b in decoded.bad] == [(1, "is empty (0 bytes)"), (3, "is null (no image)")]
    with pytest.raises(UserError, match=r"image at row 1 is empty \(0 bytes\).*--skip-bad-rows"):
        decode_images(pictures, PREP)  # without it: the first bad row stops the run, naming it


def test_pixel_and_byte_limits_are_configurable():
    big = png(np.zeros((100, 100), np.uint8))
    with pytest.raises(UserError, match="100x100 = 10000 pixels, above the limit of 9999"):
        decode_images([big], PREP, max_pixels=9999)
    with pytest.raises(UserError, match="bytes, above the limit of 10"):
        decode_images([big], PREP, max_bytes=10)


def test_invalid_preprocessing_says_what_is_allowed():
    with pytest.raises(UserError, match=r"image_size 8 \(allowed: an integer 32..1024\); resample 'lanczos'"):
        Preprocessing(image_size=8, resample="lanczos")
    with pytest.raises(UserError, match="unknown key.*size"):
        Preprocessing.from_dict({"size": 64})
    assert Preprocessing.from_dict(Preprocessing(64).to_dict()) == Preprocessing(64)
