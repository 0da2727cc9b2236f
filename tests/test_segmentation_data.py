"""Segmentation data (cluster/data/masks.py): image + mask pairs from tables and folder trees, every
bad-input case one line naming the row/file (exit 2 at the CLI) or skipped and counted; the sample."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.data.images import Preprocessing
from cluster.data.masks import MaskRules, decode_pairs
from cluster.data.pairs import mask_folder_index, read_pairs
from cluster.errors import UserError

PREP = Preprocessing(image_size=32)
RULES = MaskRules(num_classes=3)


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    if mode == "P":
        img = img.convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pair(h=20, w=24, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
    mask[0, 0] = 255  # an unlabelled pixel
    return png(image), png(mask), mask


def test_pairs_decode_at_their_own_size_or_resized():
    img, m, mask = pair()
    d = decode_pairs([img], [m], PREP, RULES)
    assert d.pixels.shape == (1, 3, 32, 32) and d.sizes == [(24, 20)]
    np.testing.assert_array_equal(d.masks[0], mask)  # exact, at the image's size
    r = decode_pairs([img], [m], PREP, RULES, resize_masks=True)
    assert r.masks[0].shape == (32, 32) and set(np.unique(r.masks[0])) <= {0, 1, 2, 255}


def test_palette_masks_are_read_as_indices_and_ignore_index_maps_to_255():
    mask = np.array([[0, 1], [2, 7]], np.uint8)
    p = Image.fromarray(mask, mode="L").convert("P")  # P with the identity palette: indices = values
    buf = io.BytesIO()
    p.save(buf, format="PNG")
    image = png(np.zeros((2, 2, 3), np.uint8))
    d = decode_pairs([image], [buf.getvalue()], PREP, MaskRules(3, ignore_index=7))
    np.testing.assert_array_equal(d.masks[0], [[0, 1], [2, 255]])


def bad_cases():
    img, m, _ = pair()
    rgb_mask = png(np.zeros((20, 24, 3), np.uint8))
    return [
        (b"not an image", m, "image cannot be decoded"),
        (img, b"\x89PNG\r\n\x1a\n broken", "mask cannot be decoded"),
        (img, png(np.zeros((10, 24), np.uint8)), "mask is 24x10, its image 24x20"),
        (
            img,
            png(np.full((20, 24), 5, np.uint8)),
            r"mask has value\(s\) 5 outside the 3 classes 0..2 \(and not ignore_index 255\)",
        ),
        (img, rgb_mask, "mask has mode RGB, not a label map"),
        (img, None, "image has no mask"),
        (img, b"", r"mask is empty \(0 bytes\)"),
    ]


@pytest.mark.parametrize("image, mask, message", bad_cases())
def test_each_bad_pair_is_one_line_naming_its_row(image, mask, message):
    good_img, good_mask, _ = pair(seed=1)
    with pytest.raises(UserError, match=rf"^row 7: {message}.*--skip-bad-rows") as e:
        decode_pairs([good_img, image], [good_mask, mask], PREP, RULES, rows=[6, 7])
    assert "\n" not in str(e.value)


def test_skip_bad_rows_keeps_the_good_ones_and_lists_the_bad():
    good_img, good_mask, _ = pair()
    cases = bad_cases()
    images = [good_img] + [c[0] for c in cases]
    masks = [good_mask] + [c[1] for c in cases]
    d = decode_pairs(images, masks, PREP, RULES, skip_bad_rows=True)
    assert list(d.kept) == [0] and len(d.masks) == 1 and d.pixels.shape[0] == 1
    assert [b.row for b in d.bad] == list(range(1, len(cases) + 1))
    assert d.bad[2].reason.startswith("mask is 24x10")


def test_mask_rules_refuse_an_ignore_index_that_is_a_class():
    with pytest.raises(UserError, match="ignore_index 1 is a class index"):
        MaskRules(3, ignore_index=1)


def test_folder_tree_names_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img, m, _ = pair()
    (tmp_path / "images" / "a.png").write_bytes(img)
    (tmp_path / "masks" / "a.png").write_bytes(m)
    (tmp_path / "images" / "b.jpg").write_bytes(img)  # no mask
    (tmp_path / "images" / "c.png").write_bytes(img)
    (tmp_path / "masks" / "c.png").write_bytes(png(np.full((20, 24), 9, np.uint8)))
    (tmp_path / "masks" / "orphan.png").write_bytes(m)  # no image: not used
    t = read_pairs(str(tmp_path), "image", "mask")
    assert t["id"].to_pylist() == ["a", "b", "c"] and t["mask"][1].as_py() is None
    rows = t["row"].to_pylist()
    with pytest.raises(UserError, match=r"^row 1 \(.*images/b.jpg\): image has no mask"):
        decode_pairs(t["image"].to_pylist(), t["mask"].to_pylist(), PREP, RULES, rows=rows)
    d = decode_pairs(
        t["image"].to_pylist(), t["mask"].to_pylist(), PREP, RULES, rows=rows, skip_bad_rows=True
    )
    assert [b.row for b in d.bad] == [1, 2]
    with pytest.raises(UserError, match=r"^row 2 \(.*masks/c.png\): mask has value\(s\) 9"):
        decode_pairs(t["image"].to_pylist()[2:], t["mask"].to_pylist()[2:], PREP, RULES, rows=[2])
    assert mask_folder_index(str(tmp_path)).num_rows == 3


def test_table_with_paths_relative_to_the_data_file(tmp_path):
    img, m, mask = pair()
    (tmp_path / "x.png").write_bytes(img)
    (tmp_path / "x_mask.png").write_bytes(m)
    pq.write_table(pa.table({"picture": ["x.png"], "seg": ["x_mask.png"]}), tmp_path / "d.parquet")
    t = read_pairs(str(tmp_path / "d.parquet"), "picture", "seg")
    d = decode_pairs(t["image"].to_pylist(), t["mask"].to_pylist(), PREP, RULES, base_dir=tmp_path)
    np.testing.assert_array_equal(d.masks[0], mask)
    with pytest.raises(UserError, match='column "mask" not found; columns: picture, seg'):
        read_pairs(str(tmp_path / "d.parquet"), "picture", "mask")


def test_sample_is_reproducible_with_exact_masks(tmp_path):
    from cluster.data.segmentation_sample import CLASSES, sample_segmentation_splits, silhouette_splits

    sizes = {"train": 6, "validation": 3, "test": 3}
    a = sample_segmentation_splits(tmp_path / "a", seed=0, sizes=sizes)
    sample_segmentation_splits(tmp_path / "b", seed=0, sizes=sizes)
    for split in sizes:
        assert (tmp_path / "a" / f"{split}.parquet").read_bytes() == (
            tmp_path / "b" / f"{split}.parquet"
        ).read_bytes()
    assert a["train"]["scenes"] == 6 and a["train"]["background"] == 6 and len(CLASSES) == 11
    t = read_pairs(str(tmp_path / "a" / "train.parquet"), "image", "mask")
    d = decode_pairs(
        t["image"].to_pylist(), t["mask"].to_pylist(), Preprocessing(image_size=64), MaskRules(11)
    )
    assert all(m.shape == (64, 64) and m.max() <= 10 and (m > 0).any() for m in d.masks)
    # no silhouette is in two splits
    s = silhouette_splits(0)
    keys = {name: {x.tobytes() for x in imgs} for name, (imgs, _) in s.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]


def test_scene_mask_follows_the_paste_exactly():
    from cluster.data.segmentation_sample import make_scene, silhouette_splits

    silhouettes, ids = silhouette_splits(0)["test"]
    rng = np.random.default_rng(5)
    bg_rng = np.random.default_rng(5)
    rgb, mask, pasted = make_scene(silhouettes, ids, rng)
    assert set(np.unique(mask)) - {0} <= set(pasted)
    from cluster.data.segmentation_sample import background

    bg = np.clip(background(bg_rng), 0, 255).round().astype(np.uint8)
    # every background pixel is the background's own value; animal pixels were painted over
    np.testing.assert_array_equal(rgb[mask == 0], bg[mask == 0])


@pytest.mark.cli
def test_data_sample_and_check_from_the_command_line(evalctl, tmp_path):
    proc = evalctl("data", "sample", "--segmentation", tmp_path / "seg")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in (tmp_path / "seg").iterdir()} == {
        "train.parquet",
        "validation.parquet",
        "test.parquet",
    }
    t = pq.read_table(tmp_path / "seg" / "test.parquet")
    assert t.num_rows == 1000 and t.column_names == ["image", "mask", "id"]
    check = evalctl("data", "check", tmp_path / "seg" / "validation.parquet")
    assert (
        check.returncode == 0 and "300 image+mask pairs" in check.stdout and "mask value 10:" in check.stdout
    )
    masks = t["mask"].to_pylist()[:5]
    masks[2] = png(np.full((64, 64), 300 % 256, np.uint8))  # value 44: fine without classes...
    masks[3] = png(np.zeros((10, 10), np.uint8))  # ...a size that differs is not
    pq.write_table(pa.table({"image": t["image"].to_pylist()[:5], "mask": masks}), tmp_path / "bad.parquet")
    bad = evalctl("data", "check", tmp_path / "bad.parquet")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: row 3: mask is 10x10, its image 64x64"
    )


def test_a_folder_tree_as_an_evaluation_reads_it(tmp_path):
    from cluster.data.pairs import mask_folder_spec, scan_pairs
    from cluster.specs.workloads import DataSpec

    (tmp_path / "tree" / "images").mkdir(parents=True)
    (tmp_path / "tree" / "masks").mkdir()
    for name in ("b", "a"):
        img, m, _ = pair(seed=ord(name))
        (tmp_path / "tree" / "images" / f"{name}.png").write_bytes(img)
        (tmp_path / "tree" / "masks" / f"{name}.png").write_bytes(m)
    spec = mask_folder_spec(DataSpec(path=str(tmp_path / "tree")), tmp_path / "work")
    assert spec.path.endswith("mask_folder_index.parquet") and spec.id_column == "name"
    summary = scan_pairs(spec)
    assert summary.num_rows == 2 and summary.label_counts == {} and len(summary.fingerprint) == 16
    table = pq.read_table(spec.path)
    assert table["name"].to_pylist() == ["a", "b"]
    other = DataSpec(path=str(tmp_path / "tree" / "x.parquet"))
    pq.write_table(pa.table({"image": [b"1"], "mask": [b"2"]}), other.path)
    assert scan_pairs(other).fingerprint != summary.fingerprint
    unchanged = DataSpec(path=other.path)
    assert mask_folder_spec(unchanged, tmp_path / "work") is unchanged
